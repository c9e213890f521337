"""Hand an exec or a cancel to the replica a command's agent is connected to (PostgreSQL; docs/replicas.md).

The replica where a command was asked for records and audits it as always (the database is the truth), then
writes a relay row for the replica holding the agent's connection and wakes it with NOTIFY in the same
transaction. The receiving replica takes its rows (`take`: deleted as they are read, `FOR UPDATE SKIP LOCKED`,
so a row is taken once) and sends them to its agent: an exec is sent at most once, as on one replica. An exec
is taken only while its command is still `running` (a command that ended meanwhile — cancelled, ended `lost` —
is never sent late).

`sealed_argv`: the original argv of a command whose shown argv masks a secret, sealed as in the commands table
(store/sealed_argv.py; replicas share `argv.key`); None when the shown argv is what runs. `tag`: the sender's HMAC
of what is to be sent, under a key outside the database (commands/backend/routing.py checks it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection

from teleops.domain.command import CommandRecord, CommandStatus
from teleops.store.commands import record_of_row
from teleops.store.database import Database
from teleops.store.schema import command_relays, commands
from teleops.store.wakeups import notify

__all__ = ["Relay", "RelayKind", "Taken", "announce_ended", "drop_settled", "relay", "take"]

TAKE_AT_MOST = 100


class RelayKind(StrEnum):
    EXEC = "exec"
    CANCEL = "cancel"


@dataclass(frozen=True, slots=True)
class Relay:
    """One taken hand-over: what to send to the agent of `command`, and from which replica it came."""

    kind: RelayKind
    command: CommandRecord
    origin: str
    sealed_argv: str | None
    output_cap_bytes: int | None
    tag: str | None


async def relay(
    db: Database,
    kind: RelayKind,
    command_id: int,
    *,
    to: str,
    origin: str,
    now: datetime,
    sealed_argv: str | None = None,
    output_cap_bytes: int | None = None,
    tag: str | None = None,
) -> None:
    """Hand `kind` for `command_id` to replica `to`, and wake it once this commits."""

    def apply(conn: Connection) -> None:
        conn.execute(
            insert(command_relays).values(
                command_id=command_id, kind=kind.value, replica=to, origin=origin, sealed_argv=sealed_argv,
                output_cap_bytes=output_cap_bytes, tag=tag, created_at=now,
            )
        )  # fmt: skip
        notify(conn, {"what": "relay", "to": to})

    await db.run_in_transaction(apply)


@dataclass(frozen=True, slots=True)
class Taken:
    """What `take` removed: the relays to act on, and how many were dropped because their command had ended."""

    relays: list[Relay]
    ended: list[int]


async def take(db: Database, *, replica: str) -> Taken:
    """The relays for `replica`, oldest first, removed as they are taken (another taker skips the locked rows).
    Those whose command is no longer `running` are removed and not returned (their ids are in `ended`): nothing
    is left to send."""

    def apply(conn: Connection) -> Taken:
        r = command_relays.c
        ids = (
            select(r.id)
            .where(r.replica == replica)
            .order_by(r.id)
            .limit(TAKE_AT_MOST)
            .with_for_update(skip_locked=True)
        )
        taken = conn.execute(
            delete(command_relays)
            .where(r.id.in_(ids.scalar_subquery()))
            .returning(r.id, r.command_id, r.kind, r.origin, r.sealed_argv, r.output_cap_bytes, r.tag)
        ).all()
        if not taken:
            return Taken([], [])
        rows = conn.execute(
            select(commands).where(
                commands.c.id.in_([row.command_id for row in taken]),
                commands.c.status == CommandStatus.RUNNING.value,
            )
        ).all()
        running = {row.id: record_of_row(row) for row in rows}
        in_order = sorted(taken, key=lambda row: row.id)
        return Taken(
            [
                Relay(
                    RelayKind(row.kind),
                    running[row.command_id],
                    row.origin,
                    row.sealed_argv,
                    row.output_cap_bytes,
                    row.tag,
                )
                for row in in_order
                if row.command_id in running
            ],
            [row.command_id for row in in_order if row.command_id not in running],
        )

    return await db.run_in_transaction(apply)


async def drop_settled(db: Database) -> int:
    """Remove relays whose command is no longer `running` (ended before its replica took it, or that replica died
    with it and the command was ended `lost`). Returns how many."""

    def apply(conn: Connection) -> int:
        running = select(commands.c.id).where(commands.c.status == CommandStatus.RUNNING.value)
        return int(conn.execute(delete(command_relays).where(command_relays.c.command_id.not_in(running))).rowcount)

    return await db.run_in_transaction(apply)


async def announce_ended(db: Database, command_id: int, *, to: str) -> None:
    """Wake replica `to`, which handed `command_id` over: it ended (its waiters read the result)."""

    def apply(conn: Connection) -> None:
        notify(conn, {"what": "ended", "id": command_id, "to": to})

    await db.run_in_transaction(apply)
