"""Acknowledge or resolve many incidents at once, each through the same path as its own button.

Every incident goes through `act_on_incident` in its own transaction, as the person, "via web": the timeline,
the chat messages and the escalation see exactly what a single Ack or Resolve would do. What happened to each is
reported back ("Acknowledged 3: #4, #5, #6. Left as they were: 1 already resolved (#7).") through the redirect's
query, as incident ids under fixed keys, never as free text a link could forge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from teleops.domain.incident import IncidentAction, IncidentNotFound, IncidentStatus, InvalidTransition
from teleops.store.database import Database, StorageUnavailable
from teleops.store.incident_events import IncidentEvents
from teleops.store.incidents import act_on_incident

__all__ = [
    "BULK_ACTIONS",
    "MAX_BULK",
    "SELECTION_PROBLEMS",
    "BulkOutcome",
    "act_on_many",
    "describe_problem",
    "selection_problem",
]

MAX_BULK = 200
BULK_ACTIONS: dict[str, IncidentAction] = {"ack": IncidentAction.ACK, "resolve": IncidentAction.RESOLVE}
_DONE = {"ack": "Acknowledged", "resolve": "Resolved"}
_MAX_ID = 2**63 - 1


def _ids(text: str) -> tuple[int, ...]:
    """ "4,5,6" -> (4, 5, 6); anything that is not a positive id is dropped, at most MAX_BULK ids."""
    values = (part.strip() for part in text.split(",")[:MAX_BULK])
    return tuple(int(v) for v in values if v.isdigit() and 0 < int(v) <= _MAX_ID)


def _listed(ids: Sequence[int]) -> str:
    shown = ", ".join(f"#{i}" for i in ids[:20])
    return shown + (f" and {len(ids) - 20} more" if len(ids) > 20 else "")


@dataclass(frozen=True, slots=True)
class BulkOutcome:
    """What one bulk action did to each selected incident."""

    action: str  # a key of BULK_ACTIONS
    changed: tuple[int, ...] = ()
    already: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # status -> ids left as they were
    missing: tuple[int, ...] = ()  # no such incident (any more)
    untried: tuple[int, ...] = ()  # not reached: the database stopped answering

    def summary(self) -> str:
        """One paragraph for the person who pressed the button."""
        parts = [f"{_DONE[self.action]} {len(self.changed)}" + (f": {_listed(self.changed)}." if self.changed else ".")]
        left = [f"{len(ids)} already {status} ({_listed(ids)})" for status, ids in sorted(self.already.items())]
        if left:
            parts.append(f"Left as they were: {', '.join(left)}.")
        if self.missing:
            parts.append(f"{len(self.missing)} not found ({_listed(self.missing)}): reload the list.")
        if self.untried:
            parts.append(
                f"{len(self.untried)} not tried ({_listed(self.untried)}): the database stopped answering; "
                "select them again in a minute."
            )
        return " ".join(parts)

    def to_params(self) -> dict[str, str]:
        """Query parameters that `from_params` reads back."""
        params = {"done": self.action, "changed": ",".join(map(str, self.changed))}
        params.update({f"already_{status}": ",".join(map(str, ids)) for status, ids in self.already.items()})
        if self.missing:
            params["missing"] = ",".join(map(str, self.missing))
        if self.untried:
            params["untried"] = ",".join(map(str, self.untried))
        return params

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> BulkOutcome | None:
        """The outcome a redirect carries, or None when the query has none (or not one this module wrote)."""
        action = params.get("done", "")
        if action not in BULK_ACTIONS:
            return None
        already = {s.value: _ids(params.get(f"already_{s.value}", "")) for s in IncidentStatus}
        return cls(
            action,
            changed=_ids(params.get("changed", "")),
            already={status: ids for status, ids in already.items() if ids},
            missing=_ids(params.get("missing", "")),
            untried=_ids(params.get("untried", "")),
        )


# Why a bulk form was not acted on, by the code its redirect carries (so a link cannot make the page say anything
# else); `{selected}` is how many were ticked.
SELECTION_PROBLEMS: dict[str, str] = {
    "action": "The form asked for an unknown action; reload the page, then press Acknowledge or Resolve selected.",
    "none": "Nothing was selected: tick the incidents to change, then press the button again.",
    "ids": "The selection holds something that is not an incident number; reload the page and select again.",
    "too_many": (
        "{selected} incidents were selected; at most " + str(MAX_BULK) + " can be changed at once. Nothing was "
        "changed: narrow the filters (or select fewer) and try again."
    ),
}


def selection_problem(action: str, raw_ids: Sequence[str]) -> str | None:
    """The SELECTION_PROBLEMS code of why a bulk form cannot be acted on (nothing is changed then), or None."""
    if action not in BULK_ACTIONS:
        return "action"
    if not raw_ids:
        return "none"
    if any(not value.isdigit() or not 0 < int(value) <= _MAX_ID for value in raw_ids):
        return "ids"
    if len(set(raw_ids)) > MAX_BULK:
        return "too_many"
    return None


def describe_problem(code: str, selected: str) -> str | None:
    """The message for a SELECTION_PROBLEMS code from a redirect, or None for a code this module never writes."""
    template = SELECTION_PROBLEMS.get(code)
    if template is None:
        return None
    return template.format(selected=int(selected) if selected.isdigit() and len(selected) < 7 else "Too many")


async def act_on_many(
    db: Database,
    incident_ids: Sequence[int],
    action: str,
    *,
    actor: str,
    now: datetime,
    events: IncidentEvents,
) -> BulkOutcome:
    """Apply `action` to each incident in turn, as `actor` via web. A checked selection (`selection_problem`)."""
    changed: list[int] = []
    already: dict[str, list[int]] = {}
    missing: list[int] = []
    ordered = list(dict.fromkeys(incident_ids))
    for position, incident_id in enumerate(ordered):
        try:
            record, did = await act_on_incident(
                db, incident_id, BULK_ACTIONS[action], actor=actor, now=now, via="web", events=events
            )
        except IncidentNotFound:
            missing.append(incident_id)
            continue
        except InvalidTransition as exc:
            already.setdefault(exc.status.value, []).append(incident_id)
            continue
        except StorageUnavailable:
            untried = tuple(ordered[position:])
            break
        if did:
            changed.append(incident_id)
        else:
            already.setdefault(record.status, []).append(incident_id)
    else:
        untried = ()
    return BulkOutcome(
        action,
        changed=tuple(changed),
        already={status: tuple(ids) for status, ids in already.items()},
        missing=tuple(missing),
        untried=untried,
    )
