"""The agent hub: `WS /api/v1/agent/ws`. Authenticates agents, routes exec/cancel to the right connection,
records what agents report, reconciles after reconnects, and ends commands whose agent is gone as `lost`.

Incoming frames are decoded against the wire table and handled through `_handlers`, an explicit dict
keyed by message type (docs/threat-model.md T13): nothing is looked up by attribute name.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING

import structlog
from starlette.websockets import WebSocket, WebSocketState

from teleops.commands.backend.exit_report import finish_of_exit
from teleops.commands.backend.lost import LostCommands
from teleops.commands.backend.ownership import CommandOwnership
from teleops.commands.backend.progress import CommandProgress
from teleops.commands.backend.redaction import OutputRedaction
from teleops.commands.backend.routing import ReplicaRouting
from teleops.commands.dispatch import AgentUnavailable
from teleops.config.settings import AgentsSettings, HostSettings
from teleops.domain.clock import Clock
from teleops.domain.command import CommandNotFound, CommandStatus, Finish, NotThisAgentsCommand
from teleops.domain.redaction import SecretRules
from teleops.store.agents import get_agent, mark_agent_offline, register_agent, touch_agent
from teleops.store.audit import AuditUnavailable, record
from teleops.store.commands import finish_command, finish_reported, in_flight_commands
from teleops.store.database import Database, StorageUnavailable
from teleops.store.tokens import TokenKind, TokenStore
from teleops.wire import (
    Ack,
    Cancel,
    Error,
    Exec,
    Exit,
    Hello,
    Message,
    Output,
    Ping,
    Pong,
    Refused,
    Started,
    Welcome,
    WireError,
    decode,
    encode,
)
from teleops.wire.command_ids import row_id_of, wire_command_id

if TYPE_CHECKING:
    from teleops.commands.backend.ssh_executor import SshHosts

__all__ = ["CLOSE_FORBIDDEN", "CLOSE_PROTOCOL", "CLOSE_UNAUTHORIZED", "KILLED_AT_SHUTDOWN", "AgentHub"]

log = structlog.get_logger(__name__)

CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_PROTOCOL = 4400
CLOSE_REPLACED = 4409
HELLO_TIMEOUT_S = 10.0
MAX_BAD_FRAMES = 3
KILLED_AT_SHUTDOWN = (
    "killed: the controller shut down and stopped its local agent, which kills the commands it runs; "
    "run it again if it is still needed"
)


@dataclass(eq=False)
class _Connection:
    name: str
    websocket: WebSocket
    secret: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    bad_frames: int = 0
    rejections_audited: int = 0

    async def send(self, message: Message) -> None:
        async with self.lock:
            await self.websocket.send_text(encode(message))

    async def close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.websocket.close(code=code, reason=reason[:120])


Handler = Callable[[_Connection, Message], Awaitable[None]]


class AgentHub:
    """One per controller process. Also the `CommandSender` the dispatch step uses."""

    def __init__(
        self,
        *,
        db: Database,
        tokens: TokenStore,
        clock: Clock,
        settings: AgentsSettings,
        hosts: Sequence[HostSettings] = (),
        redaction: SecretRules | None = None,
        on_rejected: Callable[[str], None] | None = None,
        local_agent: str | None = None,
    ) -> None:
        """`local_agent`: the name of the controller's embedded agent, which answers only to its name."""
        self._db = db
        self._local_agent = local_agent
        self.ownership = CommandOwnership(db, clock=clock, on_rejected=on_rejected)
        self._redaction = OutputRedaction(redaction or SecretRules.build())
        self._tokens = tokens
        self._clock = clock
        self._heartbeat_s = settings.heartbeat.seconds
        self._lost_after = settings.lost_after.timedelta
        self._output_cap = settings.output_cap_bytes
        self._connections: dict[str, _Connection] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.progress = CommandProgress(db, output_cap_chars=self._output_cap)
        # Several replicas share a PostgreSQL database: commands for agents connected to another one are handed
        # over (commands/backend/routing.py). One SQLite process holds every agent itself: no routing.
        self.routing: ReplicaRouting | None = None
        if not db.is_sqlite:
            self.routing = ReplicaRouting(
                db,
                clock=clock,
                progress=self.progress,
                agents_here=lambda: list(self._connections),
                send_here=self._send_exec_here,
                cancel_here=self._send_cancel_here,
                default_output_cap=self._output_cap,
            )
        self._lost = LostCommands(
            db,
            clock=clock,
            progress=self.progress,
            connected=lambda name: name in self._connections,
            elsewhere=None if self.routing is None else self._connected_elsewhere,
            running_over_ssh=lambda command_id: self._ssh is not None and self._ssh.is_running(command_id),
            heartbeat_s=self._heartbeat_s,
            lost_after=self._lost_after,
        )
        # Agentless hosts (`hosts:` with `ssh:`) are targets of this hub too, so every sender reaches them.
        self._ssh: SshHosts | None = None
        if hosts:
            from teleops.commands.backend.ssh_executor import (
                SshHosts,  # asyncssh loads only when SSH hosts are configured
            )

            self._ssh = SshHosts(
                hosts, db=db, clock=clock, output_cap_bytes=self._output_cap, on_finished=self.progress.finished
            )
        self._handlers: dict[str, Handler] = {
            "started": self._on_started,
            "output": self._on_output,
            "exit": self._on_exit,
            "refused": self._on_refused,
            "ping": self._on_ping,
            "pong": self._on_pong,
            "error": self._on_error,
        }

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="agent-hub-sweeper")
        if self.routing is not None:
            self.routing.start()

    async def register_ssh_hosts(self) -> None:
        """List the configured SSH hosts in the agents table (version "ssh"), so hosts resolve to them."""
        if self._ssh is None:
            return
        from teleops.commands.backend.ssh_executor import SshTarget

        for host in self._ssh.hosts:
            hostname = SshTarget(host.ssh.address, host.ssh.user, host.ssh.key_file, host.ssh.known_hosts).host_port[0]
            await register_agent(
                self._db,
                name=host.name,
                hostname=hostname,
                version="ssh",
                labels=dict(host.labels),
                allowlist_digest="",
                now=self._clock(),
            )

    async def stop(self) -> None:
        await self.progress.flush_all()
        if self._ssh is not None:
            await self._ssh.stop()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self.routing is not None:
            await self.routing.stop()
        for connection in list(self._connections.values()):
            await connection.close(1001, "controller shutting down")

    async def end_killed_at_shutdown(self, agent_name: str, *, spared: Collection[int] = ()) -> int:
        """The controller stopped its own agent `agent_name` as it shuts down, and that agent killed the commands it
        ran (agent/executions.py `stop`): end them `killed`, saying why, instead of leaving them `running` for the
        next start to find gone and end `lost`. `spared`: commands whose result the agent wrote before it stopped
        (its spool reports them at the next start). Returns how many were ended."""
        await self.progress.flush_all()  # the output streamed so far stays on the record
        ended = 0
        for command in await in_flight_commands(self._db, agent_name=agent_name):
            if command.id in spared:
                continue
            finish = Finish(CommandStatus.KILLED, reason=KILLED_AT_SHUTDOWN)
            record = await finish_command(self._db, command.id, finish, now=self._clock())
            self.ownership.forget(command.id)
            if record is None:
                continue  # it ended meanwhile
            self.progress.finished(command.id, record)
            log.info("command.killed_at_shutdown", command_id=command.id, agent=agent_name)
            ended += 1
        return ended

    # -- CommandSender -------------------------------------------------------------------------------

    def is_connected(self, agent_name: str) -> bool:
        """Connected here, an SSH host of this replica, or connected to another replica (routing)."""
        return (
            agent_name in self._connections
            or (self._ssh is not None and self._ssh.is_connected(agent_name))
            or (self.routing is not None and self.routing.replica_of(agent_name) is not None)
        )

    def _connected_elsewhere(self, agent_name: str) -> bool:
        return self.routing is not None and self.routing.replica_of(agent_name) is not None

    async def send_exec(self, agent_name: str, message: Exec) -> None:
        if agent_name not in self._connections:
            if self._ssh is not None and self._ssh.is_connected(agent_name):
                await self._ssh.send_exec(agent_name, message)
                return
            if self.routing is not None and (replica := self.routing.replica_of(agent_name)) is not None:
                await self.routing.relay_exec(replica, agent_name, message)
                return
        await self._send_exec_here(agent_name, message)

    async def _send_exec_here(self, agent_name: str, message: Exec) -> None:
        """Send on this replica's own connection to `agent_name` (raises AgentUnavailable)."""
        command_id = row_id_of(message.command_id)
        if command_id is not None:
            self.ownership.sent(command_id, agent_name, message.command_id)
        try:
            await self._send_to(agent_name, message)
        except AgentUnavailable:
            if command_id is not None:
                self.ownership.forget(command_id)
            raise

    async def send_cancel(self, agent_name: str, command_id: int) -> None:
        """Raises AgentUnavailable when the agent is connected neither here nor to another replica."""
        if self._ssh is not None and self._ssh.cancel(command_id):
            return
        replica = self.routing.replica_of(agent_name) if self.routing is not None else None
        if agent_name not in self._connections and self.routing is not None and replica is not None:
            try:
                wire_id = await self.ownership.wire_id(command_id)
            except CommandNotFound as exc:
                raise AgentUnavailable(f"command {command_id} does not exist") from exc
            await self.routing.relay_cancel(replica, agent_name, command_id, wire_id)
            return
        await self._send_cancel_here(agent_name, command_id)

    async def _send_cancel_here(self, agent_name: str, command_id: int) -> None:
        try:
            wire_id = await self.ownership.wire_id(command_id)
        except CommandNotFound as exc:
            raise AgentUnavailable(f"command {command_id} does not exist") from exc
        await self._send_to(agent_name, Cancel(command_id=wire_id))

    async def _send_to(self, agent_name: str, message: Message) -> None:
        connection = self._connections.get(agent_name)
        if connection is None:
            raise AgentUnavailable(f"agent {agent_name} is not connected")
        try:
            await connection.send(message)
        except Exception as exc:  # a dead socket surfaces as several exception types
            raise AgentUnavailable(f"connection to agent {agent_name} failed: {type(exc).__name__}") from exc

    # -- the endpoint --------------------------------------------------------------------------------

    async def serve(self, websocket: WebSocket) -> None:
        """Run one agent session until it disconnects. Never raises for anything the peer sends."""
        await websocket.accept()
        peer = websocket.client.host if websocket.client else "?"
        secret = _bearer(websocket.headers.get("authorization"))
        record = await self._tokens.verify(TokenKind.AGENT, secret) if secret else None
        if record is None:
            log.warning("agent.refused", peer=peer, reason="missing, invalid or revoked agent token")
            await _refuse(
                websocket,
                CLOSE_UNAUTHORIZED,
                "unauthorized",
                "agent token missing, invalid or revoked; create one with `teleops token create agent NAME` "
                "on the controller and pass it with --token-file",
            )
            return
        try:
            hello = decode(await asyncio.wait_for(websocket.receive_text(), HELLO_TIMEOUT_S))
        except (WireError, TimeoutError, KeyError, RuntimeError) as exc:
            log.warning("agent.bad_hello", peer=peer, token=record.name, error=str(exc)[:200])
            await _refuse(websocket, CLOSE_PROTOCOL, "bad_hello", f"expected a hello message first: {exc}")
            return
        except Exception:  # disconnected before saying hello
            return
        if not isinstance(hello, Hello):
            await _refuse(websocket, CLOSE_PROTOCOL, "bad_hello", f"expected hello first, got {hello.type}")
            return
        if hello.agent != record.name:
            log.warning("agent.refused", peer=peer, token=record.name, claimed=hello.agent, reason="name mismatch")
            await _refuse(
                websocket,
                CLOSE_FORBIDDEN,
                "forbidden",
                f"this token belongs to agent {record.name!r}, not {hello.agent!r}; start the agent with "
                f"--name {record.name} or create a token for {hello.agent}",
            )
            return
        await self._session(websocket, hello, peer, secret or "")

    async def _session(self, websocket: WebSocket, hello: Hello, peer: str, secret: str) -> None:
        name = hello.agent
        now = self._clock()
        before = await get_agent(self._db, name)
        agent = await register_agent(
            self._db,
            name=name,
            hostname=hello.hostname,
            version=hello.version,
            labels=dict(hello.labels),
            allowlist_digest=hello.allowlist_digest,
            now=now,
            bind=name != self._local_agent,
        )
        if agent.claim_conflict:
            # Not an error of the connection: the agent is still reachable by its name and bound host names.
            log.warning("agent.claim_refused", agent=name, conflict=agent.claim_conflict)
        if agent.claim_conflict and (before is None or before.claim_conflict != agent.claim_conflict):
            # Audited when it appears or changes, not at every reconnect while it lasts.
            with contextlib.suppress(StorageUnavailable, AuditUnavailable):
                await record(
                    self._db,
                    at=now,
                    actor=f"agent:{name}",
                    action="agent.claim_refused",
                    subject=f"agent:{name}",
                    data={"hostname": hello.hostname, "labels": dict(hello.labels), "why": agent.claim_conflict},
                )
        connection = _Connection(name, websocket, secret)
        previous = self._connections.pop(name, None)
        if previous is not None:
            await previous.close(CLOSE_REPLACED, "replaced by a newer connection of the same agent")
        bound = log.bind(agent=name)
        bound.info(
            "agent.connected",
            peer=peer,
            hostname=hello.hostname,
            version=hello.version,
            spooled=len(hello.results),
            running=len(hello.running),
        )
        try:
            await connection.send(
                Welcome(agent_id=agent.id, agent=name, server_time=now, heartbeat_s=self._heartbeat_s)
            )
            # Reconcile before the connection is visible to dispatch, so no exec sent on it is judged here.
            await self._reconcile(connection, hello, connected_at=now)
            self._connections[name] = connection
            if self.routing is not None:
                await self.routing.connected_here(name)
            await self._receive_loop(connection)
        except Exception as exc:  # the peer vanished mid-send, or storage failed: end this session only
            bound.warning("agent.session_error", error=f"{type(exc).__name__}: {exc}"[:200])
        finally:
            if self._connections.get(name) is connection:
                del self._connections[name]
                if self.routing is not None:
                    await self.routing.disconnected_here(name)
                with contextlib.suppress(StorageUnavailable):
                    await mark_agent_offline(self._db, name, now=self._clock())
            bound.info("agent.disconnected")

    async def _receive_loop(self, connection: _Connection) -> None:
        while True:
            frame = await connection.websocket.receive()
            if frame["type"] == "websocket.disconnect":
                return
            text = frame.get("text")
            if text is None:
                text = frame.get("bytes") or b""
            try:
                message = decode(text)
            except WireError as exc:
                if await self._bad_frame(connection, "bad_message", str(exc)):
                    return
                continue
            handler = self._handlers.get(message.type)
            if handler is None:
                if await self._bad_frame(connection, "unexpected", f"{message.type} is not sent by agents"):
                    return
                continue
            connection.bad_frames = 0
            await handler(connection, message)

    async def _bad_frame(self, connection: _Connection, code: str, detail: str) -> bool:
        """Log and answer a bad frame; True when the connection was closed for repeating it."""
        connection.bad_frames += 1
        log.warning("agent.bad_message", agent=connection.name, error=detail[:200], count=connection.bad_frames)
        await connection.send(Error(code=code, message=detail[:4000]))
        if connection.bad_frames >= MAX_BAD_FRAMES:
            await connection.close(CLOSE_PROTOCOL, "too many invalid messages")
            return True
        return False

    # -- reconciliation after a (re)connect ----------------------------------------------------------

    async def _reconcile(self, connection: _Connection, hello: Hello, *, connected_at: datetime) -> None:
        reported = {result.command_id for result in hello.results}
        for result in hello.results:
            await self._record_exit(connection, result, late=True)
        running = set(hello.running)
        for command in await in_flight_commands(self._db, agent_name=connection.name):
            # A bare row id was sent by an older controller.
            keys = {wire_command_id(command.id, command.created_at), str(command.id)}
            if keys & reported or keys & running:
                continue
            if command.dispatched_at is not None and command.dispatched_at >= connected_at:
                continue
            reason = (
                f"agent {connection.name} reconnected without this command (it restarted, or never received it); "
                "outcome unknown — check the host"
            )
            await finish_command(self._db, command.id, Finish(CommandStatus.LOST, reason=reason), now=self._clock())
            self.progress.finished(command.id)
            log.warning("command.lost", command_id=command.id, agent=connection.name, reason="not on agent")

    # -- handlers (one per message type an agent may send) -------------------------------------------

    async def _owned(self, connection: _Connection, message_type: str, wire_id: str) -> int | None:
        """The command id when `connection` may report on it; otherwise the report is refused (audited)."""
        command_id = await self.ownership.owns(connection.name, wire_id)
        if command_id is not None:
            return command_id
        audited = await self.ownership.reject(
            connection.name, message_type, wire_id, audited_so_far=connection.rejections_audited
        )
        connection.rejections_audited += audited
        await connection.send(
            Error(code="not_yours", message=f"command {wire_id[:40]} was not sent to agent {connection.name}")
        )
        return None

    async def _on_started(self, connection: _Connection, message: Message) -> None:
        assert isinstance(message, Started)
        command_id = await self._owned(connection, "started", message.command_id)
        if command_id is not None:
            self.progress.started(command_id, self._clock())

    async def _on_output(self, connection: _Connection, message: Message) -> None:
        assert isinstance(message, Output)
        command_id = await self._owned(connection, "output", message.command_id)
        if command_id is not None:
            self.progress.output(command_id, self._redaction.chunk(command_id, message.data))

    async def _on_exit(self, connection: _Connection, message: Message) -> None:
        assert isinstance(message, Exit)
        await self._record_exit(connection, message, late=False)

    async def _record_exit(self, connection: _Connection, message: Exit, *, late: bool) -> None:
        command_id = await self._owned(connection, "exit", message.command_id)
        if command_id is None:
            # Nothing was stored, but acknowledged all the same: an ack only lets the agent drop the file from its
            # own spool, and a result it cannot deliver here (another controller's, or a restored backup's) would
            # otherwise come back at every reconnect (and fill its hello).
            await connection.send(Ack(command_id=message.command_id))
            return
        finish = finish_of_exit(message, agent=connection.name, late=late)
        if finish.output is not None:
            finish = replace(finish, output=self._redaction.final(command_id, finish.output))
        finish = replace(finish, started_at=self.progress.take_started_at(command_id))
        try:
            changed = await finish_reported(
                self._db, command_id, finish, agent_name=connection.name, now=self._clock(), replace_lost=True
            )
        except (CommandNotFound, NotThisAgentsCommand):
            changed = None
        self.ownership.forget(command_id)
        self.progress.finished(command_id, changed)
        log.info(
            "command.finished" if changed else "command.duplicate_result",
            command_id=command_id,
            agent=connection.name,
            status=finish.status.value,
            exit_code=message.exit_code,
            late=late,
        )
        # Stored, or already final: either way the agent may drop it from its spool.
        await connection.send(Ack(command_id=message.command_id))

    async def _on_refused(self, connection: _Connection, message: Message) -> None:
        assert isinstance(message, Refused)
        command_id = await self._owned(connection, "refused", message.command_id)
        if command_id is None:
            return
        reason = f"agent {connection.name} refused to run it: {self._redaction.text(message.reason)}"
        denied = Finish(CommandStatus.DENIED, reason=reason)
        with contextlib.suppress(CommandNotFound, NotThisAgentsCommand):  # it ended meanwhile
            await finish_reported(
                self._db, command_id, denied, agent_name=connection.name, now=self._clock(), replace_lost=False
            )
        self.ownership.forget(command_id)
        self.progress.finished(command_id)
        log.info("command.refused_by_agent", command_id=command_id, agent=connection.name, reason=reason)

    async def _on_ping(self, connection: _Connection, message: Message) -> None:
        assert isinstance(message, Ping)
        # A token revoked while connected ends the session within a heartbeat (plus the token cache).
        if await self._tokens.verify(TokenKind.AGENT, connection.secret) is None:
            log.warning("agent.refused", agent=connection.name, reason="token revoked while connected")
            await _refuse(
                connection.websocket,
                CLOSE_UNAUTHORIZED,
                "unauthorized",
                "agent token invalid or revoked; create a new one with `teleops token create agent NAME`",
            )
            return
        await touch_agent(self._db, connection.name, now=self._clock())
        await connection.send(Pong(nonce=message.nonce))

    async def _on_pong(self, connection: _Connection, message: Message) -> None:
        await touch_agent(self._db, connection.name, now=self._clock())

    async def _on_error(self, connection: _Connection, message: Message) -> None:
        assert isinstance(message, Error)
        log.warning(
            "agent.reported_error",
            agent=connection.name,
            code=message.code,
            error=self._redaction.text(message.message)[:200],
        )

    # -- agents that do not come back ----------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        interval = min(1.0, self._lost_after.total_seconds() / 2)
        try:
            await self.register_ssh_hosts()
        except StorageUnavailable as exc:
            log.error("agent_hub.ssh_hosts_not_listed", error=str(exc), hint="restart once the database is back")
        while True:
            await asyncio.sleep(interval)
            try:
                await self._lost.sweep()
            except StorageUnavailable as exc:
                log.warning("agent_hub.sweep_failed", error=str(exc))


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


async def _refuse(websocket: WebSocket, code: int, error: str, message: str) -> None:
    with contextlib.suppress(Exception):
        await websocket.send_text(encode(Error(code=error, message=message)))
    with contextlib.suppress(Exception):
        if websocket.application_state != WebSocketState.DISCONNECTED:
            await websocket.close(code=code, reason=error)
