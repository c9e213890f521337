"""Response bodies of the REST API (they make /openapi.json exact)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, Field

from teleops.domain.incident import IncidentRecord

__all__ = [
    "MAX_ROW_ID",
    "IncidentDetail",
    "IncidentList",
    "IncidentOut",
    "RowId",
    "RowIdField",
    "SnoozeRequest",
    "TimelineEventOut",
]


# Ids are 64-bit in both databases: a larger number in a URL is a 422, never a driver overflow (500).
MAX_ROW_ID = 2**63 - 1
RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
# The same bound for an id inside a request body (e.g. `incident_id` of POST /api/v1/commands).
RowIdField = Annotated[int, Field(ge=1, le=MAX_ROW_ID)]


class TimelineEventOut(BaseModel):
    id: int
    at: datetime
    kind: str
    actor: str | None
    data: dict[str, Any]


class IncidentOut(BaseModel):
    id: int
    source: str
    fingerprint: str
    status: str
    name: str
    severity: str
    host: str | None
    summary: str
    description: str
    labels: dict[str, str]
    annotations: dict[str, str]
    url: str | None
    count: int
    starts_at: datetime | None
    created_at: datetime
    last_seen_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    snoozed_until: datetime | None
    resolved_at: datetime | None
    resolved_by: str | None
    predecessor_id: int | None

    @classmethod
    def of(cls, record: IncidentRecord) -> IncidentOut:
        return cls.model_validate(_fields(record, cls))


class IncidentDetail(IncidentOut):
    timeline: list[TimelineEventOut]

    @classmethod
    def of(cls, record: IncidentRecord) -> IncidentDetail:
        values = _fields(record, IncidentOut)
        values["timeline"] = [TimelineEventOut.model_validate(e, from_attributes=True) for e in record.timeline]
        return cls.model_validate(values)


class IncidentList(BaseModel):
    items: list[IncidentOut]
    next_before: int | None = Field(None, description="Pass as `before` to get the next (older) page.")


class SnoozeRequest(BaseModel):
    duration: str = Field("1h", description="How long, e.g. 30m, 2h, 1d.", examples=["30m"])


def _fields(record: IncidentRecord, model: type[BaseModel]) -> dict[str, Any]:
    return {name: getattr(record, name) for name in model.model_fields if name != "timeline"}
