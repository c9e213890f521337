"""Incident notifications: what gets posted, edited and replied in the alert chats, written to the outbox
inside the transaction that changed the incident (nothing committed is left unannounced).

Storms (chat/storm.py): per chat and per group (the team the alert is routed to, and its severity), past
`threshold` new incidents in a window, further incidents are counted in one summary message per group
("+37 more new incidents: DiskFull ×20, …") that is edited as more arrive, instead of a flood.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from teleops.chat.storm import StormBatch, StormGate, StormGroup, StormKey, StormRule, SummaryText
from teleops.domain.alert import Alert
from teleops.domain.incident import IncidentAction
from teleops.domain.message import Button, Extra, Link, Message, incident_page
from teleops.store.announcements import incident_messages, incident_snapshot
from teleops.store.ingest import IncidentChange, Outcome
from teleops.store.outbox_claims import take_heads
from teleops.store.outbox_queue import OutboxRow, enqueue_edit, enqueue_send

__all__ = ["DEFAULT_ROUTE", "AlertTarget", "ExtraSource", "Notifier", "RouteOf", "incident_message"]

log = structlog.get_logger(__name__)

DEFAULT_ROUTE = "default"  # the storm group of every alert when no routes are given (`Notifier.use_storm_rule`)
_SNOOZE_BUTTON = "1h"
_ANNOUNCEMENTS = SummaryText("new incidents", "individual messages")

# The team an alert is routed to (oncall routes), for storm groups; given by the composition root.
RouteOf = Callable[[Alert], str]


@dataclass(frozen=True, slots=True)
class AlertTarget:
    platform: str
    chat_id: str


# Called inside the notifier's transaction with the incident snapshot; returns None for nothing to add.
ExtraSource = Callable[[Any, dict[str, Any]], Extra | None]


def incident_message(
    incident: dict[str, Any],
    *,
    status_line: str = "",
    buttons: bool = True,
    extra: Extra | None = None,
    public_url: str = "",
) -> Message:
    """The announcement of an incident (untrusted fields stay plain text; `render` escapes them).

    `extra` lines follow the summary, its code blocks follow the labels, its buttons follow Ack/Resolve/Snooze.
    Trimmed to fit a platform, the message names the incident's page (linked under `public_url` when given).
    """
    incident_id = int(incident["id"])
    labels = tuple(sorted((str(k), str(v)) for k, v in dict(incident.get("labels") or {}).items()))
    annotations = dict(incident.get("annotations") or {})
    links: list[Link] = []
    runbook = annotations.get("runbook_url") or annotations.get("runbook")
    if runbook:
        links.append(Link("Runbook", str(runbook)))
    if incident.get("url"):
        links.append(Link("Source", str(incident["url"])))
    status = f"#{incident_id} · {status_line or incident.get('status', 'open')}"
    choices: tuple[Button, ...] = ()
    if buttons:
        choices = (
            Button("Ack", f"ack:{incident_id}"),
            Button("Resolve", f"resolve:{incident_id}"),
            Button("Snooze 1h", f"snooze:{incident_id}:{_SNOOZE_BUTTON}"),
        )
    body = str(incident.get("summary") or "")
    if extra is not None:
        body = "\n\n".join(part for part in (body, "\n".join(extra.lines)) if part)
        if buttons:
            choices = (*choices, *extra.buttons)
    return Message(
        title=str(incident.get("name", "")),
        severity=str(incident.get("severity") or "unknown"),
        host=incident.get("host"),
        body=body,
        labels=labels,
        links=tuple(links),
        code=extra.code if extra is not None else (),
        status=status,
        buttons=choices,
        page=incident_page(incident_id, public_url),
        quotes=extra.quotes if extra is not None else (),
    )


def _hhmm(at: datetime) -> str:
    return f"{at:%H:%M}"


def _state_line(action: IncidentAction | Outcome, actor: str, now: datetime, snooze_until: Any = None) -> str:
    who = actor.removeprefix("user:")
    if action in (IncidentAction.ACK, Outcome.ACKNOWLEDGED):
        return f"acknowledged by {who} {_hhmm(now)}"
    if action in (IncidentAction.RESOLVE, Outcome.RESOLVED):
        return f"resolved by {who} {_hhmm(now)}"
    if action is IncidentAction.SNOOZE:
        until = f" until {_hhmm(snooze_until)}" if isinstance(snooze_until, datetime) else ""
        return f"snoozed by {who}{until}"
    return f"reopened by {who} {_hhmm(now)}"


class Notifier:
    """Turns incident changes into outbox rows. Its hooks run inside the writer's transaction."""

    def __init__(
        self,
        targets: Callable[[], Sequence[AlertTarget]],
        *,
        storm_threshold: int = 10,
        wake: Callable[[], None] = lambda: None,
        hand_over: Callable[[Sequence[OutboxRow]], None] = lambda _rows: None,
    ) -> None:
        self._targets = targets
        self._storms = StormGate(StormRule(threshold=storm_threshold), purpose="storm", text=_ANNOUNCEMENTS)
        self._route_of: RouteOf = lambda _alert: DEFAULT_ROUTE
        self._wake = wake
        self._hand_over = hand_over  # OutboxStore.hand_over: the claimed announcements, to their workers
        self._extra: ExtraSource | None = None
        self._public_url = ""
        # What the last ingest transaction wrote (set in the writer thread, read after its commit on the loop):
        # the announcements it claimed, and whether it queued anything else. `_batch` is that transaction's list
        # of changes, so an attempt that rolled back is never taken for the one that committed.
        self._batch: Sequence[IncidentChange] | None = None
        self._taken: list[OutboxRow] = []
        self._queued_other = False

    def use_storm_rule(self, rule: StormRule, route_of: RouteOf | None = None) -> None:
        """Group storms by `rule` (threshold, window, incident list link), per chat and per (route, severity),
        where `route_of` names the team an alert is routed to (every alert is in one route without it)."""
        self._storms.rule = rule
        if route_of is not None:
            self._route_of = route_of

    def use_extra(self, source: ExtraSource) -> None:
        """Add `source`'s lines and buttons to every incident message (announcement and its edits)."""
        self._extra = source

    def link_incident_pages(self, public_url: str) -> None:
        """Trimmed incident messages link their page under `public_url` (`server.public_url`; "" names it only)."""
        self._public_url = public_url

    def _extra_for(self, conn: Any, incident: dict[str, Any]) -> Extra | None:
        if self._extra is None:
            return None
        try:
            return self._extra(conn, incident)
        except Exception:  # an optional block must never cost the notification itself
            log.exception("chat.notify_extra_failed", incident_id=incident.get("id"))
            return None

    # -- ingest (IngestWriter hooks) --------------------------------------------------------------

    def on_ingest(self, conn: Any, changes: Sequence[IncidentChange], now: datetime) -> None:
        """ChangeHook: announce new incidents, edit/reply on resolution — same transaction as the ingest."""
        self._batch, self._taken, self._queued_other = changes, [], False
        storms = self._storms.batch()  # what this batch folds, written once per chat and group at the end
        announced: list[int] = []
        for change in changes:
            if change.outcome is Outcome.CREATED:
                announced.extend(self._announce(conn, change, now, storms))
            elif change.outcome in (Outcome.RESOLVED, Outcome.ACKNOWLEDGED):
                self._queued_other = True
                self._state_changed(conn, change.incident_id, change.outcome, f"source:{change.alert.source}", now)
        if storms.write(conn, now):
            self._queued_other = True
        self._taken = take_heads(conn, announced)
        if len(self._taken) < len(announced):
            self._queued_other = True

    def after_commit(self, changes: Sequence[IncidentChange] = ()) -> None:
        """After the ingest transaction that saw `changes` committed (never before: the rows would not exist):
        hand over the announcements it claimed, and wake the workers for whatever else it queued."""
        taken, other = (self._taken, self._queued_other) if changes is self._batch else ([], True)
        self._batch, self._taken, self._queued_other = None, [], False
        self._hand_over(taken)
        if other:
            self._wake()

    # -- people's actions (act_on_incident hooks) -------------------------------------------------

    def on_action(
        self, conn: Any, incident_id: int, action: IncidentAction, actor: str, now: datetime, until: Any = None
    ) -> None:
        self._state_changed(conn, incident_id, action, actor, now, until)

    # -- internals --------------------------------------------------------------------------------

    def _announce(self, conn: Any, change: IncidentChange, now: datetime, storms: StormBatch) -> list[int]:
        """Queue the incident's announcement in each alert chat where its group is not in a storm; returns the
        outbox row ids."""
        incident: dict[str, Any] | None = None  # read, and the message built, only if some chat gets it
        message: dict[str, Any] | None = None
        queued: list[int] = []
        alert = change.alert
        group = StormGroup(self._route_of(alert), alert.severity.value)
        for target in self._targets():
            key = StormKey(target.platform, target.chat_id, group)
            if not storms.admit(key, change.incident_id, alert.name, now):
                continue
            if incident is None:
                incident = incident_snapshot(conn, change.incident_id)
                if incident is None:
                    return queued
            if message is None:
                extra = self._extra_for(conn, incident)
                message = incident_message(incident, extra=extra, public_url=self._public_url).to_json()
            queued.append(
                enqueue_send(
                    conn,
                    platform=target.platform,
                    chat_id=target.chat_id,
                    payload={"message": message},
                    now=now,
                    incident_id=change.incident_id,
                    purpose="incident",
                )
            )
        return queued

    def _state_changed(
        self,
        conn: Any,
        incident_id: int,
        action: IncidentAction | Outcome,
        actor: str,
        now: datetime,
        until: Any = None,
    ) -> None:
        incident = incident_snapshot(conn, incident_id)
        if incident is None:
            return
        line = _state_line(action, actor, now, until)
        resolved = action in (IncidentAction.RESOLVE, Outcome.RESOLVED)
        extra = self._extra_for(conn, incident)
        edited = incident_message(
            incident, status_line=line, buttons=not resolved, extra=extra, public_url=self._public_url
        ).to_json()
        if not resolved and action in (IncidentAction.ACK, Outcome.ACKNOWLEDGED):
            # Once acknowledged, Ack is no longer a choice.
            edited["buttons"] = [b for b in edited["buttons"] if not str(b[1]).startswith("ack:")]
        for row_id, platform, chat_id in incident_messages(conn, incident_id):
            enqueue_edit(conn, ref_id=row_id, payload={"message": edited}, now=now)
            if resolved:
                reply = Message(body=f"✅ #{incident_id} {incident.get('name', '')} {line}")
                enqueue_send(
                    conn,
                    platform=platform,
                    chat_id=chat_id,
                    payload={"message": reply.to_json()},
                    now=now,
                    incident_id=incident_id,
                    reply_to=row_id,
                    purpose="reply",
                )
