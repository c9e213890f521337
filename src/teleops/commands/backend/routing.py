"""Commands reach their agent on whichever controller replica it is connected to (PostgreSQL; docs/replicas.md).

Each replica knows the agents connected to it (the hub's WebSockets) and, through `agent_connections`, where the
others are. A command for an agent connected here is sent as on one replica, in memory. One for an agent on
replica B is recorded and audited here as always, then handed to B (`command_relays`) with a NOTIFY in the same
transaction; B sends it to its agent, records the output and the result as always, and wakes this replica when
the command ends so whoever waits here (the REST caller, the chat message being edited) reads the result at once.
A cancel travels the same way. Notifications are hints: every `POLL_S` each replica also refreshes its
connections, takes its relays and re-reads the commands it waits for, so a lost notification only delays.

An agent counts as connected to B while B's row for it is fresher than `STALE_AFTER_S` (store/agent_connections.py):
B refreshes its rows every `POLL_S`, so a B killed or frozen loses its agents after `STALE_AFTER_S`; until then a
command for them is handed to B and sent if B comes back while it is still running; otherwise the lost sweep
ends it `lost` (commands/backend/lost.py), and a result the agent still reports (to any replica) replaces that.

A hand-over is sent only with a valid `tag`: an HMAC of what is to run (command id and creation time, agent, the
original argv, timeout, output cap) under a key derived from `argv.key`, which replicas share and the database
never holds. Whoever can only write the database (T29, T30) cannot make a replica send an exec that no replica
recorded and audited: a forged or altered relay is refused (`command.relay_refused`) and its command ended
`failed`, saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog

from teleops.commands.backend.progress import CommandProgress
from teleops.commands.dispatch import AgentUnavailable, fail_unsent
from teleops.domain.clock import Clock
from teleops.store.agent_connections import connected, disconnected, refresh
from teleops.store.command_relays import Relay, RelayKind, announce_ended, drop_settled, relay, take
from teleops.store.commands import ended_among
from teleops.store.database import Database, StorageUnavailable
from teleops.store.sealed_argv import SealUnreadable, original_command, protect_argv
from teleops.store.wakeups import Listener
from teleops.wire import Exec
from teleops.wire.command_ids import row_id_of, wire_command_id

__all__ = ["POLL_S", "STALE_AFTER_S", "ReplicaRouting", "relay_tag"]

log = structlog.get_logger(__name__)

POLL_S = 2.0
STALE_AFTER_S = 10.0
DROP_SETTLED_EVERY = 30  # polls
FORGED = (
    "not run: its hand-over between controller replicas did not carry a valid signature (forged or altered in the "
    "database, or the replicas do not share argv.key); check the audit log, and give every replica the same argv.key"
)


def relay_tag(
    key: bytes | None,
    kind: RelayKind,
    wire_id: str,
    agent_name: str,
    argv: Sequence[str] = (),
    timeout_s: float = 0,
    output_cap_bytes: int | None = None,
) -> str | None:
    """`hmac-sha256:<hex>` of a hand-over's canonical JSON under a key derived from `key` (the vault's binding key,
    outside the database); None without a key (a tool without a data directory: nothing to sign with)."""
    if key is None:
        return None
    relay_key = hmac.digest(key, b"teleops replica relay", "sha256")
    canonical = json.dumps(
        [kind.value, wire_id, agent_name, list(argv), float(timeout_s), output_cap_bytes],
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")
    return "hmac-sha256:" + hmac.new(relay_key, canonical, hashlib.sha256).hexdigest()


class ReplicaRouting:
    """One per replica on PostgreSQL, owned by the agent hub, which sends what it takes through `send_here` and
    `cancel_here` (its own connections only: a relay is never relayed on)."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Clock,
        progress: CommandProgress,
        agents_here: Callable[[], list[str]],
        send_here: Callable[[str, Exec], Awaitable[None]],
        cancel_here: Callable[[str, int], Awaitable[None]],
        default_output_cap: int,
    ) -> None:
        self._db = db
        self.replica = db.replica
        self._clock = clock
        self._progress = progress
        self._agents_here = agents_here
        self._send_here = send_here
        self._cancel_here = cancel_here
        self._default_cap = default_output_cap
        self._elsewhere: dict[str, str] = {}  # agent → the replica it is connected to (not this one)
        self._relayed_in: dict[int, str] = {}  # commands taken from another replica, running here → that replica
        self._wake_taker = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._notices: set[asyncio.Task[None]] = set()
        self._listener = Listener(db.url, on_message=self._on_message, on_connected=self._wake_taker.set)
        progress.on_finished = self._on_finished
        self.relayed_out = 0  # execs and cancels handed to another replica, since start
        self.relayed_in = 0  # execs and cancels taken from another replica and sent here

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        self._listener.start()
        self._tasks = [
            asyncio.create_task(self._poll_forever(), name="routing-poll"),
            asyncio.create_task(self._take_forever(), name="routing-take"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._listener.stop()
        for notice in list(self._notices):
            with contextlib.suppress(Exception):
                await notice

    # -- where agents are ----------------------------------------------------------------------------

    def replica_of(self, agent_name: str) -> str | None:
        """The other replica `agent_name` is connected to, or None (connected here, or nowhere)."""
        return self._elsewhere.get(agent_name)

    async def connected_here(self, agent_name: str) -> None:
        self._elsewhere.pop(agent_name, None)
        try:
            await connected(self._db, agent_name, replica=self.replica)
        except StorageUnavailable as exc:  # the next poll records it
            log.warning("routing.connection_not_recorded", agent=agent_name, error=str(exc))

    async def disconnected_here(self, agent_name: str) -> None:
        try:
            await disconnected(self._db, agent_name, replica=self.replica)
        except StorageUnavailable as exc:  # its row goes stale, which says the same
            log.warning("routing.disconnection_not_recorded", agent=agent_name, error=str(exc))

    # -- handing over --------------------------------------------------------------------------------

    def _key(self) -> bytes | None:
        vault = self._db.argv_vault
        return vault.binding_key if vault is not None else None

    async def relay_exec(self, replica: str, agent_name: str, message: Exec) -> None:
        """Hand an exec (whose dispatch is committed) to `replica`. Raises AgentUnavailable when it cannot be."""
        command_id = row_id_of(message.command_id)
        if command_id is None:
            raise AgentUnavailable(f"command id {message.command_id[:40]!r} cannot be handed to another replica")
        sealed = protect_argv(self._db.argv_vault, message.argv).sealed
        tag = relay_tag(
            self._key(), RelayKind.EXEC, message.command_id, agent_name, message.argv, message.timeout_s,
            message.output_cap_bytes,
        )  # fmt: skip
        try:
            await relay(
                self._db, RelayKind.EXEC, command_id, to=replica, origin=self.replica, now=self._clock(),
                sealed_argv=sealed, output_cap_bytes=message.output_cap_bytes, tag=tag,
            )  # fmt: skip
        except StorageUnavailable as exc:
            raise AgentUnavailable(f"it could not be handed to replica {replica}: {exc}") from exc
        self.relayed_out += 1
        log.info("command.relayed", command_id=command_id, to=replica)

    async def relay_cancel(self, replica: str, agent_name: str, command_id: int, wire_id: str) -> None:
        """Hand a cancel to `replica`. Raises AgentUnavailable when it cannot be."""
        tag = relay_tag(self._key(), RelayKind.CANCEL, wire_id, agent_name)
        try:
            await relay(
                self._db, RelayKind.CANCEL, command_id, to=replica, origin=self.replica, now=self._clock(), tag=tag
            )
        except StorageUnavailable as exc:
            raise AgentUnavailable(f"the cancel could not be handed to replica {replica}: {exc}") from exc
        self.relayed_out += 1
        log.info("command.cancel_relayed", command_id=command_id, to=replica)

    # -- taking over ---------------------------------------------------------------------------------

    async def _take_forever(self) -> None:
        while True:
            await self._wake_taker.wait()
            self._wake_taker.clear()
            try:
                taken = await take(self._db, replica=self.replica)
                if taken.ended:
                    log.info("routing.relays_dropped", commands=taken.ended, why="the command ended before it was sent")
                for handed in taken.relays:
                    try:
                        await self._deliver(handed)
                    except StorageUnavailable as exc:  # the command stays `running`: the lost sweep ends it
                        log.error("routing.delivery_failed", command_id=handed.command.id, error=str(exc))
            except StorageUnavailable as exc:
                log.warning("routing.take_failed", error=str(exc))
            except Exception as exc:  # a bug must not stop this replica from ever taking a hand-over again
                log.exception("routing.take_crashed", error=f"{type(exc).__name__}: {exc}"[:200])

    async def _deliver(self, taken: Relay) -> None:
        record = taken.command
        bound = log.bind(command_id=record.id, agent=record.agent_name, origin=taken.origin)
        self.relayed_in += 1
        wire_id = wire_command_id(record.id, record.created_at)
        if taken.kind is RelayKind.CANCEL:
            if not self._signed(taken, relay_tag(self._key(), RelayKind.CANCEL, wire_id, record.agent_name)):
                return  # a forged cancel: nothing is sent, the command runs on
            try:
                await self._cancel_here(record.agent_name, record.id)
            except AgentUnavailable as exc:
                bound.warning("command.relayed_cancel_not_sent", error=str(exc))
            return
        if record.id in self._relayed_in:  # a hand-over copied in the database: sent once already, never again
            bound.error("command.relay_refused", why="this command's exec was already sent from this replica")
            return
        self._relayed_in[record.id] = taken.origin
        try:  # the agent runs the original argv; the seal is opened only to send it
            argv = original_command(self._db.argv_vault, record.argv, taken.sealed_argv).argv
        except SealUnreadable as exc:
            bound.error("command.seal_unreadable", error=str(exc))
            await self._fail(record.id, fail_unsent(self._db, record, f"not run: {exc}", now=self._clock()))
            return
        message = Exec(
            command_id=wire_id,
            argv=argv,
            timeout_s=record.timeout_s,
            output_cap_bytes=taken.output_cap_bytes or self._default_cap,
        )
        expected = relay_tag(
            self._key(), RelayKind.EXEC, wire_id, record.agent_name, argv, record.timeout_s, taken.output_cap_bytes
        )
        if not self._signed(taken, expected):
            await self._fail(record.id, fail_unsent(self._db, record, FORGED, now=self._clock()))
            return
        try:
            await self._send_here(record.agent_name, message)
        except AgentUnavailable as exc:
            bound.warning("command.not_sent", error=str(exc))
            reason = (
                f"not run: agent {record.agent_name} left replica {self.replica} before the command was sent "
                f"({exc}); try again"
            )
            await self._fail(record.id, fail_unsent(self._db, record, reason, now=self._clock()))
            return
        bound.info("command.dispatched", argv0=record.argv[0] if record.argv else "", relayed=True)

    def _signed(self, taken: Relay, expected: str | None) -> bool:
        """Whether the hand-over carries the tag its sender would have made (both None: no vault on either side)."""
        if expected is None and taken.tag is None:
            return True
        if expected is not None and taken.tag is not None and hmac.compare_digest(expected, taken.tag):
            return True
        log.error(
            "command.relay_refused", command_id=taken.command.id, kind=taken.kind.value, origin=taken.origin,
            why="missing or wrong signature: forged or altered in the database, or argv.key differs between replicas",
        )  # fmt: skip
        return False

    async def _fail(self, command_id: int, failing: Awaitable[Any]) -> None:
        await failing
        self._progress.finished(command_id)  # wakes the replica that asked (`_on_finished`)

    # -- the end of a command ------------------------------------------------------------------------

    def _on_finished(self, command_id: int) -> None:
        origin = self._relayed_in.pop(command_id, None)
        if origin is None or origin == self.replica:
            return
        notice = asyncio.get_running_loop().create_task(self._announce(command_id, origin))
        self._notices.add(notice)
        notice.add_done_callback(self._notices.discard)

    async def _announce(self, command_id: int, origin: str) -> None:
        try:
            await announce_ended(self._db, command_id, to=origin)
        except StorageUnavailable as exc:  # the origin re-reads what it waits for every poll
            log.warning("routing.end_not_announced", command_id=command_id, error=str(exc))

    # -- wake-ups and the safety net -----------------------------------------------------------------

    def _on_message(self, message: dict[str, Any]) -> None:
        what = message.get("what")
        if what == "relay" and message.get("to") == self.replica:
            self._wake_taker.set()
        elif what == "ended" and message.get("to") == self.replica and isinstance(message.get("id"), int):
            self._progress.finished(message["id"])
        elif what == "agent" and isinstance(agent := message.get("agent"), str):
            replica = message.get("replica")
            if isinstance(replica, str) and replica != self.replica:
                self._elsewhere[agent] = replica
            elif replica == self.replica or (replica is None and self._elsewhere.get(agent) == message.get("from")):
                self._elsewhere.pop(agent, None)  # connected here now, or its connection there ended

    async def _poll_forever(self) -> None:
        polls = 0
        while True:
            try:
                here = self._agents_here()
                elsewhere = await refresh(self._db, replica=self.replica, agents=here, stale_s=STALE_AFTER_S)
                self._elsewhere = {agent: replica for agent, replica in elsewhere.items() if agent not in here}
                self._wake_taker.set()
                waited = self._progress.waited_for()
                for command_id in await ended_among(self._db, waited):
                    self._progress.finished(command_id)
                if polls % DROP_SETTLED_EVERY == 0 and (dropped := await drop_settled(self._db)):
                    log.info("routing.relays_dropped", count=dropped, why="their command ended before it was taken")
            except StorageUnavailable as exc:
                log.warning("routing.poll_failed", error=str(exc))
            except Exception as exc:  # a bug must not stop the refreshes: this replica's agents would go stale
                log.exception("routing.poll_crashed", error=f"{type(exc).__name__}: {exc}"[:200])
            polls += 1
            await asyncio.sleep(POLL_S)
