"""Small builders for scenario rows and commands (plain data, no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from teleops.store.scenarios import ScenarioCommand, ScenarioNote, ScenarioRow

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def row(
    incident_id: int,
    *,
    opened: timedelta = timedelta(0),
    resolved_after: timedelta | None = timedelta(minutes=20),
    host: str | None = "web-1",
    resolved_by: str | None = "alice",
    status: str | None = None,
) -> ScenarioRow:
    created = T0 + opened
    resolved = created + resolved_after if resolved_after is not None else None
    return ScenarioRow(
        id=incident_id,
        source="alertmanager",
        fingerprint="fp",
        name="NginxDown",
        host=host,
        status=status or ("resolved" if resolved else "open"),
        summary="nginx is down",
        created_at=created,
        acknowledged_by="alice",
        resolved_at=resolved,
        resolved_by=resolved_by if resolved else None,
        predecessor_id=None,
    )


def command(
    command_id: int,
    scenario: ScenarioRow,
    argv: str = "systemctl restart nginx",
    *,
    exit_code: int | None = 0,
    after: timedelta = timedelta(minutes=5),
    requester: str = "alice",
    host: str | None = None,
    output: str = "done\n",
) -> ScenarioCommand:
    finished = scenario.created_at + after
    status = "succeeded" if exit_code == 0 else "failed"
    return ScenarioCommand(
        id=command_id,
        incident_id=scenario.id,
        requester=requester,
        host=host or scenario.host or "web-1",
        argv=argv.split(),
        status=status,
        exit_code=exit_code,
        output_tail=output,
        created_at=finished - timedelta(seconds=2),
        finished_at=finished,
    )


def note(scenario: ScenarioRow, text: str, actor: str = "alice") -> ScenarioNote:
    return ScenarioNote(scenario.id, scenario.created_at + timedelta(minutes=1), actor, text)
