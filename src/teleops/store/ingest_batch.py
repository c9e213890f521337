"""One ingest batch applied on one connection: alerts in, incidents opened, counted, resolved; what changed out.

`IngestWriter` (store/ingest.py) runs a `BatchApplier` per batch inside the group commit.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ARRAY, Select, String, bindparam, func, insert, select, true, update
from sqlalchemy.engine import Connection

from teleops.domain.alert import Alert, AlertStatus
from teleops.domain.incident import IncidentStatus, TimelineKind
from teleops.store.schema import alerts, incidents, timeline

__all__ = ["AlertOutcome", "BatchApplier", "IncidentChange", "Outcome", "alert_digest", "new_incident_row"]


class Outcome(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    DUPLICATE = "duplicate"
    RESOLVED = "resolved"
    ACKNOWLEDGED = "acknowledged"
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class AlertOutcome:
    outcome: Outcome
    incident_id: int | None


@dataclass(frozen=True, slots=True)
class IncidentChange:
    """A real change to an incident, handed to hooks inside the same transaction (e.g. the outbox)."""

    incident_id: int
    outcome: Outcome
    alert: Alert
    predecessor_id: int | None = None


def alert_digest(alert: Alert) -> str:
    """What makes a delivery a *real change*: status, name, severity, host, summary, labels, start.

    Descriptions and annotations are left out on purpose: senders template live values into them
    (`$value`), and a new number is not a new event on the timeline.
    """
    material = json.dumps(
        [
            alert.status.value,
            alert.name,
            alert.severity.value,
            alert.host,
            alert.summary,
            sorted(alert.labels.items()),
            alert.starts_at.isoformat() if alert.starts_at else None,
        ],
        separators=(",", ":"),
    )
    return hashlib.sha256(material.encode()).hexdigest()


# The hot statements are built once: constructing a Core statement per alert (argument coercion, cache
# key) cost more than executing it (py-spy profile of B2 in docs/benchmarks.md).
# New incidents of a batch go in as one multi-row INSERT; their ids come back in parameter order.
_OPEN_MANY = insert(incidents).returning(incidents.c.id, sort_by_parameter_order=True)
_TOUCH = (
    update(incidents)
    .where(incidents.c.id == bindparam("incident_id"))
    .values(count=incidents.c.count + bindparam("n"), last_seen_at=bindparam("seen_at"))
)


@dataclass(slots=True)
class _Latest:
    """The newest incident of one (source, fingerprint) as this batch left it so far."""

    id: int
    status: str
    digest: str
    starts_at: datetime | None
    resolved_at: datetime | None


# One query per batch finds the newest incident of every fingerprint in it (by ix_incidents_source_fingerprint_id):
# one round trip on PostgreSQL instead of one per alert.
_PREFETCH_CHUNK = 500  # fingerprints per query, well under SQLite's bound-parameter limit


_PREFETCH_COLUMNS = (
    incidents.c.id,
    incidents.c.source,
    incidents.c.fingerprint,
    incidents.c.status,
    incidents.c.digest,
    incidents.c.starts_at,
    incidents.c.resolved_at,
)

# SQLite: `source = ? AND fingerprint IN (…)` is an index SEARCH per key; a row-value
# `(source, fingerprint) IN (VALUES …)` was planned as a SCAN of the whole index (EXPLAIN QUERY PLAN).
_NEWEST_PER_FINGERPRINT = (
    select(func.max(incidents.c.id))
    .where(
        incidents.c.source == bindparam("source"),
        incidents.c.fingerprint.in_(bindparam("fingerprints", expanding=True)),
    )
    .group_by(incidents.c.fingerprint)
)
_PREFETCH_SQLITE = select(*_PREFETCH_COLUMNS).where(incidents.c.id.in_(_NEWEST_PER_FINGERPRINT.scalar_subquery()))


def _prefetch_postgresql() -> Select[Any]:
    """PostgreSQL: one backward probe of ix_incidents_source_fingerprint_id per fingerprint (`ORDER BY id DESC
    LIMIT 1` in a LATERAL subquery), whatever the table's statistics say.

    The IN-list form above depends on them: on a table that has grown since autovacuum last analyzed it (a fresh
    install, a restored or copied database, the first minute of a burst), the planner reads every row of the
    source from the index and filters the fingerprints, and each batch costs more than the last (measured: 8,450
    rows read for 10 fingerprints at 11k incidents, ingest 1,400 → 770 alerts/s within 20 s).
    """
    fingerprints = func.unnest(bindparam("fingerprints", type_=ARRAY(String)))
    wanted = fingerprints.table_valued("fingerprint").render_derived(name="wanted")
    newest = (
        select(*_PREFETCH_COLUMNS)
        .where(incidents.c.source == bindparam("source"), incidents.c.fingerprint == wanted.c.fingerprint)
        .order_by(incidents.c.id.desc())
        .limit(1)
        .lateral("newest")
    )
    return select(*newest.c).select_from(wanted).join(newest, true())


_PREFETCH_POSTGRESQL = _prefetch_postgresql()
_INSERT_ALERTS = insert(alerts)
_INSERT_EVENTS = insert(timeline)


def new_incident_row(alert: Alert, *, digest: str, now: datetime, predecessor_id: int | None) -> dict[str, Any]:
    """The `incidents` row an alert opens (bench/prefill.py writes the same rows in bulk)."""
    return {
        "source": alert.source,
        "fingerprint": alert.fingerprint,
        "status": IncidentStatus.OPEN.value,
        "name": alert.name,
        "severity": alert.severity.value,
        "host": alert.host,
        "summary": alert.summary,
        "description": alert.description,
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "url": alert.url,
        "count": 1,
        "digest": digest,
        "starts_at": alert.starts_at,
        "created_at": now,
        "last_seen_at": now,
        "predecessor_id": predecessor_id,
    }


class BatchApplier:
    """Applies one batch on one connection.

    The newest incident of each fingerprint is read once per batch (`prefetch`) and then kept up to date
    in memory as the batch changes it; repeated deliveries of an open incident only count, and their
    "touch" updates are folded into one statement per incident at `flush`, with the history rows
    (executemany). The duplicate path thus costs no SQL per alert.

    New incidents get a provisional negative id and are inserted together (one multi-row INSERT … RETURNING)
    at `flush`, or earlier when a later alert of the batch must update one of them by id; `real_id` maps a
    provisional id to the stored one, and `flush` rewrites every row and change that carries one.
    """

    def __init__(self, conn: Connection, now: datetime) -> None:
        self.conn = conn
        self.now = now
        self.changes: list[IncidentChange] = []
        self._alert_rows: list[dict[str, Any]] = []
        self._event_rows: list[dict[str, Any]] = []
        self._latest: dict[tuple[str, str], _Latest | None] = {}
        self._touches: dict[int, int] = {}
        self._new: list[dict[str, Any]] = []  # incident rows not inserted yet, with their provisional ids
        self._new_latest: list[_Latest] = []
        self._real: dict[int, int] = {}  # provisional id -> stored id
        self._prefetch = _PREFETCH_POSTGRESQL if conn.dialect.name == "postgresql" else _PREFETCH_SQLITE

    def prefetch(self, keys: set[tuple[str, str]]) -> None:
        by_source: dict[str, list[str]] = {}
        for source, fingerprint in sorted(keys):
            self._latest[(source, fingerprint)] = None
            by_source.setdefault(source, []).append(fingerprint)
        for source, fingerprints in by_source.items():
            for start in range(0, len(fingerprints), _PREFETCH_CHUNK):
                chunk = fingerprints[start : start + _PREFETCH_CHUNK]
                for row in self.conn.execute(self._prefetch, {"source": source, "fingerprints": chunk}):
                    self._latest[(row.source, row.fingerprint)] = _Latest(
                        row.id, row.status, row.digest, row.starts_at, row.resolved_at
                    )

    def apply(self, alert: Alert) -> AlertOutcome:
        # The newest incident of this fingerprint is the open one if any is open (a new one is only ever
        # opened when none is), else the predecessor of the one we may open: one indexed lookup serves both.
        key = (alert.source, alert.fingerprint)
        if key not in self._latest:
            self.prefetch({key})
        latest = self._latest[key]
        is_open = latest is not None and latest.resolved_at is None
        if alert.status is AlertStatus.FIRING:
            if latest is None or not is_open:
                if latest is not None and alert.starts_at is not None and latest.starts_at == alert.starts_at:
                    # A late copy of an occurrence that already resolved (e.g. the second peer of an HA pair).
                    return AlertOutcome(Outcome.DUPLICATE, latest.id)
                return self._open(alert, latest.id if latest is not None else None)
            assert latest is not None
            return self._update(alert, latest)
        if latest is None or not is_open:
            return AlertOutcome(Outcome.IGNORED, None)
        if alert.status is AlertStatus.RESOLVED:
            return self._resolve(alert, latest)
        return self._acknowledge(alert, latest)

    def flush(self) -> None:
        """Write what the batch deferred: new incidents, touch counts, history rows; ids become stored ids."""
        self._insert_new()
        if self._real:
            real = self.real_id
            for row in self._alert_rows:
                row["incident_id"] = real(row["incident_id"])
            for row in self._event_rows:
                row["incident_id"] = real(row["incident_id"])
            self._touches = {real(i): n for i, n in self._touches.items()}
            self.changes = [dataclasses.replace(c, incident_id=real(c.incident_id)) for c in self.changes]
        if self._touches:
            self.conn.execute(
                _TOUCH, [{"incident_id": i, "n": n, "seen_at": self.now} for i, n in self._touches.items()]
            )
        if self._alert_rows:
            self.conn.execute(_INSERT_ALERTS, self._alert_rows)
        if self._event_rows:
            self.conn.execute(_INSERT_EVENTS, self._event_rows)

    def real_id(self, incident_id: int) -> int:
        """The stored id of `incident_id` (itself unless it is a provisional id of this batch)."""
        return self._real.get(incident_id, incident_id)

    def outcome(self, outcome: AlertOutcome) -> AlertOutcome:
        """`outcome` with its stored incident id (call after `flush`)."""
        if outcome.incident_id is None or outcome.incident_id >= 0:
            return outcome
        return AlertOutcome(outcome.outcome, self.real_id(outcome.incident_id))

    def _insert_new(self) -> None:
        """Insert the incidents opened so far in one statement and learn their ids."""
        if not self._new:
            return
        rows, self._new = self._new, []
        opened, self._new_latest = self._new_latest, []
        ids = [row[0] for row in self.conn.execute(_OPEN_MANY, rows)]
        for latest, stored in zip(opened, ids, strict=True):
            self._real[latest.id] = stored
            latest.id = stored

    def _stored(self, latest: _Latest) -> int:
        """The id of `latest` in the database, inserting the batch's new incidents first if it is one."""
        if latest.id < 0:
            self._insert_new()
        return latest.id

    def _open(self, alert: Alert, predecessor_id: int | None) -> AlertOutcome:
        digest = alert_digest(alert)
        incident_id = -(len(self._real) + len(self._new) + 1)
        self._new.append(new_incident_row(alert, digest=digest, now=self.now, predecessor_id=predecessor_id))
        data: dict[str, Any] = {"summary": alert.summary, "severity": alert.severity.value, "host": alert.host}
        if predecessor_id is not None:
            data["predecessor_id"] = predecessor_id
        self._record(incident_id, alert, TimelineKind.ALERT_FIRED, data)
        latest = _Latest(incident_id, IncidentStatus.OPEN.value, digest, alert.starts_at, None)
        self._latest[(alert.source, alert.fingerprint)] = latest
        self._new_latest.append(latest)
        self.changes.append(IncidentChange(incident_id, Outcome.CREATED, alert, predecessor_id))
        return AlertOutcome(Outcome.CREATED, incident_id)

    def _update(self, alert: Alert, latest: _Latest) -> AlertOutcome:
        incident_id = latest.id
        digest = alert_digest(alert)
        if digest == latest.digest:
            self._touches[incident_id] = self._touches.get(incident_id, 0) + 1
            return AlertOutcome(Outcome.DUPLICATE, incident_id)
        latest.digest = digest
        incident_id = self._stored(latest)
        query = update(incidents).where(incidents.c.id == incident_id)
        self.conn.execute(
            query.values(
                count=incidents.c.count + 1,
                last_seen_at=self.now,
                digest=digest,
                severity=alert.severity.value,
                summary=alert.summary,
                description=alert.description,
                labels=dict(alert.labels),
                annotations=dict(alert.annotations),
                host=alert.host,
                url=alert.url,
            )
        )
        data = {"summary": alert.summary, "severity": alert.severity.value}
        self._record(incident_id, alert, TimelineKind.ALERT_UPDATED, data)
        self.changes.append(IncidentChange(incident_id, Outcome.UPDATED, alert))
        return AlertOutcome(Outcome.UPDATED, incident_id)

    def _resolve(self, alert: Alert, latest: _Latest) -> AlertOutcome:
        incident_id = self._stored(latest)
        latest.status = IncidentStatus.RESOLVED.value
        latest.resolved_at = self.now
        self.conn.execute(
            update(incidents)
            .where(incidents.c.id == incident_id)
            .values(
                status=IncidentStatus.RESOLVED.value,
                resolved_at=self.now,
                resolved_by=f"source:{alert.source}",
                last_seen_at=self.now,
                snoozed_until=None,
            )
        )
        ends_at = alert.ends_at.isoformat() if alert.ends_at else None
        self._record(incident_id, alert, TimelineKind.ALERT_RESOLVED, {"ends_at": ends_at})
        self.changes.append(IncidentChange(incident_id, Outcome.RESOLVED, alert))
        return AlertOutcome(Outcome.RESOLVED, incident_id)

    def _acknowledge(self, alert: Alert, latest: _Latest) -> AlertOutcome:
        """A sender's own acknowledge (PagerDuty Events v2); only an open incident changes."""
        incident_id = latest.id
        if IncidentStatus(latest.status) is not IncidentStatus.OPEN:
            return AlertOutcome(Outcome.DUPLICATE, incident_id)
        latest.status = IncidentStatus.ACKNOWLEDGED.value
        incident_id = self._stored(latest)
        actor = f"source:{alert.source}"
        self.conn.execute(
            update(incidents)
            .where(incidents.c.id == incident_id)
            .values(status=IncidentStatus.ACKNOWLEDGED.value, acknowledged_at=self.now, acknowledged_by=actor)
        )
        self._event_rows.append(
            {
                "incident_id": incident_id,
                "at": self.now,
                "kind": TimelineKind.ACKNOWLEDGED.value,
                "actor": actor,
                "data": {},
            }
        )
        self.changes.append(IncidentChange(incident_id, Outcome.ACKNOWLEDGED, alert))
        return AlertOutcome(Outcome.ACKNOWLEDGED, incident_id)

    def _record(self, incident_id: int, alert: Alert, kind: TimelineKind, data: dict[str, Any]) -> None:
        """The alert occurrence and its timeline event, written at flush."""
        self._alert_rows.append(
            {
                "incident_id": incident_id,
                "status": alert.status.value,
                "received_at": self.now,
                "alert": alert.to_json(),
            }
        )
        self._event_rows.append(
            {
                "incident_id": incident_id,
                "at": self.now,
                "kind": kind.value,
                "actor": f"source:{alert.source}",
                "data": data,
            }
        )
