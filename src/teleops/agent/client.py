"""The agent's connection to the controller: dial out, hello → welcome, hand execs to `Executions`
(agent/executions.py), heartbeat, reconnect.

Commands belong to the agent, not to a connection: when the link drops mid-command the command keeps
running (up to its timeout), its result goes to the spool, and the next hello reports it, keyed by command
id. The controller acknowledges each result; only then does the spool forget it.
Incoming frames are decoded against the wire table and handled through `_handlers`, an explicit dict.

Before the token leaves (it is in the HTTP upgrade request): wss:// checks the controller against --ca-file and/or
--pin inside the TLS handshake (agent/tls.py, docs/threat-model.md T16); plain ws:// to anything but this host logs a
warning on every attempt.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import structlog
import websockets
from websockets.asyncio.client import ClientConnection

import teleops
from teleops.agent.allowlist import Allowlist
from teleops.agent.executions import Executions
from teleops.agent.spool import Spool
from teleops.agent.tls import Pin, PinMismatch, TLSConfigError, client_context, plaintext_warning
from teleops.wire import (
    MAX_MESSAGE_BYTES,
    Error,
    Hello,
    Message,
    Ping,
    Pong,
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
    pins: tuple[Pin, ...] = ()  # SHA-256 of the controller's SubjectPublicKeyInfo; any one of them will do
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
        """Raises ValueError on a bad --server, TLSConfigError on --ca-file/--pin that cannot be used."""
        self._options = options
        self._url = agent_socket_url(options.server_url)
        self._ssl_context: ssl.SSLContext | None = None
        if self._url.startswith("wss://"):
            # Built once: a bad --ca-file stops the agent at start instead of failing every attempt.
            self._ssl_context = client_context(options.ca_file, options.pins)
        elif options.ca_file is not None or options.pins:
            raise TLSConfigError(
                f"--ca-file and --pin need an https:// --server; {options.server_url} is plain http://, the token "
                "would travel in clear"
            )
        self._session: _Session | None = None
        self._executions = Executions(
            allowlist=options.allowlist,
            spool=options.spool,
            max_concurrent=options.max_concurrent,
            kill_grace_s=options.kill_grace_s,
            send=self._send,
            connection=lambda: self._session,
        )
        self._handlers: dict[str, Callable[[Message], Awaitable[None]]] = {
            "exec": self._executions.on_exec,
            "cancel": self._executions.on_cancel,
            "ack": self._executions.on_ack,
            "ping": self._on_ping,
            "pong": self._on_pong,
            "error": self._on_error,
        }

    @property
    def allowlist_digest(self) -> str:
        return self._options.allowlist.digest()

    @property
    def default_run_as(self) -> str:
        """Who this agent's commands run as when it is root and no rule names a user."""
        return self._options.allowlist.default_run_as

    @property
    def running(self) -> list[str]:
        return self._executions.running

    async def run_forever(self) -> None:
        """Stay connected; reconnect with jittered exponential backoff (cap 30 s). Cancel to stop: running
        commands are then killed with their process groups (the runner leaves nothing behind)."""
        backoff = BACKOFF_START_S
        if self._url.startswith("wss://") and self._options.ca_file is None and not self._options.pins:
            log.warning(
                "agent.controller_not_pinned",
                server=self._url,
                detail="wss:// trusts every CA in the system store: a certificate for this name from any of them "
                "impersonates the controller; pin it with --ca-file or --pin (docs/install-agent.md, TLS)",
            )
        self._executions.start()
        try:
            while True:
                started = asyncio.get_running_loop().time()
                untrusted = False
                try:
                    await self._session_once()
                    reason = "the controller closed the connection"
                except ControllerRefused as exc:
                    reason = f"the controller refused this agent: {exc}"
                except (OSError, TimeoutError, websockets.exceptions.WebSocketException, WireError) as exc:
                    reason = _describe(exc)
                    # Wrong key or CA: an attacker on the path, or a controller whose key changed before its new
                    # pin was rolled out. Keep trying, loudly: an attack must not stop the agent for good.
                    untrusted = isinstance(exc, ssl.SSLCertVerificationError)
                if asyncio.get_running_loop().time() - started > STABLE_AFTER_S:
                    backoff = BACKOFF_START_S
                delay = random.uniform(backoff / 2, backoff)
                if untrusted:
                    log.error("agent.controller_untrusted", reason=reason, retry_in_s=round(delay, 2), server=self._url)
                else:
                    log.warning("agent.disconnected", reason=reason, retry_in_s=round(delay, 2), server=self._url)
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, BACKOFF_CAP_S)
        finally:
            await self._executions.stop()
            self._options.spool.close()

    # -- one connection ------------------------------------------------------------------------------

    async def _session_once(self) -> None:
        options = self._options
        warning = plaintext_warning(self._url)
        if warning is not None:
            log.warning("agent.token_in_clear", detail=warning, server=self._url)
        # The token is in the upgrade request, written only once the TLS handshake (with its CA and pin checks,
        # agent/tls.py) has succeeded.
        async with websockets.connect(
            self._url,
            additional_headers={"Authorization": f"Bearer {options.token}"},
            user_agent_header=f"teleops-agent/{teleops.__version__}",
            ssl=self._ssl_context,
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
        running = self._executions.running  # before the results: a command finishing in between is in one of them
        # The hello carries at most 1,000 results (the wire's limit); the rest go as exits after the welcome.
        results = options.spool.pending()[:1000]
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

    # -- handlers (one per message type a controller may send; commands are `Executions`') ------------

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
    if isinstance(exc, PinMismatch):
        return str(exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS: the controller's certificate is not trusted ({exc.verify_message or exc.reason}); check --ca-file "
            "and the controller's certificate; not sending the token"
        )
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}; check --ca-file, --pin and the controller's certificate"
    if isinstance(exc, OSError):
        return f"cannot reach the controller: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"
