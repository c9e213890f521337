"""The Markdown export escapes what alerts and output put in it; learned runbooks load and stay literal."""

from __future__ import annotations

from datetime import timedelta

import yaml

from teleops.domain.incident import IncidentRecord, TimelineEvent
from teleops.memory.export import incident_markdown
from teleops.memory.learned_runbooks import propose_runbook
from teleops.memory.recurrence import Scenario, Tier
from teleops.memory.run_again import button_data, parse_button
from teleops.memory.runbooks import parse_runbook
from tests.unit.memory.scenario_builders import T0, command, row


def _incident(summary: str, events: tuple[TimelineEvent, ...]) -> IncidentRecord:
    return IncidentRecord(
        id=3, source="generic", fingerprint="fp", status="resolved", name="Disk|Full", severity="critical",
        host="web-1", summary=summary, description="", labels={}, annotations={}, url=None, count=2,
        starts_at=T0, created_at=T0, last_seen_at=T0, acknowledged_at=None, acknowledged_by=None,
        snoozed_until=None, resolved_at=T0 + timedelta(minutes=9), resolved_by="alice", predecessor_id=1,
        timeline=events,
    )  # fmt: skip


def test_export_escapes_table_cells_and_fences_output() -> None:
    note = TimelineEvent(1, T0, "note", "alice", {"text": "a | b\nc <script>"})
    ran = TimelineEvent(
        2,
        T0,
        "command.finished",
        "alice",
        {"argv": ["df", "-h"], "host": "web-1", "status": "succeeded", "exit_code": 0},
    )
    scenario = row(3)
    output = "```\n# not a heading\n| not | a | table |"
    text = incident_markdown(_incident("97% | full", (note, ran)), [command(9, scenario, "df -h", output=output)])
    assert text.startswith("# #3 Disk\\|Full on web-1\n")
    assert "| 2026-11-01 09:00:00 | alice | Note: a \\| b c &lt;script> |" in text
    assert "| alice | Command finished: `df -h` on web-1 → succeeded, exit 0 |" in text
    assert "````\n```\n# not a heading\n| not | a | table |\n````" in text  # a longer fence than any inside
    assert "- **Time to resolve:** 9m" in text
    assert "- **Previous occurrence:** #1" in text


def test_proposal_is_a_loadable_runbook_with_literal_fixes_only() -> None:
    first, second = row(4), row(8, opened=timedelta(days=3))
    scenarios = [
        Scenario(first, Tier.SAME_FINGERPRINT, (command(40, first, "systemctl restart nginx"),)),
        Scenario(
            second,
            Tier.SAME_FINGERPRINT,
            (
                command(80, second, "systemctl restart nginx", requester="bob"),
                command(81, second, "echo {x}", after=timedelta(minutes=6)),  # braces would read as a slot
                command(82, second, "false", exit_code=1, after=timedelta(minutes=7)),
            ),
        ),
    ]
    text, evidence = propose_runbook("NginxDown", scenarios)
    assert text.startswith("# Proposed by `teleops runbook suggest NginxDown`")
    runbook = parse_runbook(yaml.safe_load(text), where="proposal")
    assert [fix.argv for fix in runbook.fixes] == [("systemctl", "restart", "nginx")]
    assert "fixed it 2×: #4, #8; by alice, bob" in runbook.fixes[0].name
    assert runbook.diagnostics == ()
    assert [e.incidents for e in evidence] == [(4, 8)]


def test_run_again_buttons_carry_ids_only_and_parse_strictly() -> None:
    data = button_data(2**40, 2**40, confirm=True)
    assert len(data.encode()) <= 64
    assert parse_button(data) == (True, 2**40, 2**40)
    assert parse_button("again:2:7") == (False, 2, 7)
    assert parse_button(f"again:{2**63}:1") is None  # past 64 bits: no such row
    for forged in ("again:2:7:rm", "again:-2:7", "again:2", "again!:x:7", "ack:2", "again:2:7\n", " again:2:7"):
        assert parse_button(forged) is None, forged
