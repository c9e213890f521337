"""The web console's chat history: one row per message, edited in place, read back on page load.

With several replicas (PostgreSQL), every write also NOTIFYs `teleops_console` in its transaction, so a replica
whose browsers did not see the write happen pushes it to them as well (`listen`, chat/console/gateway.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Row

from teleops.store.database import Database
from teleops.store.schema import console_messages
from teleops.store.wakeups import Listener, notify

__all__ = ["CONSOLE_CHANNEL", "ConsoleChange", "ConsoleMessageRecord", "ConsoleMessageStore"]

CONSOLE_CHANNEL = "teleops_console"


@dataclass(frozen=True, slots=True)
class ConsoleChange:
    """Another replica wrote a console message: `kind` is "message" (new) or "edit"."""

    kind: str
    message_id: int


@dataclass(frozen=True, slots=True)
class ConsoleMessageRecord:
    id: int
    created_at: datetime
    updated_at: datetime
    author: str | None
    incident_id: int | None
    reply_to: int | None
    body: dict[str, Any]


def _record(row: Row[Any]) -> ConsoleMessageRecord:
    return ConsoleMessageRecord(
        id=int(row.id),
        created_at=row.created_at,
        updated_at=row.updated_at,
        author=row.author,
        incident_id=row.incident_id,
        reply_to=row.reply_to,
        body=dict(row.body),
    )


class ConsoleMessageStore:
    """Raises StorageUnavailable from every method when the database refuses."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def listen(self, on_change: Callable[[ConsoleChange], None]) -> Listener | None:
        """A listener (not started) for the console writes of the *other* replicas; None on SQLite (one process)."""
        if self._db.is_sqlite:
            return None
        me = self._db.replica

        def received(payload: dict[str, Any]) -> None:
            kind, message_id = payload.get("kind"), payload.get("id")
            if payload.get("replica") != me and kind in ("message", "edit") and isinstance(message_id, int):
                on_change(ConsoleChange(str(kind), message_id))

        return Listener(
            self._db.url,
            on_message=received,
            on_connected=lambda: None,
            channel=CONSOLE_CHANNEL,
            name="teleops-console-listener",
        )

    def _announce(self, conn: Connection, kind: str, message_id: int) -> None:
        if conn.dialect.name != "sqlite":
            notify(conn, {"replica": self._db.replica, "kind": kind, "id": message_id}, channel=CONSOLE_CHANNEL)

    async def append(
        self,
        body: dict[str, Any],
        *,
        now: datetime,
        author: str | None = None,
        incident_id: int | None = None,
        reply_to: int | None = None,
    ) -> ConsoleMessageRecord:
        """Store a message. A person's typed text (`author` set) is kept with its secrets masked (the command it
        asks for runs from the text as typed, which is not stored): store/sealed_argv.py."""
        vault = self._db.argv_vault
        if author is not None and vault is not None and isinstance(body.get("text"), str):
            body = {**body, "text": vault.shown_line(body["text"])}

        def apply(conn: Connection) -> ConsoleMessageRecord:
            row = conn.execute(
                insert(console_messages)
                .values(
                    created_at=now,
                    updated_at=now,
                    author=author,
                    incident_id=incident_id,
                    reply_to=reply_to,
                    body=body,
                )
                .returning(*console_messages.c)
            ).one()
            self._announce(conn, "message", int(row.id))
            return _record(row)

        return await self._db.write(apply)

    async def replace_body(
        self, message_id: int, body: dict[str, Any], *, now: datetime
    ) -> ConsoleMessageRecord | None:
        """The edited message, or None when no message has that id."""

        def apply(conn: Connection) -> ConsoleMessageRecord | None:
            conn.execute(
                update(console_messages).where(console_messages.c.id == message_id).values(body=body, updated_at=now)
            )
            row = conn.execute(select(console_messages).where(console_messages.c.id == message_id)).first()
            if row is None:
                return None
            self._announce(conn, "edit", message_id)
            return _record(row)

        return await self._db.write(apply)

    async def tag(self, message_id: int, key: str, value: Any) -> ConsoleMessageRecord | None:
        """Set `body[key]` of a message without marking it edited (the console's read rule tags a typed command
        line with its command, chat/console/read_rule.py); None when no message has that id."""

        def apply(conn: Connection) -> ConsoleMessageRecord | None:
            row = conn.execute(select(console_messages).where(console_messages.c.id == message_id)).first()
            if row is None:
                return None
            body = {**dict(row.body), key: value}
            conn.execute(update(console_messages).where(console_messages.c.id == message_id).values(body=body))
            self._announce(conn, "edit", message_id)
            return replace(_record(row), body=body)

        return await self._db.write(apply)

    async def get(self, message_id: int) -> ConsoleMessageRecord | None:
        row = await self._db.first(select(console_messages).where(console_messages.c.id == message_id))
        return None if row is None else _record(row)

    async def recent(self, *, limit: int = 200) -> list[ConsoleMessageRecord]:
        """The newest `limit` messages, oldest first (the order a chat shows them)."""
        rows = await self._db.all(select(console_messages).order_by(console_messages.c.id.desc()).limit(limit))
        return [_record(row) for row in reversed(rows)]
