"""The chat side of the controller: gateways, one outbox worker per platform, the notifier, the conversation.

Built once by the app's lifespan: `add_gateway` for each configured platform, then `start`; `stop`
on shutdown. The notifier's hooks go into the ingest writer and act_on_incident.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from teleops.chat.access import AccessDialog
from teleops.chat.base import Capabilities, Gateway, InboundEvent
from teleops.chat.commands import CommandEnds, CommandRunner
from teleops.chat.conversation import Conversation, ConversationDeps
from teleops.chat.notify import AlertTarget, Notifier
from teleops.chat.outbox import OutboxWorker
from teleops.chat.render import Message
from teleops.pipeline.approval import ApprovalDesk
from teleops.pipeline.dispatch import CommandSender
from teleops.pipeline.duo import DuoPushes
from teleops.store.audit_checkpoints import CheckpointLog
from teleops.store.database import Database
from teleops.store.identities import IdentityStore
from teleops.store.outbox import OutboxRow, OutboxStore
from teleops.store.twofactor import TwoFactorStore
from teleops.store.users import UserStore

__all__ = ["ChatService", "PlatformConfig"]

STOP_TIMEOUT_S = 5.0

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PlatformConfig:
    gateway: Gateway
    allowed_chats: frozenset[str]
    alert_chats: tuple[str, ...]


class ChatService:
    def __init__(
        self,
        *,
        db: Database,
        users: UserStore,
        clock: Callable[[], datetime],
        configured_identities: Mapping[tuple[str, str], str] | None = None,
        storm_threshold: int = 10,
        max_update_age: timedelta = timedelta(minutes=5),
        on_fallback: Callable[[str], None] = lambda _p: None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.outbox = OutboxStore(db)
        self.identities = IdentityStore(db)
        self._platforms: dict[str, PlatformConfig] = {}
        self._workers: dict[str, OutboxWorker] = {}
        self._on_fallback = on_fallback
        self._runner: CommandRunner | None = None
        self.notifier = Notifier(
            self._alert_targets, storm_threshold=storm_threshold, wake=self.wake, offer=self._offer
        )
        self._deps = ConversationDeps(
            db=db,
            identities=self.identities,
            outbox=self.outbox,
            users=users,
            notifier=self.notifier,
            clock=clock,
            wake=self.wake,
            gateways={},
            allowed_chats={},
            configured=dict(configured_identities or {}),
            max_update_age=max_update_age,
            offer=self._offer,
        )
        self.conversation = Conversation(self._deps)

    def add_gateway(self, gateway: Gateway, *, allowed_chats: Sequence[str], alert_chats: Sequence[str]) -> None:
        """Register a platform (before `start`). Alert chats are served too."""
        platform = gateway.capabilities.platform
        allowed = frozenset(str(c) for c in (*allowed_chats, *alert_chats))
        self._platforms[platform] = PlatformConfig(gateway, allowed, tuple(str(c) for c in alert_chats))
        self._workers[platform] = OutboxWorker(self.outbox, gateway, clock=self.clock, on_fallback=self._on_fallback)
        self._deps.gateways = {p: c.gateway for p, c in self._platforms.items()}
        self._deps.allowed_chats = {p: c.allowed_chats for p, c in self._platforms.items()}

    def enable_commands(
        self,
        sender: CommandSender,
        *,
        timeout_s: float,
        output_cap_bytes: int,
        cancel: Callable[[str, int], Awaitable[None]] | None = None,
        ends: CommandEnds | None = None,
    ) -> None:
        """Let chat run commands through the pipeline (needs the agent hub; `ends`: its command progress)."""

        async def post(
            platform: str, chat_id: str, message: Message, incident_id: int | None, /, *, reply_to: int | None = None
        ) -> int:
            return await self.conversation.post(platform, chat_id, message, incident_id=incident_id, reply_to=reply_to)

        self._runner = CommandRunner(
            db=self.db,
            outbox=self.outbox,
            sender=sender,
            capabilities=self.capabilities,
            clock=self.clock,
            wake=self.wake,
            post=post,
            timeout_s=timeout_s,
            output_cap_bytes=output_cap_bytes,
            cancel=cancel,
            ends=ends,
        )
        self._deps.commands = self._runner

    def enable_access(
        self,
        *,
        stepup: TwoFactorStore | None,
        approvals: ApprovalDesk | None,
        checkpoints: CheckpointLog | None,
        duo: DuoPushes | None = None,
    ) -> None:
        """Ask for one-time codes (or Duo pushes) and run approvals in chat (after `enable_commands`)."""
        if self._runner is None:
            raise RuntimeError("enable_commands must come before enable_access")
        self._runner.access = AccessDialog(
            self._runner,
            outbox=self.outbox,
            gateway_of=self.gateway,
            clock=self.clock,
            stepup=stepup,
            approvals=approvals,
            checkpoints=checkpoints,
            duo=duo,
        )

    def capabilities(self, platform: str) -> Capabilities:
        return self._platforms[platform].gateway.capabilities

    def gateway(self, platform: str) -> Gateway | None:
        config = self._platforms.get(platform)
        return config.gateway if config is not None else None

    def _alert_targets(self) -> list[AlertTarget]:
        return [AlertTarget(p, chat) for p, config in self._platforms.items() for chat in config.alert_chats]

    def wake(self) -> None:
        for worker in self._workers.values():
            worker.wake()

    def _offer(self, row: OutboxRow) -> None:
        worker = self._workers.get(row.platform)
        if worker is not None:
            worker.offer(row)

    async def handle(self, event: InboundEvent) -> None:
        await self.conversation.handle(event)

    async def start(self) -> None:
        for platform, config in self._platforms.items():
            self._workers[platform].start()
            try:
                await config.gateway.start(self.handle)
            except Exception:  # a platform that cannot start must not stop the controller
                log.exception("chat.gateway_start_failed", platform=platform)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.stop()
        for platform, config in self._platforms.items():
            # A platform that is unreachable (or an SDK stuck reconnecting) must not hold up shutdown.
            try:
                await asyncio.wait_for(config.gateway.stop(), timeout=STOP_TIMEOUT_S)
            except TimeoutError:
                log.warning("chat.stop_timed_out", platform=platform, timeout_s=STOP_TIMEOUT_S)
            except Exception:
                log.exception("chat.stop_failed", platform=platform)
            await self._workers[platform].stop()
            log.info("chat.stopped", platform=platform)
