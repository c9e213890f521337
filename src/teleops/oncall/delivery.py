"""Pages as deliveries with a deadline (issue #20.1): queued, then delivered, sent or failed, with the reason.

The escalation worker queues a page through `PageDelivery.send` (an outbox row plus a `pages` row, in its
transaction) and calls `settle` at the start of every pass. `settle` reads what each queued page's outbox row says:

- sent by a chat platform: the page is *delivered* (as far as Telegram or Slack can say); handed to a contact method
  (a mail server, a webhook): *sent*;
- refused by the platform (bot blocked, chat gone or migrated, token rejected), or still not out when its deadline
  passes (default 1 minute: a platform that accepts nothing, a 429 for longer than that): *failed*, with the reason.

A failed page is on the incident's timeline with its reason, goes at once to the person's next contact method (their
chats first, then each `contacts:` entry in order), and, when no page of its step reached anyone, runs the
escalation's next step now instead of at its time (`escalation.hurried_round_start`). Another page of the same step
that was delivered, or is still on its way, counts as reaching someone (Telegram failed, Slack took it: no hurry).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog

from teleops.domain.message import Message
from teleops.oncall.directory import ChatTarget
from teleops.oncall.escalation import EscalationState, Step, hurried_round_start
from teleops.store import escalations as escalation_store
from teleops.store.database import Transaction as Connection
from teleops.store.outbox_queue import OutboxStatus, enqueue_send
from teleops.store.pages import (
    LivePage,
    PageState,
    incident_row,
    live_pages,
    record_page,
    settle_page,
    step_reached,
)

__all__ = ["CONTACT_PLATFORM", "PageDelivery", "PageOutcome"]

log = structlog.get_logger(__name__)

CONTACT_PLATFORM = "contact"  # contact methods (email, webhooks, ntfy, … through Apprise): handed over, not delivered

# (state, platform, cause): each page's transition, for the metrics. cause: "" unless failed ("refused",
# "token_rejected", "deadline").
PageOutcome = Callable[[str, str, str], None]
# The person's contact methods in order: their chats (together), then each contact method alone.
MethodsOf = Callable[[Connection, str], list[tuple[ChatTarget, ...]]]
# A message about an incident (dict: the incident row) with a status line.
MessageOf = Callable[[dict[str, Any], str], Message]


class PageDelivery:
    def __init__(
        self,
        *,
        deadline: timedelta,
        methods_of: MethodsOf,
        message_of: MessageOf,
        steps_of: Callable[[str], tuple[tuple[Step, ...], int]],
        on_outcome: PageOutcome = lambda _state, _platform, _cause: None,
        token_problems: Callable[[], dict[str, str]] = dict,
    ) -> None:
        """`steps_of(team)`: the team's (steps, repeat); `token_problems()`: platforms rejecting our token now."""
        self.deadline = deadline
        self._methods_of = methods_of
        self._message_of = message_of
        self._steps_of = steps_of
        self._on_outcome = on_outcome
        self._token_problems = token_problems

    def send(
        self,
        conn: Connection,
        *,
        incident_id: int,
        escalation_id: int | None,
        step: int,
        round_: int,
        target: str,
        user: str | None,
        method: int,
        chats: Sequence[ChatTarget],
        message: Message,
        now: datetime,
    ) -> None:
        """Queue `message` to each of `chats` as pages of `user` (None: a shared chat or contact) by `method`."""
        for chat in chats:
            outbox_id = enqueue_send(
                conn,
                platform=chat.platform,
                chat_id=chat.chat_id,
                payload={"message": message.to_json()},
                now=now,
                incident_id=incident_id,
                purpose="page",
            )
            record_page(
                conn,
                incident_id=incident_id,
                escalation_id=escalation_id,
                step=step,
                round_=round_,
                target=target,
                user_name=user,
                method=method,
                platform=chat.platform,
                chat_id=chat.chat_id,
                outbox_id=outbox_id,
                now=now,
                deadline_at=now + self.deadline,
            )
            self._on_outcome(PageState.QUEUED.value, chat.platform, "")

    def settle(self, conn: Connection, now: datetime) -> bool:
        """Settle every queued page whose outbox row has an answer or whose deadline passed. True when it queued
        new pages (fallbacks) for the outbox to send."""
        enqueued = False
        for page in live_pages(conn):
            if page.outbox_status == OutboxStatus.SENT.value:
                state = PageState.SENT if page.platform == CONTACT_PLATFORM else PageState.DELIVERED
                if not settle_page(conn, page.id, state, None, now):
                    continue  # settled by another replica's pass meanwhile
                self._on_outcome(state.value, page.platform, "")
                escalation_store.add_event(conn, page.incident_id, now, f"page.{state.value}", _where(page))
                continue
            if page.outbox_status == OutboxStatus.FAILED.value:
                cause = "token_rejected" if page.platform in self._token_problems() else "refused"
                reason = page.outbox_error or "the platform refused it"
            elif page.deadline_at <= now:
                cause = "deadline"
                reason = f"not delivered within {_duration(self.deadline)}"
                if page.outbox_error:
                    reason += f" (last error: {page.outbox_error})"
            else:
                continue
            if not settle_page(conn, page.id, PageState.FAILED, reason, now):
                continue  # settled by another replica's pass meanwhile: its fallback is queued there
            self._on_outcome(PageState.FAILED.value, page.platform, cause)
            enqueued |= self._failed(conn, page, reason, now)
        return enqueued

    def _failed(self, conn: Connection, page: LivePage, reason: str, now: datetime) -> bool:
        data: dict[str, object] = {**_where(page), "reason": reason}
        enqueued = False
        # Asked before the fallback is queued: another page of this step delivered, or still on its way, may reach
        # someone; otherwise the next step runs now, while the person's next contact method is tried too.
        if not step_reached(conn, page.incident_id, page.step, page.round):
            data["escalation"] = self._hurry(conn, page.escalation_id, page.step, page.round, now)
        incident = incident_row(conn, page.incident_id)
        following = page.method + 1
        methods = self._methods_of(conn, page.user_name) if page.user_name is not None else []
        if page.user_name is None:
            pass  # a shared chat or contact: the escalation's next step is its fallback
        elif incident is None or incident["status"] != "open":
            # Someone answered (acked, snoozed) or it is resolved: nobody is paged further.
            data["next"] = f"none: the incident is {incident['status'] if incident else 'gone'}"
        elif following >= len(methods):
            data["next"] = "no other contact method"
        else:
            chats = methods[following]
            data["next"] = [f"{c.platform}:{c.chat_id}" for c in chats]
            line = f"paging {page.user_name} (step {page.step}; {page.platform} failed: {reason})"
            self.send(
                conn,
                incident_id=page.incident_id,
                escalation_id=page.escalation_id,
                step=page.step,
                round_=page.round,
                target=page.target,
                user=page.user_name,
                method=following,
                chats=chats,
                message=self._message_of(incident, line),
                now=now,
            )
            enqueued = True
        escalation_store.add_event(conn, page.incident_id, now, "page.failed", data)
        log.warning("page.failed", incident_id=page.incident_id, platform=page.platform, reason=reason)
        return enqueued

    def nobody_reached(
        self, conn: Connection, escalation_id: int, incident_id: int, step: int, round_: int, now: datetime
    ) -> None:
        """Step `step` had nobody to page at all (no chat, no contact method): its next step runs now."""
        data: dict[str, object] = {"step": step, "reason": "nobody at this step has a chat or contact method"}
        data["escalation"] = self._hurry(conn, escalation_id, step, round_, now)
        escalation_store.add_event(conn, incident_id, now, "page.failed", data)

    def _hurry(self, conn: Connection, escalation_id: int | None, step: int, round_: int, now: datetime) -> str:
        """Run the escalation's next step now, if it has one waiting; says what happened, for the timeline."""
        if escalation_id is None:
            return "not escalating"
        escalation = escalation_store.escalation_now(conn, escalation_id)
        if escalation is None:
            return "not escalating"
        steps, _repeat = self._steps_of(escalation.team)
        start = hurried_round_start(
            state=EscalationState(escalation.state),
            step=escalation.step,
            round_=escalation.round,
            steps=steps,
            failed_step=step,
            failed_round=round_,
            now=now,
        )
        if start is None:
            return "no later step waiting"
        escalation_store.hurry(conn, escalation.id, round_started_at=start, now=now)
        return f"step {escalation.step + 1} now"


def _where(page: LivePage) -> dict[str, object]:
    data: dict[str, object] = {"step": page.step, "platform": page.platform, "chat": page.chat_id}
    if page.user_name is not None:
        data["user"] = page.user_name
    return data


def _duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"
