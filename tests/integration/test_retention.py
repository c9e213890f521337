"""Retention (issue #17.4): raw alert reports are pruned on a schedule; incidents, the commands run for them (so
a scenario's "last time" block) and the audit chain stay whole. Real ingest over HTTP, SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from sqlalchemy import func, select

from teleops.config import Settings
from teleops.domain.command import CommandStatus, Finish
from teleops.domain.duration import Duration
from teleops.memory.service import ScenarioMemory
from teleops.server.retention import RetentionSchedule
from teleops.store.audit import iter_events
from teleops.store.audit_checkpoints import CheckpointLog
from teleops.store.audit_verify import verify_audit
from teleops.store.commands import create_command, finish_command
from teleops.store.schema import alerts, incidents
from tests.conftest import Api, FakeClock


async def post(api: Api, summary: str, status: str = "firing") -> None:
    body = {"summary": summary, "host": "web-1", "check": "DiskFull", "severity": "critical", "status": status}
    response = await api.client.post("/api/v1/alerts/generic", json=body, headers=api.ingest_headers)
    assert response.status_code == 200, response.text


async def reports(api: Api) -> dict[int, list[int]]:
    def read(conn: object) -> dict[int, list[int]]:
        found: dict[int, list[int]] = {}
        for incident_id, alert_id in conn.execute(select(alerts.c.incident_id, alerts.c.id).order_by(alerts.c.id)):  # type: ignore[attr-defined]
            found.setdefault(incident_id, []).append(alert_id)
        return found

    return await api.services.db.run_in_transaction(read)


async def test_old_reports_are_pruned_but_first_last_incidents_commands_and_memory_stay(
    api: Api, clock: FakeClock, settings: Settings
) -> None:
    db = api.services.db
    for number in range(6):  # six reports of one problem: each summary differs, so each is a real change
        await post(api, f"Disk / is {90 + number}% full")
        clock.advance(minutes=1)
    await post(api, "Disk / is 96% full", status="resolved")
    before = await reports(api)
    [(first_incident, first_reports)] = before.items()
    assert len(first_reports) >= 5, before
    command = await create_command(
        db, requester="alice", host="web-1", agent_name="web-1", argv=["df", "-h"], timeout_s=30, now=clock(),
        incident_id=first_incident,
    )  # fmt: skip
    await finish_command(db, command.id, Finish(CommandStatus.SUCCEEDED, exit_code=0, output="/ 96%\n"), now=clock())

    clock.advance(days=20)  # past retention.raw_alerts (14d), inside memory.lookback (30d)
    await post(api, "Disk / is 97% full")  # the problem is back: a second incident, "last time" is the first
    second_incident = max((await reports(api)).keys())
    memory = ScenarioMemory(db, clock=clock)  # default windows: lookback 30 days
    last_time = await memory.history(second_incident)
    assert last_time is not None
    assert last_time["last"] is not None
    assert "df -h" in str(last_time)

    schedule = RetentionSchedule(db, settings, clock=clock)
    deleted = await schedule.once()
    after = await reports(api)
    assert deleted == len(first_reports) - 2
    assert after[first_incident] == [first_reports[0], first_reports[-1]]  # how it started and how it ended
    assert after[second_incident] == before.get(second_incident, after[second_incident])  # open: untouched
    assert await memory.history(second_incident) == last_time  # the "last time" block is intact

    def counted(conn: object) -> int:
        return int(conn.execute(select(func.count()).select_from(incidents)).scalar_one())  # type: ignore[attr-defined]

    assert await db.run_in_transaction(counted) == 2  # incidents are never deleted
    assert await schedule.once() == 0  # nothing more to do

    events = await db.run_in_transaction(lambda conn: list(iter_events(conn)))
    pruned = [e for e in events if e.action == "retention.pruned"]
    assert len(pruned) == 1
    assert pruned[0].data["alerts_deleted"] == deleted
    checkpoints = CheckpointLog(settings.data_dir)
    await checkpoints.checkpoint(db)
    finding = await verify_audit(db, checkpoints)
    assert finding.ok, finding.message


async def test_recent_reports_of_resolved_incidents_are_kept(api: Api, clock: FakeClock, settings: Settings) -> None:
    for number in range(4):
        await post(api, f"load {number}")
    await post(api, "load 4", status="resolved")
    before = await reports(api)
    clock.advance(days=13)  # inside retention.raw_alerts
    assert await RetentionSchedule(api.services.db, settings, clock=clock).once() == 0
    assert await reports(api) == before


def test_the_cli_prunes_and_says_what_it_kept(tmp_path: Path) -> None:
    config = tmp_path / "teleops.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), "retention": {"raw_alerts": "1s"}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEOPS_")}
    done = subprocess.run(
        [sys.executable, "-m", "teleops", "db", "prune", "--config", str(config)],
        capture_output=True, text=True, timeout=120, check=False, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "deleted 0 raw alert reports received before" in done.stdout
    assert "each keeps its first and last report" in done.stdout


def test_retention_durations_are_checked() -> None:
    with pytest.raises(ValidationError, match="must be a positive duration"):
        Settings.model_validate({"retention": {"raw_alerts": "0s"}})
    assert Settings().retention.raw_alerts == Duration("14d")
