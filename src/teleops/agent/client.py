"""The agent's connection to the controller: dial out, hello → welcome, run execs, report, reconnect.

Commands belong to the agent, not to a connection: when the link drops mid-command the command keeps
running (up to its timeout), its result goes to the spool, and the next hello reports it, keyed by command
id. The controller acknowledges each result; only then does the spool forget it.
Incoming frames are decoded against the wire table and handled through `_handlers`, an explicit dict.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import random
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import structlog
import websockets
from websockets.asyncio.client import ClientConnection

import teleops
from teleops.agent.allowlist import Allowlist
from teleops.agent.runner import RunSpec, run
from teleops.agent.spool import Spool
from teleops.domain.redaction import Redactor, redact
from teleops.wire import (
    MAX_MESSAGE_BYTES,
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

__all__ = ["Agent", "AgentOptions", "ControllerRefused", "agent_socket_url"]

log = structlog.get_logger(__name__)

WS_PATH = "/api/v1/agent/ws"
BACKOFF_START_S = 0.5
BACKOFF_CAP_S = 30.0
STABLE_AFTER_S = 10.0  # a session that lasted this long resets the backoff
WELCOME_TIMEOUT_S = 10.0
MAX_BAD_FRAMES = 3


class ControllerRefused(Exception):
    """The controller said no (bad token, wrong name); the message is the controller's own words."""


def agent_socket_url(server: str) -> str:
    """`http(s)://host:port[/prefix]` → `ws(s)://host:port[/prefix]/api/v1/agent/ws`. Raises ValueError."""
    parts = urlsplit(server.strip())
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ValueError(f"--server must look like http://HOST:PORT or https://HOST, got {server!r}")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + WS_PATH, "", ""))


@dataclass(frozen=True, slots=True)
class AgentOptions:
    server_url: str
    name: str
    token: str
    hostname: str
    allowlist: Allowlist
    spool: Spool
    ca_file: Path | None = None
    labels: dict[str, str] = field(default_factory=dict)
    max_concurrent: int = 128
    kill_grace_s: float = 3.0


@dataclass(eq=False)
class _Session:
    websocket: ClientConnection
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    bad_frames: int = 0


class Agent:
    def __init__(self, options: AgentOptions) -> None:
        self._options = options
        self._url = agent_socket_url(options.server_url)
        self._session: _Session | None = None
        self._running: dict[str, asyncio.Event] = {}  # command id → its cancel event
        self._spooling: dict[str, asyncio.Future[None]] = {}  # command id → its result being written
        self._tasks: set[asyncio.Task[None]] = set()
        self._handlers: dict[str, Callable[[Message], Awaitable[None]]] = {
            "exec": self._on_exec,
            "cancel": self._on_cancel,
            "ack": self._on_ack,
            "ping": self._on_ping,
            "pong": self._on_pong,
            "error": self._on_error,
        }

    @property
    def allowlist_digest(self) -> str:
        return self._options.allowlist.digest()

    @property
    def running(self) -> list[str]:
        return list(self._running)

    async def run_forever(self) -> None:
        """Stay connected; reconnect with jittered exponential backoff (cap 30 s). Cancel to stop: running
        commands are then killed with their process groups (the runner leaves nothing behind)."""
        backoff = BACKOFF_START_S
        try:
            while True:
                started = asyncio.get_running_loop().time()
                try:
                    await self._session_once()
                    reason = "the controller closed the connection"
                except ControllerRefused as exc:
                    reason = f"the controller refused this agent: {exc}"
                except (OSError, TimeoutError, websockets.exceptions.WebSocketException, WireError) as exc:
                    reason = _describe(exc)
                if asyncio.get_running_loop().time() - started > STABLE_AFTER_S:
                    backoff = BACKOFF_START_S
                delay = random.uniform(backoff / 2, backoff)
                log.warning("agent.disconnected", reason=reason, retry_in_s=round(delay, 2), server=self._url)
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, BACKOFF_CAP_S)
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- one connection ------------------------------------------------------------------------------

    async def _session_once(self) -> None:
        options = self._options
        ssl_context: ssl.SSLContext | None = None
        if self._url.startswith("wss://"):
            # With --ca-file only that CA is trusted (pinning, THREATS T16); else the system store.
            ssl_context = ssl.create_default_context(cafile=str(options.ca_file) if options.ca_file else None)
        async with websockets.connect(
            self._url,
            additional_headers={"Authorization": f"Bearer {options.token}"},
            user_agent_header=f"teleops-agent/{teleops.__version__}",
            ssl=ssl_context,
            max_size=MAX_MESSAGE_BYTES,
            open_timeout=10,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=2,
        ) as websocket:
            hello, sent = self._hello()
            await websocket.send(encode(hello))
            first = decode(await asyncio.wait_for(websocket.recv(), WELCOME_TIMEOUT_S))
            if isinstance(first, Error):
                raise ControllerRefused(f"{first.message} ({first.code})")
            if not isinstance(first, Welcome):
                raise WireError(f"expected welcome, got {first.type}")
            session = _Session(websocket)
            self._session = session
            log.info("agent.connected", server=self._url, agent_id=first.agent_id, reported=len(sent))
            heartbeat = asyncio.create_task(self._heartbeat(session, first.heartbeat_s))
            try:
                # Results that finished while the hello was being built, or did not fit in it.
                for result in self._options.spool.pending():
                    if result.command_id not in sent:
                        await self._send(result)
                async for frame in websocket:
                    if not await self._handle(session, frame):
                        return
            finally:
                self._session = None
                heartbeat.cancel()

    def _hello(self) -> tuple[Hello, set[str]]:
        options = self._options
        running = list(self._running)  # before the results: a command finishing in between is in one of them
        results = options.spool.pending()
        hello = Hello(
            agent=options.name,
            hostname=options.hostname,
            version=teleops.__version__,
            labels=options.labels,
            allowlist_digest=options.allowlist.digest(),
            results=results,
            running=running,
        )
        # Keep the hello under the frame limit; what does not fit is sent as exits right after the welcome.
        while results and len(hello.model_dump_json()) > MAX_MESSAGE_BYTES // 2:
            results = results[: len(results) // 2]
            hello = hello.model_copy(update={"results": results})
        return hello, {r.command_id for r in results}

    async def _heartbeat(self, session: _Session, interval: float) -> None:
        nonce = 0
        while True:
            await asyncio.sleep(interval)
            nonce += 1
            await self._send(Ping(nonce=nonce))

    async def _handle(self, session: _Session, frame: str | bytes) -> bool:
        """Handle one frame; False when the session should end."""
        try:
            message = decode(frame)
        except WireError as exc:
            return await self._bad_frame(session, str(exc))
        handler = self._handlers.get(message.type)
        if handler is None:
            return await self._bad_frame(session, f"{message.type} is not sent by a controller")
        session.bad_frames = 0
        await handler(message)
        return True

    async def _bad_frame(self, session: _Session, detail: str) -> bool:
        session.bad_frames += 1
        log.warning("agent.bad_message", error=detail[:200], count=session.bad_frames)
        await self._send(Error(code="bad_message", message=detail[:4000]))
        if session.bad_frames >= MAX_BAD_FRAMES:
            await session.websocket.close(code=4400, reason="too many invalid messages")
            return False
        return True

    async def _send(self, message: Message) -> bool:
        """Send on the current connection; False (and nothing raised) when there is none."""
        session = self._session
        if session is None:
            return False
        try:
            async with session.lock:
                await session.websocket.send(encode(message))
        except (websockets.exceptions.ConnectionClosed, OSError, WireError) as exc:
            log.info("agent.send_failed", type=message.type, error=_describe(exc))
            return False
        return True

    # -- handlers (one per message type a controller may send) ---------------------------------------

    async def _on_exec(self, message: Message) -> None:
        assert isinstance(message, Exec)
        command_id = message.command_id
        options = self._options
        bound = log.bind(command_id=command_id, argv0=message.argv[0])
        if command_id in self._running or options.spool.seen(command_id):
            await self._refuse(bound, command_id, f"command {command_id} was already received here; never run twice")
            return
        decision = options.allowlist.check(message.argv)
        if not decision.allowed:
            options.spool.remember(command_id)
            await self._refuse(bound, command_id, decision.reason, argv=message.argv)
            return
        if len(self._running) >= options.max_concurrent:
            await self._refuse(bound, command_id, f"busy: {len(self._running)} commands running (the limit)")
            return
        # At most once, also across restarts: the id is on disk before the command may exec. The fsync runs in a
        # worker thread while the process is being set up; the runner opens its start gate only after it.
        options.spool.note_seen(command_id)
        remembered = asyncio.ensure_future(asyncio.to_thread(options.spool.persist_seen, command_id))
        cancel = asyncio.Event()
        self._running[command_id] = cancel
        task = asyncio.create_task(self._execute(message, cancel, remembered), name=f"command-{command_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refuse(
        self, bound: structlog.typing.FilteringBoundLogger, command_id: str, reason: str, argv: list[str] | None = None
    ) -> None:
        bound.warning("agent.command_refused", reason=reason, argv=argv)
        await self._send(Refused(command_id=command_id, reason=reason))

    async def _execute(self, message: Exec, cancel: asyncio.Event, remembered: asyncio.Future[None]) -> None:
        command_id = message.command_id
        bound = log.bind(command_id=command_id, argv0=message.argv[0])
        decoder = codecs.getincrementaldecoder("utf-8")(errors="backslashreplace")
        seq = 0

        # Secrets are masked before anything leaves this host; a secret split across chunks is held back whole.
        rules = self._options.allowlist.redaction
        redactor = Redactor(rules)

        async def on_output(chunk: bytes) -> None:
            nonlocal seq
            text = redactor.feed(decoder.decode(chunk))
            if text:
                await self._send(Output(command_id=command_id, seq=seq, data=text))
                seq += 1

        bound.info("agent.command_started", argv=message.argv, timeout_s=message.timeout_s)
        await self._send(Started(command_id=command_id))
        spec = RunSpec(
            argv=list(message.argv),
            timeout_s=message.timeout_s,
            kill_grace_s=self._options.kill_grace_s,
            output_cap_bytes=message.output_cap_bytes,
            cwd=message.cwd,
            env=dict(message.env),
            command_id=command_id,
        )
        try:
            result = await run(spec, on_output, cancel=cancel, ready=remembered)
            exit_ = Exit(
                command_id=command_id,
                exit_code=result.exit_code,
                signal=result.signal,
                timed_out=result.timed_out,
                cancelled=result.cancelled,
                truncated=result.truncated,
                output_bytes=result.output_bytes,
                duration_s=result.duration_s,
                output=redact(
                    result.output.decode("utf-8", errors="backslashreplace"), self._options.allowlist.redaction
                ),
                finished_at=datetime.now(UTC),
            )
        except Exception as exc:  # the runner promises not to raise; if it does, report rather than vanish
            bound.exception("agent.runner_failed")
            exit_ = Exit(command_id=command_id, exit_code=126, output=f"teleops agent: could not run it: {exc}\n")
        try:
            await remembered  # done already: the runner waited for it before the command could start
        except OSError as exc:
            bound.error("agent.seen_not_saved", error=str(exc), hint="free disk space in the state directory")
        bound.info(
            "agent.command_finished",
            exit_code=exit_.exit_code,
            timed_out=exit_.timed_out,
            duration_s=round(exit_.duration_s, 3),
        )
        # The result is spooled (so it survives a drop or a restart) while it travels: the command stays in
        # `_running` until the spool has it, so a hello in between lists it as running or as a result.
        spooled = asyncio.ensure_future(asyncio.to_thread(self._options.spool.put, exit_))
        self._spooling[command_id] = spooled
        session = self._session
        sent = await self._send(exit_)
        try:
            await spooled
        except OSError as exc:
            bound.error("agent.spool_failed", error=str(exc), hint="free disk space in the state directory")
        finally:
            self._running.pop(command_id, None)
            self._spooling.pop(command_id, None)
        if not sent or self._session is not session:
            # The connection changed while it was being spooled: report it on the new one (once the controller
            # has it, a second report is only acknowledged).
            await self._send(exit_)

    async def _on_cancel(self, message: Message) -> None:
        assert isinstance(message, Cancel)
        event = self._running.get(message.command_id)
        if event is None:
            log.info("agent.cancel_unknown", command_id=message.command_id)
            return
        log.info("agent.command_cancelled", command_id=message.command_id)
        event.set()

    async def _on_ack(self, message: Message) -> None:
        assert isinstance(message, Ack)
        command_id = message.command_id
        spooling = self._spooling.get(command_id)
        if spooling is not None and not spooling.done():
            # Acknowledged before its spool file was written: forget it once it is, not before.
            spooling.add_done_callback(lambda _done: self._forget(command_id))
            return
        self._forget(command_id)

    def _forget(self, command_id: str) -> None:
        with contextlib.suppress(OSError):
            self._options.spool.ack(command_id)

    async def _on_ping(self, message: Message) -> None:
        assert isinstance(message, Ping)
        await self._send(Pong(nonce=message.nonce))

    async def _on_pong(self, message: Message) -> None:
        return None

    async def _on_error(self, message: Message) -> None:
        assert isinstance(message, Error)
        log.warning("agent.controller_error", code=message.code, error=message.message[:200])


def _describe(exc: BaseException) -> str:
    if isinstance(exc, websockets.exceptions.InvalidStatus):
        return f"the controller answered HTTP {exc.response.status_code} instead of a WebSocket upgrade"
    if isinstance(exc, websockets.exceptions.ConnectionClosed):
        rcvd = exc.rcvd
        return f"connection closed ({rcvd.code} {rcvd.reason})" if rcvd else "connection lost"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}; check --ca-file and the controller's certificate"
    if isinstance(exc, OSError):
        return f"cannot reach the controller: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"
