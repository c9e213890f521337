"""The incident list's filters as a person writes them in the URL, checked, and turned into a store query.

`/ui/?status=unresolved&severity=critical&host=web-*&rotation=primary&q=disk` — every filter is a plain GET
parameter, so a filtered list is a bookmarkable link. Rotations are not stored on incidents: an incident records
the team it escalates to (the `escalations` row written at ingest from `oncall.routes`, oncall/worker.py), and a
rotation filter lists the incidents of every team whose escalation policy pages that rotation.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields, replace
from urllib.parse import urlencode

from teleops.domain.alert import Severity
from teleops.domain.incident import IncidentStatus
from teleops.oncall.escalation import Step
from teleops.sources.registry import SOURCES
from teleops.store.incident_list import IncidentQuery
from teleops.store.search import query_words

__all__ = [
    "SEVERITIES",
    "SOURCE_NAMES",
    "STATUS_CHOICES",
    "UNRESOLVED",
    "ListFilters",
    "teams_paging",
]

UNRESOLVED = "unresolved"
# What the status filter offers, in order: "" is every status; "unresolved" is all but resolved.
STATUS_CHOICES: tuple[str, ...] = ("", UNRESOLVED, *(s.value for s in IncidentStatus))
SEVERITIES: tuple[str, ...] = tuple(s.value for s in Severity)
SOURCE_NAMES: tuple[str, ...] = tuple(s.name for s in SOURCES)
_MAX_LENGTH = {"status": 32, "severity": 32, "source": 32, "host": 255, "rotation": 64, "q": 200}


def teams_paging(rotation: str, policies: Mapping[str, tuple[tuple[Step, ...], int]]) -> tuple[str, ...]:
    """The teams whose escalation policy has a step `rotation:NAME` (oncall/directory.py `policies`), sorted."""
    target = f"rotation:{rotation}"
    return tuple(sorted(team for team, (steps, _repeat) in policies.items() if any(s.notify == target for s in steps)))


@dataclass(frozen=True, slots=True)
class ListFilters:
    """The filters of one list view; "" means "any"."""

    status: str = ""
    severity: str = ""
    source: str = ""
    host: str = ""
    rotation: str = ""
    q: str = ""

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> ListFilters:
        """From query parameters; unknown parameters are ignored, values are stripped (checked by `problems`)."""
        return cls(**{f.name: str(params.get(f.name, "")).strip() for f in fields(cls)})

    def problems(self, rotations: Collection[str]) -> list[str]:
        """What is wrong with these filters, each with what to do; [] when the list can be shown."""
        found = [
            f"The {name} filter is longer than {limit} characters; shorten it."
            for name, limit in _MAX_LENGTH.items()
            if len(getattr(self, name)) > limit
        ]
        if found:
            return found
        if self.status not in STATUS_CHOICES:
            found.append(f"There is no status {self.status!r}; choose one of: {', '.join(STATUS_CHOICES[1:])}.")
        if self.severity and self.severity not in SEVERITIES:
            found.append(f"There is no severity {self.severity!r}; choose one of: {', '.join(SEVERITIES)}.")
        if self.source and self.source not in SOURCE_NAMES:
            found.append(f"There is no alert source {self.source!r}; choose one of: {', '.join(SOURCE_NAMES)}.")
        if self.rotation and self.rotation not in rotations:
            known = f"the rotations are: {', '.join(sorted(rotations))}" if rotations else "none is configured"
            found.append(f"There is no rotation {self.rotation!r} ({known}, under oncall.rotations).")
        if self.q and not query_words(self.q):
            found.append(
                f"The search {self.q!r} has no letters or digits to look for; "
                "type a word from the alert, its host or a note."
            )
        return found

    @property
    def active(self) -> bool:
        """Whether any filter is set."""
        return any(getattr(self, f.name) for f in fields(self))

    def query_string(self, **changes: str) -> str:
        """These filters (with `changes`) as a URL query, empty filters left out; "" when none is set."""
        values = replace(self, **changes)
        return urlencode([(f.name, getattr(values, f.name)) for f in fields(values) if getattr(values, f.name)])

    def link(self, **changes: str) -> str:
        """The list page with these filters (and `changes`)."""
        query = self.query_string(**changes)
        return f"/ui/?{query}" if query else "/ui/"

    def store_query(
        self, *, policies: Mapping[str, tuple[tuple[Step, ...], int]], search_commands: bool, limit: int
    ) -> IncidentQuery:
        """The store query for checked filters (`problems` returned [])."""
        statuses: tuple[IncidentStatus, ...]
        if self.status == UNRESOLVED:
            statuses = tuple(s for s in IncidentStatus if s is not IncidentStatus.RESOLVED)
        else:
            statuses = (IncidentStatus(self.status),) if self.status else ()
        return IncidentQuery(
            statuses=statuses,
            severity=self.severity,
            source=self.source,
            host=self.host,
            teams=teams_paging(self.rotation, policies) if self.rotation else None,
            text=self.q,
            search_commands=search_commands,
            limit=limit,
        )
