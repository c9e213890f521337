"""Incident notifications: what gets posted, edited and replied in the alert chats, written to the outbox
inside the transaction that changed the incident (nothing committed is left unannounced).

Storms: past `storm_threshold` new incidents in one minute for one chat, further incidents are folded
into one pending summary message per chat ("+37 more: DiskFull ×20, …") instead of a flood.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from teleops.chat.render import Button, CodeBlock, Link, Message
from teleops.domain.incident import IncidentAction
from teleops.store.announcements import incident_messages, incident_snapshot, pending_storm_row, replace_payload
from teleops.store.ingest import IncidentChange, Outcome
from teleops.store.outbox import OutboxRow, enqueue_edit, enqueue_send, take_heads

__all__ = ["AlertTarget", "Extra", "ExtraSource", "Notifier", "incident_message"]

log = structlog.get_logger(__name__)

STORM_WINDOW = timedelta(minutes=1)
_SNOOZE_BUTTON = "1h"


@dataclass(frozen=True, slots=True)
class AlertTarget:
    platform: str
    chat_id: str


@dataclass(frozen=True, slots=True)
class Extra:
    """What another part adds to an incident's message (scenario memory: "last time", Run-again buttons)."""

    lines: tuple[str, ...] = ()
    code: tuple[CodeBlock, ...] = ()
    buttons: tuple[Button, ...] = ()


# Called inside the notifier's transaction with the incident snapshot; returns None for nothing to add.
ExtraSource = Callable[[Any, dict[str, Any]], Extra | None]


@dataclass(slots=True)
class _Window:
    started: datetime
    count: int = 0


def incident_message(
    incident: dict[str, Any], *, status_line: str = "", buttons: bool = True, extra: Extra | None = None
) -> Message:
    """The announcement of an incident (untrusted fields stay plain text; `render` escapes them).

    `extra` lines follow the summary, its code blocks follow the labels, its buttons follow Ack/Resolve/Snooze.
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
        offer: Callable[[OutboxRow], None] = lambda _row: None,
    ) -> None:
        self._targets = targets
        self._storm_threshold = storm_threshold
        self._wake = wake
        self._offer = offer
        self._windows: dict[AlertTarget, _Window] = {}
        self._extra: ExtraSource | None = None
        # What the last ingest transaction wrote (set in the writer thread, read after its commit on the loop):
        # the announcements it claimed, and whether it queued anything else. `_batch` is that transaction's list
        # of changes, so an attempt that rolled back is never taken for the one that committed.
        self._batch: Sequence[IncidentChange] | None = None
        self._taken: list[OutboxRow] = []
        self._queued_other = False

    def use_extra(self, source: ExtraSource) -> None:
        """Add `source`'s lines and buttons to every incident message (announcement and its edits)."""
        self._extra = source

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
        storms: dict[AlertTarget, Counter[str]] = {}  # what this batch folds, written once per chat at the end
        announced: list[int] = []
        for change in changes:
            if change.outcome is Outcome.CREATED:
                announced.extend(self._announce(conn, change, now, storms))
            elif change.outcome in (Outcome.RESOLVED, Outcome.ACKNOWLEDGED):
                self._queued_other = True
                self._state_changed(conn, change.incident_id, change.outcome, f"source:{change.alert.source}", now)
        for target, counts in storms.items():
            self._queued_other = True
            self._fold_into_storm(conn, target, counts, now)
        self._taken = take_heads(conn, announced)
        if len(self._taken) < len(announced):
            self._queued_other = True

    def after_commit(self, changes: Sequence[IncidentChange] = ()) -> None:
        """After the ingest transaction that saw `changes` committed (never before: the rows would not exist):
        offer the announcements it claimed to their workers, and wake the workers for whatever else it queued."""
        taken, other = (self._taken, self._queued_other) if changes is self._batch else ([], True)
        self._batch, self._taken, self._queued_other = None, [], False
        for row in taken:
            self._offer(row)
        if other:
            self._wake()

    # -- people's actions (act_on_incident hooks) -------------------------------------------------

    def on_action(
        self, conn: Any, incident_id: int, action: IncidentAction, actor: str, now: datetime, until: Any = None
    ) -> None:
        self._state_changed(conn, incident_id, action, actor, now, until)

    # -- internals --------------------------------------------------------------------------------

    def _announce(
        self, conn: Any, change: IncidentChange, now: datetime, storms: dict[AlertTarget, Counter[str]]
    ) -> list[int]:
        """Queue the incident's announcement in each alert chat not in a storm; returns the outbox row ids."""
        incident: dict[str, Any] | None = None  # read, and the message built, only if some chat gets it
        message: dict[str, Any] | None = None
        queued: list[int] = []
        for target in self._targets():
            window = self._windows.get(target)
            if window is None or now - window.started >= STORM_WINDOW:
                window = self._windows[target] = _Window(now)
            window.count += 1
            if window.count > self._storm_threshold:
                storms.setdefault(target, Counter())[change.alert.name or "(unnamed)"] += 1
                continue
            if incident is None:
                incident = incident_snapshot(conn, change.incident_id)
                if incident is None:
                    return queued
            if message is None:
                message = incident_message(incident, extra=self._extra_for(conn, incident)).to_json()
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

    def _fold_into_storm(self, conn: Any, target: AlertTarget, folded: Counter[str], now: datetime) -> None:
        """Add `folded` (incident name -> count) to the chat's pending storm summary, or start one."""
        pending = pending_storm_row(conn, target.platform, target.chat_id)
        counts: Counter[str] = Counter(pending[1].get("counts", {}) if pending else {})
        counts.update(folded)
        payload = {"counts": dict(counts), "message": _storm_message(counts).to_json()}
        if pending is None:
            enqueue_send(
                conn, platform=target.platform, chat_id=target.chat_id, payload=payload, now=now, purpose="storm"
            )
        else:
            replace_payload(conn, pending[0], payload)

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
        edited = incident_message(incident, status_line=line, buttons=not resolved, extra=extra).to_json()
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


def _storm_message(counts: Counter[str]) -> Message:
    total = sum(counts.values())
    parts = [f"{name} ×{n}" for name, n in counts.most_common(8)]
    if len(counts) > 8:
        parts.append("…")
    return Message(
        title=f"+{total} more new incidents",
        body=", ".join(parts) + "\nAlert storm: individual messages paused for a minute. /incidents lists them.",
    )
