"""Which parts of an incident's announcement quote earlier commands (Message.quotes), and the announcement as a
reader who may not read some of them gets it in the web console: those lines say "[command not shown to you]"
(the wording of `/history` and the incident page), their Run-again buttons are gone, the rest is unchanged; and
a message too long for the platform is withheld before it is trimmed, so no cut line can leak a command."""

from __future__ import annotations

from datetime import timedelta

from teleops.chat.console.gateway import CONSOLE_CAPABILITIES
from teleops.chat.notify import incident_message
from teleops.chat.render import render
from teleops.domain.message import Button, Extra, Message, Quote
from teleops.memory.last_time import WITHHELD_COMMAND, last_time_lines, last_time_quotes
from teleops.memory.recurrence import MemoryWindows, Recurrence, Scenario, Tier
from tests.unit.memory.scenario_builders import command, row


def _recurrence() -> Recurrence:
    """#5 was fixed by alice's restart; #7 (the last time) failed bob's status check and was resolved by hand."""
    fixed = row(5, resolved_after=timedelta(minutes=30))
    fix = command(50, fixed, "systemctl restart nginx", after=timedelta(minutes=10), output="restarted")
    last = row(7, opened=timedelta(days=1), resolved_after=timedelta(minutes=14))
    check = command(70, last, "systemctl status nginx", exit_code=3, requester="bob", output="inactive")
    incident = row(9, opened=timedelta(days=2), resolved_after=None)
    scenarios = (
        Scenario(fixed, Tier.SAME_FINGERPRINT, (fix,), (), None),
        Scenario(last, Tier.SAME_FINGERPRINT, (check,), (), None),
    )
    return Recurrence(incident, scenarios, 3, False, MemoryWindows())


def test_each_quoted_line_is_a_line_of_the_block_and_its_withheld_form_is_the_history_wording() -> None:
    rec = _recurrence()
    lines = last_time_lines(rec, now=rec.incident.created_at)
    quotes = last_time_quotes(rec)
    assert [q.commands for q in quotes] == [(70,), (50,)]
    assert all(q.line in lines for q in quotes)
    # For a reader who may read none of them, each line is what `/history` shows that reader.
    withheld = last_time_lines(rec, now=rec.incident.created_at, withheld={50: "no", 70: "no"})
    assert [q.withheld for q in quotes] == [line for line in withheld if line not in lines]
    assert quotes[0].withheld == f"✘ bob: {WITHHELD_COMMAND} on web-1 → exit 3"
    assert quotes[1].withheld == f"What fixed it on #5: {WITHHELD_COMMAND}."


def _announcement() -> Message:
    rec = _recurrence()
    extra = Extra(
        lines=tuple(last_time_lines(rec, now=rec.incident.created_at)),
        buttons=(Button("↻ systemctl restart nginx", "again:9:50"),),
        quotes=(*last_time_quotes(rec), Quote((50,), button="again:9:50")),
    )
    incident = {"id": 9, "name": "NginxDown", "host": "web-1", "summary": "nginx is down", "severity": "critical"}
    return incident_message(incident, extra=extra)


def test_the_quotes_survive_the_outbox_json() -> None:
    message = _announcement()
    assert Message.from_json(message.to_json()) == message
    assert "quotes" not in Message(body="plain").to_json()  # rows of messages that quote nothing are unchanged


def test_a_reader_who_may_not_read_a_command_gets_its_line_withheld_and_its_run_again_button_removed() -> None:
    message = _announcement()
    shown = message.withholding({50})
    assert "systemctl restart nginx" not in shown.body
    assert f"What fixed it on #5: {WITHHELD_COMMAND}." in shown.body
    assert "✘ bob: systemctl status nginx → exit 3 · inactive" in shown.body  # a command they may read stays
    assert [b.data for b in shown.buttons] == ["ack:9", "resolve:9", "snooze:9:1h"]
    everything = message.withholding({50, 70})
    assert "systemctl" not in everything.body
    assert message.withholding({12345}) is message  # quotes nothing they may not read: unchanged


def test_rooms_get_the_message_whole_and_the_console_gets_its_source_to_withhold_per_reader() -> None:
    message = _announcement()
    rendered = render(message, CONSOLE_CAPABILITIES)
    assert "systemctl restart nginx" in rendered.plain
    assert rendered.source == message
    assert render(Message(body="no quotes"), CONSOLE_CAPABILITIES).source is None


def test_a_trimmed_message_is_withheld_before_it_is_cut() -> None:
    line = "✔ alice: echo " + "secretish" * 40 + " → exit 0"
    withheld = f"✔ alice: {WITHHELD_COMMAND} on web-1 → exit 0"
    summary = "x" * (CONSOLE_CAPABILITIES.max_message_length - 300)  # so long that the body is cut inside `line`
    message = Message(title="DiskFull", body=f"{summary}\n{line}", quotes=(Quote((50,), line, withheld),))
    whole = render(message, CONSOLE_CAPABILITIES).plain
    assert "✔ alice: echo secretish" in whole
    assert line not in whole  # cut mid-line: replacing whole lines in the rendered text would miss this one
    shown = render(message.withholding({50}), CONSOLE_CAPABILITIES).plain
    assert "secretish" not in shown
    assert withheld in shown
