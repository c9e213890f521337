"""Alert storms, a rule of time, the same on every platform (the web console too) and for escalation pages.

Per chat and per group (the team the alert is routed to, and its severity), the first `threshold` new incidents of
a window are posted one by one. Past that, ONE summary message per group is posted ("+37 more new incidents:
DiskFull ×20, …") and then edited as more arrive, until the window ends; the next incident after that opens a new
window. Another team's or another severity's alert has its own window, so it is never folded into someone else's
storm. None of this depends on how fast a platform takes messages: a platform that is never rate limited gets the
same messages as one that is.

The counts live in the summary's outbox row (rewritten in the transaction that folds more incidents), so what a
summary shows is always what was committed. Which incidents of a window went out on their own is kept in memory,
by incident id, so a transaction that is rolled back and run again decides the same way; a restart opens new windows.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from teleops.config import Settings
from teleops.domain.message import Link, Message
from teleops.store.announcements import replace_payload, storm_summary
from teleops.store.outbox_queue import OutboxStatus, enqueue_edit, enqueue_send

__all__ = ["StormBatch", "StormGate", "StormGroup", "StormKey", "StormRule", "SummaryText", "storm_rule"]

MAX_WINDOWS = 10_000  # windows kept before the ended ones are dropped
_NAMES_SHOWN = 8


@dataclass(frozen=True, slots=True)
class StormRule:
    """`threshold` messages per chat and group in a `window`, then one summary. `incidents_url`: the incident list
    (the web UI), linked from every summary; empty for none."""

    threshold: int = 10
    window: timedelta = timedelta(minutes=1)
    incidents_url: str = ""


def storm_rule(settings: Settings) -> StormRule:
    """The rule the configuration asks for (`telegram.storm_threshold`, `telegram.storm_window`; every platform)."""
    return StormRule(
        threshold=settings.telegram.storm_threshold,
        window=settings.telegram.storm_window.timedelta,
        # Linked only where people can open it: the public URL, when there is one (never a loopback default).
        incidents_url=f"{public_url}/ui/" if (public_url := settings.server.public_url.rstrip("/")) else "",
    )


@dataclass(frozen=True, slots=True)
class StormGroup:
    """What is never folded together: `route` is the team the alert is routed to; `severity` as the alert says."""

    route: str
    severity: str


@dataclass(frozen=True, slots=True)
class StormKey:
    platform: str
    chat_id: str
    group: StormGroup


@dataclass(frozen=True, slots=True)
class SummaryText:
    """The words of one kind of summary: "+N more {noun}", and what was paused ("individual messages")."""

    noun: str
    paused: str


@dataclass(slots=True)
class _Window:
    started: datetime
    singles: set[int] = field(default_factory=set)  # incident ids posted on their own in this window
    summary_id: int | None = None  # the outbox row of this window's summary, once queued


class StormGate:
    """Decides, per new message, whether it goes on its own or into its group's summary; writes the summaries.

    One gate per kind of message (announcements, pages, reminders), each with its own `purpose` for the summary
    rows. Used only from the transactions of one writer at a time (the ingest writer, the escalation pass).
    """

    def __init__(self, rule: StormRule, *, purpose: str, text: SummaryText) -> None:
        self.rule = rule
        self._purpose = purpose
        self._text = text
        self._windows: dict[StormKey, _Window] = {}

    def batch(self) -> StormBatch:
        """Start the decisions of one transaction; `StormBatch.write` queues its summaries in that transaction."""
        return StormBatch(self)

    def _admit(self, key: StormKey, incident_id: int, now: datetime) -> bool:
        window = self._windows.get(key)
        if window is None or now - window.started >= self.rule.window:
            if len(self._windows) >= MAX_WINDOWS:
                self._forget_ended(now)
            window = self._windows[key] = _Window(now)
        if incident_id in window.singles:  # the same decision when a rolled-back transaction runs again
            return True
        if len(window.singles) < self.rule.threshold:
            window.singles.add(incident_id)
            return True
        return False

    def _forget_ended(self, now: datetime) -> None:
        for key in [k for k, w in self._windows.items() if now - w.started >= self.rule.window]:
            del self._windows[key]

    def _write(self, conn: Any, key: StormKey, folded: Counter[str], now: datetime) -> None:
        """Add `folded` (name -> count) to the window's summary: a new summary row, or the same row rewritten and
        an edit of its message queued (coalesced with an edit still waiting)."""
        window = self._windows[key]
        summary = None
        if window.summary_id is not None:
            summary = storm_summary(
                conn, window.summary_id, platform=key.platform, chat_id=key.chat_id, purpose=self._purpose
            )
            if summary is not None and summary.payload.get("window") != window.started.isoformat():
                summary = None  # the id was reused by another window's summary after a rollback
        counts: Counter[str] = Counter(summary.payload.get("counts", {}) if summary is not None else {})
        counts.update(folded)
        message = self.summary_message(counts, key.group, window.started + self.rule.window).to_json()
        payload = {
            "counts": dict(counts),
            "group": [key.group.route, key.group.severity],
            "window": window.started.isoformat(),
            "message": message,
        }
        if summary is None or summary.status == OutboxStatus.FAILED:
            window.summary_id = enqueue_send(
                conn, platform=key.platform, chat_id=key.chat_id, payload=payload, now=now, purpose=self._purpose
            )
            return
        if replace_payload(conn, summary.id, payload, if_pending=True):
            return  # not claimed yet: its delivery claims (and sends) this payload
        replace_payload(conn, summary.id, payload)  # sent or in flight: the row keeps the counts, an edit shows them
        enqueue_edit(conn, ref_id=summary.id, payload={"message": message}, now=now)

    def summary_message(self, counts: Counter[str], group: StormGroup, until: datetime) -> Message:
        """The summary of `counts` (name -> how many) for `group`, whose window ends at `until`."""
        total = sum(counts.values())
        parts = [f"{name} ×{n}" for name, n in counts.most_common(_NAMES_SHOWN)]
        if len(counts) > _NAMES_SHOWN:
            parts.append(f"… ({len(counts) - _NAMES_SHOWN} more names)")
        links = (Link("Incidents", self.rule.incidents_url),) if self.rule.incidents_url else ()
        return Message(
            title=f"+{total} more {self._text.noun}",
            severity=group.severity,
            body=", ".join(parts)
            + f"\nStorm for {group.route} · {group.severity}: {self._text.paused} paused until {until:%H:%M} UTC; "
            "this message counts the rest. /incidents lists them.",
            links=links,
        )


class StormBatch:
    """The decisions of one transaction. `admit` each message, then `write` once, in that transaction."""

    def __init__(self, gate: StormGate) -> None:
        self._gate = gate
        self._folded: dict[StormKey, Counter[str]] = {}

    def admit(self, key: StormKey, incident_id: int, name: str, now: datetime) -> bool:
        """True: post this incident's message on its own. False: it is counted (as `name`) in its group's summary."""
        if self._gate._admit(key, incident_id, now):
            return True
        self._folded.setdefault(key, Counter())[name or "(unnamed)"] += 1
        return False

    def write(self, conn: Any, now: datetime) -> bool:
        """Queue (or edit) the summaries of what this batch folded. Returns whether anything was queued."""
        for key, counts in self._folded.items():
            self._gate._write(conn, key, counts, now)
        return bool(self._folded)
