"""The escalation worker: one loop that wakes at the next due time (or when nudged) and acts.

Each pass runs in one transaction: load due escalations, decide with `escalation.evaluate`, enqueue the
pages in the outbox, write the timeline, store the next due time. A crash before the commit leaves the
escalation due (it runs again, once); after the commit, the step is done and its messages are queued.
On PostgreSQL due rows are claimed with FOR UPDATE SKIP LOCKED, so replicas never page twice; the claim lasts as
long as the pass's transaction, which the server ends when a stalled replica stops talking to it (`hold_pass`,
store/escalations.py), so a step a dead or frozen replica had claimed is run by another one, once.

Storms (chat/storm.py): pages and reminders are grouped like announcements, per chat and per (team, severity): past
the threshold in a window, one summary per group ("+37 more pages: …"), edited as more come.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta

import structlog

from teleops.chat.notify import incident_message
from teleops.chat.storm import StormBatch, StormGate, StormGroup, StormKey, StormRule, SummaryText
from teleops.domain.incident import IncidentStatus, TimelineKind
from teleops.domain.message import Message
from teleops.oncall.delivery import CONTACT_PLATFORM, PageDelivery, PageOutcome
from teleops.oncall.directory import ChatTarget, OnCallDirectory
from teleops.oncall.escalation import EscalationState, Plan, Snapshot, Step, evaluate
from teleops.oncall.handover import digest_message
from teleops.oncall.routing import route_team
from teleops.store import escalations as store
from teleops.store.database import Database, StorageUnavailable
from teleops.store.database import Transaction as Connection
from teleops.store.handover import claim_handover, handover_facts
from teleops.store.ingest import IncidentChange, Outcome
from teleops.store.outbox_queue import enqueue_send
from teleops.store.pages import next_deadline

__all__ = ["EscalationWorker"]

log = structlog.get_logger(__name__)

MAX_SLEEP_S = 30.0
# Several replicas: a pass that found nothing to do while something is due (another replica's pass holds it) looks
# again after this long rather than at once, so the loop does not spin on rows it cannot claim.
HELD_ELSEWHERE_RETRY_S = 0.5
# A handover is sent when its shift began at most this long ago: a controller that was down over a
# handoff still sends it when it comes back, but a first start mid-shift does not page anyone.
HANDOVER_GRACE = timedelta(hours=1)  # also re-checks periodically, e.g. after another replica changed due times


class EscalationWorker:
    def __init__(
        self,
        db: Database,
        directory: OnCallDirectory,
        *,
        clock: Callable[[], datetime],
        on_enqueued: Callable[[], None] = lambda: None,
        storms: StormRule | None = None,
        on_page_outcome: PageOutcome = lambda _state, _platform, _cause: None,
        on_step: Callable[[str], None] = lambda _team: None,
        token_problems: Callable[[], dict[str, str]] = dict,
    ) -> None:
        """`storms`: how pages and reminders are grouped in a storm (`StormRule()` when not given);
        `on_page_outcome`: each page's transition, for metrics; `token_problems`: platforms rejecting our token now."""
        rule = storms or StormRule()
        self._pages = StormGate(rule, purpose="page-storm", text=SummaryText("pages", "individual pages"))
        self._reminders = StormGate(rule, purpose="remind-storm", text=SummaryText("reminders", "reminders"))
        self._db = db
        self._directory = directory
        self._clock = clock
        self._on_enqueued = on_enqueued
        self._on_step = on_step
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._pass = asyncio.Lock()  # one pass at a time in this process (replicas: SKIP LOCKED)
        self.delivery = PageDelivery(
            deadline=directory.delivery_deadline,
            methods_of=self._methods,
            message_of=lambda incident, line: incident_message(incident, status_line=line),
            steps_of=directory.policy,
            on_outcome=on_page_outcome,
            token_problems=token_problems,
        )

    # -- hooks the rest of the controller calls inside its own transactions --------------------------------

    def on_incidents_changed(self, conn: Connection, changes: Sequence[IncidentChange], now: datetime) -> None:
        """Ingest hook: a new incident starts escalating for the team its route names."""
        for change, team, steps in self._escalating(changes):
            store.start(conn, incident_id=change.incident_id, team=team, now=now, first_due=now + steps[0].after)

    def escalates(self, changes: Sequence[IncidentChange]) -> bool:
        """Whether `changes` started an escalation (the loop need not wake for an ingest that started none)."""
        return any(True for _ in self._escalating(changes))

    def _escalating(self, changes: Sequence[IncidentChange]) -> Iterator[tuple[IncidentChange, str, tuple[Step, ...]]]:
        for change in changes:
            if change.outcome is not Outcome.CREATED:
                continue
            alert = change.alert
            team, _ = route_team(
                self._directory.routes, source=alert.source, severity=alert.severity.value, labels=alert.labels
            )
            steps, _repeat = self._directory.policy(team)
            if steps:
                yield change, team, steps

    def on_incident_action(
        self, conn: Connection, incident_id: int, _action: object, _actor: str, now: datetime, _until: object
    ) -> None:
        """act_on_incident hook: ack/resolve/snooze re-evaluate the escalation at once."""
        store.nudge(conn, incident_id, now)

    def wake(self) -> None:
        self._wake.set()

    async def tell_admins(self, platform: str, problem: str | None) -> None:
        """`platform` rejects our token (or takes messages again, `problem` None): every admin hears it through their
        chats on other platforms, or, with none, their contact methods. Never raises (logged)."""
        title = f"{platform} rejects TeleOps" if problem else f"{platform} delivers again"
        text = (
            f"{problem}\nPages to {platform} fail at once and go to each person's next contact method."
            if problem
            else f"{platform} accepted a message again: pages go there as before."
        )
        message = Message(title=title, body=text)

        def write(conn: Connection, now: datetime) -> int:
            queued = 0
            for admin in store.admin_users(conn, list(self._directory.admins)):
                methods = self._methods(conn, admin)
                others = [c for chats in methods for c in chats if c.platform not in (platform, CONTACT_PLATFORM)]
                if not others:
                    others = [c for chats in methods for c in chats if c.platform == CONTACT_PLATFORM]
                for chat in others:
                    _send(conn, chat, message, now, purpose="health")
                    queued += 1
            return queued

        try:
            queued = await self._db.write(write, self._clock())
        except Exception:  # told on /readyz and in the log anyway
            log.exception("oncall.admin_notice_failed", platform=platform)
            return
        log.info("oncall.admins_told", platform=platform, problem=problem is not None, messages=queued)
        if queued:
            self._on_enqueued()

    def tell_person(self, conn: Connection, user: str, message: Message, now: datetime) -> list[str]:
        """Queue `message` to each of `user`'s chats (configured and linked) in the caller's transaction, so it is
        sent only if, and as surely as, what it tells of is committed; the platforms it went to (empty: `user` has
        no chat). The caller wakes the outbox after the commit (`wake_outbox`)."""
        chats = self._user_chats(conn, user)
        for chat in chats:
            _send(conn, chat, message, now, purpose="notice")
        return [chat.platform for chat in chats]

    def wake_outbox(self) -> None:
        self._on_enqueued()

    # -- the loop --------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="escalation-worker")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while not self._stopping:
            delay = MAX_SLEEP_S
            # Cleared before the pass, not after: a wake-up that comes during the pass (a page refused meanwhile)
            # must make the loop look again instead of being wiped out.
            self._wake.clear()
            try:
                evaluated = await self.tick()
                next_due = _earliest(await self._db.read(store.next_due_at), await self._db.read(next_deadline))
                handoff = self.next_handoff(self._clock())
                if handoff is not None and (next_due is None or handoff < next_due):
                    next_due = handoff
                if next_due is not None:
                    delay = min(MAX_SLEEP_S, max(0.0, (next_due - self._clock()).total_seconds()))
                    if delay == 0.0 and evaluated == 0 and not self._db.is_sqlite:
                        delay = HELD_ELSEWHERE_RETRY_S
            except StorageUnavailable as exc:
                log.warning("escalation.storage_unavailable", error=str(exc))
            except Exception:  # the loop must survive a bug in one pass; the escalation stays due
                log.exception("escalation.pass_failed")
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that races a wake-up, and the
            # loop would then never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def tick(self) -> int:
        """Process everything due now. Returns how many escalations were evaluated."""
        async with self._pass:
            count, enqueued = await self._db.write(self._process, self._clock())
        if enqueued:
            self._on_enqueued()
        return count

    def _process(self, conn: Connection, now: datetime) -> tuple[int, bool]:
        store.hold_pass(conn)  # the claims below last while this replica talks to the database (several replicas)
        # Who covers each rotation now, with the overrides made in the web UI (read in this pass's transaction).
        self._directory.load_overrides(conn, now)
        # Pages first: a failed one may make its escalation's next step due now (read just below).
        enqueued = self.delivery.settle(conn, now)
        due = store.due_escalations(conn, now)
        pages, reminders = self._pages.batch(), self._reminders.batch()
        for escalation in due:
            steps, repeat = self._directory.policy(escalation.team)
            incident = escalation.incident
            snapshot = Snapshot(
                state=EscalationState(escalation.state),
                step=escalation.step,
                round=escalation.round,
                round_started_at=escalation.round_started_at,
                incident_status=IncidentStatus(incident["status"]),
                snoozed_until=incident["snoozed_until"],
                acknowledged_at=incident["acknowledged_at"],
                acknowledged_by=incident["acknowledged_by"],
            )
            plan = evaluate(snapshot, steps, repeat=repeat, remind_after=self._directory.remind_after, now=now)
            if plan.unsnooze:
                store.reopen_after_snooze(conn, escalation.incident_id, now)
                incident = {**incident, "status": IncidentStatus.OPEN.value, "snoozed_until": None}
            group = StormGroup(escalation.team, str(incident.get("severity") or "unknown"))
            if plan.notify:
                self._on_step(escalation.team)
            reached = False
            for target in plan.notify:
                reached |= self._page(conn, escalation.id, incident, target, plan, len(steps), now, group, pages)
            enqueued |= reached
            if plan.remind:
                enqueued |= self._remind(conn, incident, plan.remind, now, group, reminders)
            store.save_plan(
                conn,
                escalation.id,
                state=plan.state.value,
                step=plan.step,
                round_=plan.round,
                round_started_at=plan.round_started_at,
                due_at=plan.due_at,
                now=now,
            )
            if plan.notify and not reached:  # nobody to page at this step: the next one runs now
                step_no = (plan.ran_step or 0) + 1
                round_ = plan.ran_round if plan.ran_round is not None else plan.round
                self.delivery.nobody_reached(conn, escalation.id, escalation.incident_id, step_no, round_, now)
        enqueued |= pages.write(conn, now)
        enqueued |= reminders.write(conn, now)
        enqueued |= self._handovers(conn, now)
        return len(due), enqueued

    def _handovers(self, conn: Connection, now: datetime) -> bool:
        """At each shift change, the incoming person gets the digest (once, even across restarts)."""
        enqueued = False
        for rotation in self._directory.rotations.values():
            shift = rotation.shift_at(now)
            if now - shift.start > HANDOVER_GRACE or not claim_handover(conn, rotation.name, shift.start, now):
                continue
            previous = rotation.shift_at(shift.start - timedelta(seconds=1))
            facts = handover_facts(conn, since=previous.start, now=now)
            message = digest_message(facts, incoming=shift.user, since=previous.start, now=now)
            for chat in self._user_chats(conn, shift.user):
                _send(conn, chat, message, now, purpose="handover")
                enqueued = True
            log.info("oncall.handover", rotation=rotation.name, incoming=shift.user, outgoing=previous.user)
        return enqueued

    def next_handoff(self, now: datetime) -> datetime | None:
        """The next shift change of any rotation (the loop wakes for it)."""
        times = [rotation.next_handoff(now)[0] for rotation in self._directory.rotations.values()]
        return min(times) if times else None

    def _page(
        self,
        conn: Connection,
        escalation_id: int,
        incident: dict[str, object],
        target: str,
        plan: Plan,
        total: int,
        now: datetime,
        group: StormGroup,
        storms: StormBatch,
    ) -> bool:
        page = self._directory.resolve(target, now)
        step_no = (plan.ran_step or 0) + 1
        round_ = plan.ran_round if plan.ran_round is not None else plan.round
        incident_id = int(str(incident["id"]))
        who = f" {', '.join(page.users)}" if page.users else ""
        message = incident_message(incident, status_line=f"paging{who} (step {step_no} of {total})")
        reached: list[str] = []
        folded: list[str] = []
        unreachable: list[str] = []
        # (whom, which method, where): a shared chat or contact, then each person's first contact method.
        sends: list[tuple[str | None, int, tuple[ChatTarget, ...]]] = []
        if page.chat is not None:
            sends.append((None, 0, (page.chat,)))
        for user in page.users:
            methods = self._methods(conn, user)
            if methods:
                sends.append((user, 0, methods[0]))
            else:
                unreachable.append(user)
        for whom, method, chats in sends:
            admitted: list[ChatTarget] = []
            for chat in chats:
                reached.append(f"{chat.platform}:{chat.chat_id}")
                key = StormKey(chat.platform, chat.chat_id, group)
                if chat.platform != CONTACT_PLATFORM and not storms.admit(key, incident_id, _name(incident), now):
                    folded.append(reached[-1])  # counted in the chat's storm summary of pages
                    continue
                admitted.append(chat)
            self.delivery.send(
                conn,
                incident_id=incident_id,
                escalation_id=escalation_id,
                step=step_no,
                round_=round_,
                target=target,
                user=whom,
                method=method,
                chats=admitted,
                message=message,
                now=now,
            )
        data: dict[str, object] = {"step": step_no, "target": target, "users": list(page.users), "chats": reached}
        if folded:
            data["in_storm_summary"] = folded
        if unreachable:
            data["problem"] = (
                f"{', '.join(unreachable)} has no chat or contact method to page: add telegram_id/slack_id or "
                "contacts: under users:, or have them send /link CODE from `teleops user invite NAME`"
            )
        if not reached and not page.users and page.chat is None:
            data["problem"] = f"{target} names nothing known now (check oncall: rotations, chats and contacts)"
        kind = TimelineKind.NOTIFIED if step_no == 1 and plan.round == 0 else TimelineKind.ESCALATED
        store.add_event(conn, incident_id, now, kind.value, data)
        return bool(reached)

    def _remind(
        self,
        conn: Connection,
        incident: dict[str, object],
        user: str,
        now: datetime,
        group: StormGroup,
        storms: StormBatch,
    ) -> bool:
        chats = self._user_chats(conn, user)
        for chat in chats:
            key = StormKey(chat.platform, chat.chat_id, group)
            if not storms.admit(key, int(str(incident["id"])), _name(incident), now):
                continue  # counted in the chat's storm summary of reminders
            message = incident_message(incident, status_line=f"reminder: acknowledged by {user}, still not resolved")
            _send(conn, chat, message, now, purpose="reminder", incident_id=int(str(incident["id"])))
        store.add_event(
            conn, int(str(incident["id"])), now, "reminded", {"user": user, "chats": [c.chat_id for c in chats]}
        )
        return bool(chats)

    def _methods(self, conn: Connection, user: str) -> list[tuple[ChatTarget, ...]]:
        """`user`'s contact methods in the order a page tries them: their chats together, then each contact."""
        chats = tuple(self._user_chats(conn, user))
        contacts: list[tuple[ChatTarget, ...]] = [
            (ChatTarget(CONTACT_PLATFORM, f"{user}/{name}"),) for name in self._directory.contacts_of(user)
        ]
        return [chats, *contacts] if chats else contacts

    def _user_chats(self, conn: Connection, user: str) -> list[ChatTarget]:
        chats = list(self._directory.configured_chats(user))
        for platform, external_id in store.linked_chats(conn, user):
            target = ChatTarget(platform, _private_chat(platform, external_id))
            if target not in chats:
                chats.append(target)
        return chats


def _send(
    conn: Connection, chat: ChatTarget, message: Message, now: datetime, *, purpose: str, incident_id: int | None = None
) -> None:
    enqueue_send(
        conn,
        platform=chat.platform,
        chat_id=chat.chat_id,
        payload={"message": message.to_json()},
        now=now,
        incident_id=incident_id,
        purpose=purpose,
    )


def _earliest(*times: datetime | None) -> datetime | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None


def _name(incident: dict[str, object]) -> str:
    return str(incident.get("name") or "")


def _private_chat(platform: str, external_id: str) -> str:
    """Where to reach a person privately: Telegram's private chat id is the user id; Slack DMs take the user id."""
    if platform == "slack" and "/" in external_id:
        return external_id.split("/", 1)[1]  # identities are TEAM/USER; chat.postMessage takes the user id
    return external_id
