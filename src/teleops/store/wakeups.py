"""Wake-ups between controller replicas on one PostgreSQL: `NOTIFY` in the writer's transaction, `LISTEN` on a
dedicated connection (docs/replicas.md).

A notification is only a hint that something changed: PostgreSQL delivers it when the transaction that sent it
commits (never before the rows it announces are visible), but drops it for a listener whose connection is down at
that moment. So the database stays the truth: whoever listens also reads the tables every few seconds, and after
every reconnect (`on_connected`), and a lost notification only delays. SQLite has no NOTIFY and needs none: one
process holds everything itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import asyncpg
import structlog
from sqlalchemy import func, make_url, select
from sqlalchemy.engine import Connection

__all__ = ["CHANNEL", "LISTENER_NAME", "Listener", "notify"]

log = structlog.get_logger(__name__)

CHANNEL = "teleops_commands"
LISTENER_NAME = "teleops-listener"  # its application_name in pg_stat_activity
CHECK_EVERY_S = 5.0  # a silent listener connection (a switchover, a cut network) is noticed this fast
RECONNECT_MAX_S = 5.0


def notify(conn: Connection, payload: dict[str, Any], channel: str = CHANNEL) -> None:
    """Queue `payload` (JSON, well under PostgreSQL's 8000 bytes) on `channel` in the caller's transaction: every
    listener gets it once the transaction commits, or never if it rolls back."""
    conn.execute(select(func.pg_notify(channel, json.dumps(payload, separators=(",", ":")))))


class Listener:
    """LISTENs on `channel` on a connection of its own (not the pool's: a pooled connection is handed to others),
    calling `on_message(payload)` for each notification's JSON and `on_connected()` after every (re)connect, so the
    caller catches up on what it may have missed. Reconnects with a backoff; never raises."""

    def __init__(
        self,
        database_url: str,
        *,
        on_message: Callable[[dict[str, Any]], None],
        on_connected: Callable[[], None],
        channel: str = CHANNEL,
        name: str = LISTENER_NAME,
    ) -> None:
        """`name` is the connection's application_name, as `pg_stat_activity` shows it."""
        self._name = name
        self._dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._on_message = on_message
        self._on_connected = on_connected
        self._channel = channel
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.reconnects = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"listen-{self._channel}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            try:
                await self._listen_once()
                backoff = 0.2
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # refused, reset, timed out: try again
                log.warning("wakeups.listener_down", error=f"{type(exc).__name__}: {exc}"[:200], retry_in=backoff)
            self.connected.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_MAX_S)
            self.reconnects += 1

    async def _listen_once(self) -> None:
        """One connection's life: listen until it drops or stops answering."""
        conn: asyncpg.Connection = await asyncpg.connect(
            self._dsn, timeout=CHECK_EVERY_S, server_settings={"application_name": self._name}
        )
        closed = asyncio.Event()
        conn.add_termination_listener(lambda _conn: closed.set())
        try:
            await conn.add_listener(self._channel, self._received)
            self.connected.set()
            log.info("wakeups.listening", channel=self._channel)
            self._on_connected()
            while not closed.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(CHECK_EVERY_S):
                        await closed.wait()
                if not closed.is_set():
                    await conn.fetchval("SELECT 1", timeout=CHECK_EVERY_S)
            raise ConnectionError("the listener connection was closed")
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=1.0)
            if not conn.is_closed():
                conn.terminate()

    def _received(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            log.warning("wakeups.bad_payload", payload=payload[:200])
            return
        if isinstance(message, dict):
            try:
                self._on_message(message)
            except Exception as exc:  # a handler's bug must not end the listener
                log.error("wakeups.handler_failed", error=f"{type(exc).__name__}: {exc}"[:200])
