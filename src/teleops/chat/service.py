"""The chat side of the controller: gateways, one outbox worker per platform, the notifier, the conversation.

Built once by the app's lifespan: `add_gateway` for each configured platform, then `start`; `stop`
on shutdown. The notifier's hooks go into the ingest writer and act_on_incident.

It also watches every gateway's input (issue #19.1): each delivery a gateway skipped is audited
(`chat.update_unhandled`) and counted (`on_unhandled`); a watched input with no successful receive cycle for
longer than `input_stall_after` is a problem shown by `/readyz` and told once, through the outbox, in the alert
chats of every *other* platform (and again when it recovers).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from teleops.chat.access import AccessDialog
from teleops.chat.base import Capabilities, Gateway, InboundEvent
from teleops.chat.commands import CommandEnds, CommandRunner
from teleops.chat.conversation import Conversation, ConversationDeps
from teleops.chat.delivery_health import DeliveryHealth
from teleops.chat.desk import HeartbeatAnswers
from teleops.chat.input_watch import InputHealth, UnhandledInput
from teleops.chat.notify import AlertTarget, Notifier
from teleops.chat.outbox import OutboxWorker
from teleops.chat.reply import Replies
from teleops.commands.approval import ApprovalDesk
from teleops.commands.dispatch import CommandSender
from teleops.commands.duo import DuoPushes
from teleops.domain.message import Message
from teleops.memory.service import ScenarioMemory
from teleops.store.audit import AuditUnavailable, record
from teleops.store.audit_checkpoints import CheckpointLog
from teleops.store.database import Database, StorageUnavailable
from teleops.store.identities import IdentityStore
from teleops.store.incident_events import IncidentEvents
from teleops.store.outbox import OutboxStore
from teleops.store.outbox_queue import OutboxRow
from teleops.store.twofactor import TwoFactorStore
from teleops.store.users import UserStore

__all__ = ["ChatAccess", "ChatCommands", "ChatService", "PlatformConfig"]

STOP_TIMEOUT_S = 5.0
INPUT_CHECK_INTERVAL_S = 15.0  # how often inputs are checked for a stall besides every /readyz

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ChatCommands:
    """What chat runs commands with: the agent hub (`sender`, `cancel`, `ends`: its command progress) and the
    defaults a command from chat gets."""

    sender: CommandSender
    timeout_s: float
    output_cap_bytes: int
    cancel: Callable[[str, int], Awaitable[None]] | None = None
    ends: CommandEnds | None = None


@dataclass(frozen=True, slots=True)
class ChatAccess:
    """What chat asks for one-time codes (or Duo pushes) and runs approvals with."""

    stepup: TwoFactorStore
    approvals: ApprovalDesk
    checkpoints: CheckpointLog
    duo: DuoPushes | None = None


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
        events: IncidentEvents,
        users: UserStore,
        clock: Callable[[], datetime],
        commands: ChatCommands,
        access: ChatAccess,
        memory: ScenarioMemory,
        heartbeats: HeartbeatAnswers,
        configured_identities: Mapping[tuple[str, str], str] | None = None,
        storm_threshold: int = 10,
        max_update_age: timedelta = timedelta(minutes=5),
        on_fallback: Callable[[str], None] = lambda _p: None,
        input_stall_after: timedelta = timedelta(minutes=5),
        on_unhandled: Callable[[UnhandledInput], None] = lambda _u: None,
        on_delivery: Callable[[str, str], None] = lambda _platform, _result: None,
    ) -> None:
        """`commands`, `access`, `memory` and `heartbeats` are what chat commands act with; the on-call side, which
        needs this service's outbox to page, comes later (`conversation.use_oncall`). `on_delivery(platform,
        result)`: each outbox row's end, `delivered` or `refused` (for the metrics)."""
        self.db = db
        self.clock = clock
        self.input_stall_after = input_stall_after
        self._on_unhandled = on_unhandled
        self._stalled: set[str] = set()  # platforms whose stall has been told to the other platforms
        self._input_checker: asyncio.Task[None] | None = None
        self._check_lock = asyncio.Lock()  # /readyz and the watchdog may check at once: each notice goes once
        self.outbox = OutboxStore(db)
        self.identities = IdentityStore(db)
        self._platforms: dict[str, PlatformConfig] = {}
        self._workers: dict[str, OutboxWorker] = {}
        self._on_fallback = on_fallback
        self._on_delivery = on_delivery
        self._page_listeners: list[Callable[[], None]] = []
        # A platform rejecting our token is told once in the other platforms' alert chats (and to admins, by oncall).
        self.health = DeliveryHealth()
        self.health.subscribe(self._token_problem)
        self._notices: set[asyncio.Task[bool]] = set()
        self.notifier = Notifier(
            self._alert_targets, storm_threshold=storm_threshold, wake=self.wake, hand_over=self.outbox.hand_over
        )
        self.notifier.use_extra(memory.announcement)  # "last time" and Run-again in every incident message
        # New and changed incidents are announced in the ingest's transaction, and every ack/resolve/snooze (REST,
        # web UI, chat) edits the incident's chat messages in its own; the workers prepare once it commits.
        events.on_alerts(in_transaction=self.notifier.on_ingest, committed=self.notifier.after_commit)
        events.on_action(in_transaction=self.notifier.on_action, committed=self.wake)
        # Gateways are added after this (add_gateway): answers look theirs up per message.
        replies = Replies(outbox=self.outbox, gateway_of=self.gateway, clock=clock, wake=self.wake)
        self._runner = CommandRunner(
            db=db,
            outbox=self.outbox,
            sender=commands.sender,
            capabilities=self.capabilities,
            clock=clock,
            wake=self.wake,
            replies=replies,
            timeout_s=commands.timeout_s,
            output_cap_bytes=commands.output_cap_bytes,
            cancel=commands.cancel,
            ends=commands.ends,
        )
        dialog = AccessDialog(
            self._runner,
            replies=replies,
            outbox=self.outbox,
            clock=clock,
            stepup=access.stepup,
            approvals=access.approvals,
            checkpoints=access.checkpoints,
            duo=access.duo,
        )
        self._runner.access = dialog  # the runner hands it commands that need a code or a second person
        self._deps = ConversationDeps(
            db=db,
            incident_events=events,
            identities=self.identities,
            outbox=self.outbox,
            users=users,
            notifier=self.notifier,
            clock=clock,
            wake=self.wake,
            replies=replies,
            commands=self._runner,
            access=dialog,  # /otp, /approve, /deny and Approve/Deny presses
            memory=memory,
            heartbeats=heartbeats,
            gateways={},
            allowed_chats={},
            configured=dict(configured_identities or {}),
            max_update_age=max_update_age,
        )
        self.conversation = Conversation(self._deps)

    def add_gateway(self, gateway: Gateway, *, allowed_chats: Sequence[str], alert_chats: Sequence[str]) -> None:
        """Register a platform (before `start`). Alert chats are served too."""
        platform = gateway.capabilities.platform
        allowed = frozenset(str(c) for c in (*allowed_chats, *alert_chats))
        self._platforms[platform] = PlatformConfig(gateway, allowed, tuple(str(c) for c in alert_chats))
        self._workers[platform] = OutboxWorker(
            self.outbox,
            gateway,
            clock=self.clock,
            on_fallback=self._on_fallback,
            on_delivered=self._delivered,
            on_refused=self._refused,
            health=self.health,
        )
        self._deps.gateways = {p: c.gateway for p, c in self._platforms.items()}
        self._deps.allowed_chats = {p: c.allowed_chats for p, c in self._platforms.items()}
        gateway.input_watch.subscribe(self._unhandled)
        gateway.input_watch.on_credentials_rejected(lambda reason: self.health.token_rejected(platform, reason))

    def capabilities(self, platform: str) -> Capabilities:
        return self._platforms[platform].gateway.capabilities

    def gateway(self, platform: str) -> Gateway | None:
        config = self._platforms.get(platform)
        return config.gateway if config is not None else None

    def platforms(self) -> list[str]:
        """The platforms added, in the order they were added."""
        return list(self._platforms)

    def delivering(self, platform: str) -> bool:
        """Whether `platform`'s outbox worker loop is running (the self-test checks it, server/selfwatch)."""
        worker = self._workers.get(platform)
        return worker is not None and worker.running

    def _alert_targets(self) -> list[AlertTarget]:
        return [AlertTarget(p, chat) for p, config in self._platforms.items() for chat in config.alert_chats]

    def wake(self) -> None:
        for worker in self._workers.values():
            worker.wake()

    async def handle(self, event: InboundEvent) -> None:
        await self.conversation.handle(event)

    # -- input health -----------------------------------------------------------------------------

    async def _unhandled(self, item: UnhandledInput) -> None:
        """A delivery a gateway skipped: counted, then audited (the log line is the watch's)."""
        self._on_unhandled(item)
        try:
            await record(
                self.db,
                at=self.clock(),
                actor="system",
                action="chat.update_unhandled",
                subject=f"{item.platform}:update:{item.update_id}",
                data={
                    "platform": item.platform,
                    "update_id": item.update_id,
                    "reason": item.reason.value,
                    "error": item.error,
                    "excerpt": item.excerpt,
                },
            )
        except (StorageUnavailable, AuditUnavailable) as exc:
            # The skip stands either way (it is logged and counted): input must not wait for the database.
            log.warning("chat.update_unhandled_not_audited", platform=item.platform, error=str(exc))

    async def input_health(self) -> list[InputHealth]:
        """Every gateway's input as of now (watched ones asked whether they are alive first)."""
        healths = []
        for config in self._platforms.values():
            watch = config.gateway.input_watch
            await watch.refresh()
            healths.append(watch.health(stall_after=self.input_stall_after))
        return healths

    async def check_inputs(self) -> list[InputHealth]:
        """`input_health`, and tell the other platforms' alert chats when an input stalls or comes back (once each)."""
        async with self._check_lock:
            return await self._check_inputs()

    async def _check_inputs(self) -> list[InputHealth]:
        healths = await self.input_health()
        for health in healths:
            told = health.platform in self._stalled
            if health.stalled and not told:
                log.error("chat.input_stalled", platform=health.platform, silent_s=round(health.silent_s))
                if await self._tell_others(health.platform, "Chat input stalled", health.problem() or ""):
                    self._stalled.add(health.platform)
            elif not health.stalled and told:
                log.warning("chat.input_restored", platform=health.platform)
                text = f"{health.platform} input works again: TeleOps hears commands and acks sent there."
                if await self._tell_others(health.platform, "Chat input restored", text):
                    self._stalled.discard(health.platform)
        return healths

    def on_page_outcome(self, listener: Callable[[], None]) -> None:
        """`listener` runs when a page's outbox row was delivered or refused (the escalation worker wakes)."""
        self._page_listeners.append(listener)

    def _delivered(self, row: OutboxRow) -> None:
        self._on_delivery(row.platform, "delivered")
        if row.purpose == "page":
            for listener in self._page_listeners:
                listener()

    def _refused(self, row: OutboxRow, _reason: str) -> None:
        self._on_delivery(row.platform, "refused")
        if row.purpose == "page":
            for listener in self._page_listeners:
                listener()

    def _token_problem(self, platform: str, problem: str | None) -> None:
        title = "Chat platform rejects TeleOps" if problem else "Chat platform accepts TeleOps again"
        text = (
            f"{platform} rejects the bot token: {problem}. Pages to {platform} fail and go to the next contact method."
            if problem
            else f"{platform} delivers messages again."
        )
        task = asyncio.get_running_loop().create_task(self._tell_others(platform, title, text))
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    async def _tell_others(self, platform: str, title: str, text: str) -> bool:
        """Post `text` in the alert chats of every platform but `platform`; True once queued (or nowhere to go)."""
        try:
            for other, config in self._platforms.items():
                for chat in config.alert_chats if other != platform else ():
                    await self.conversation.post(other, chat, Message(title=title, body=text))
        except StorageUnavailable as exc:
            log.warning("chat.input_notice_not_queued", platform=platform, error=str(exc))
            return False
        return True

    async def _check_inputs_forever(self) -> None:
        while True:
            await asyncio.sleep(INPUT_CHECK_INTERVAL_S)
            try:
                await self.check_inputs()
            except Exception:  # the watchdog must outlive whatever it watches
                log.exception("chat.input_check_failed")

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        for platform, config in self._platforms.items():
            self._workers[platform].start()
            try:
                await config.gateway.start(self.handle)
            except Exception:  # a platform that cannot start must not stop the controller
                log.exception("chat.gateway_start_failed", platform=platform)
                continue
            await self._leave_unconfigured(platform, config)
        self._input_checker = asyncio.create_task(self._check_inputs_forever(), name="chat-input-check")

    async def _leave_unconfigured(self, platform: str, config: PlatformConfig) -> None:
        """Leave the chats TeleOps once wrote to that are no longer in the platform's allowed or alert chats (a chat
        removed from the config); each one left is audited. Never raises."""
        try:
            stale = sorted((await self.outbox.chats(platform)) - config.allowed_chats)
        except StorageUnavailable as exc:
            log.warning("chat.leave_check_failed", platform=platform, error=str(exc))
            return
        for chat_id in stale:
            if not await config.gateway.leave(chat_id):
                continue
            log.info("chat.left_unconfigured_chat", platform=platform, chat_id=chat_id)
            try:
                await record(
                    self.db, at=self.clock(), actor="teleops", action="chat.left", subject=f"{platform}:{chat_id}",
                    data={"reason": "no longer in the configured chats"},
                )  # fmt: skip
            except (AuditUnavailable, StorageUnavailable) as exc:
                log.error("chat.left_not_audited", platform=platform, chat_id=chat_id, error=str(exc))

    async def stop(self) -> None:
        if self._input_checker is not None:
            self._input_checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._input_checker
            self._input_checker = None
        for notice in list(self._notices):
            notice.cancel()
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
