"""Step-up by default (issue #18 item 4): a rule that can change a host asks for a second factor unless it says
`require_2fa: false`, which the loader warns about. "Can change a host" is everything outside the read-only table
(teleops.domain.read_only): property tests hold the table and the pattern classification to each other, unit
tests pin the policy decisions, and one test goes end to end through the REST API with a TOTP user."""

from __future__ import annotations

import fnmatch
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest
import yaml
from hypothesis import assume, given
from hypothesis import settings as examples
from hypothesis import strategies as st
from tests.conftest import FakeClock
from tests.fakes.telegram import free_port
from tests.live_controller import LiveController, live_controller
from tests.scenarios.conftest import FIRING, eventually
from tests.settings import settings_with

from teleops.commands.command_line import split_command
from teleops.config import Settings, load_settings
from teleops.config.settings import parse_duration
from teleops.domain.arguments import EXECUTORS
from teleops.domain.patterns import match_argv, parse_pattern
from teleops.domain.policy import DEFAULT_ROLES, Policy, StepUp, compile_policy
from teleops.domain.read_only import (
    READ_ONLY_COMMANDS,
    Arguments,
    argv_is_read_only,
    pattern_is_read_only,
)
from teleops.store.commands import list_commands
from teleops.store.incidents import get_incident
from teleops.store.tokens import TokenKind

# ---------------------------------------------------------------------------------------------------------------
# The read-only table, property-tested.

_PROGRAMS = sorted({entry.words[0] for entry in READ_ONLY_COMMANDS})
_OTHERS = ["rm", "reboot", "apt", "kill", "tee", "sort", "find", "sh", "python3", "/usr/bin/df", "/tmp/df"]
_WORDS = [
    "status",
    "restart",
    "stop",
    "show",
    "nginx",
    "nginx.service",
    "-u",
    "-n",
    "100",
    "-h",
    "-s",
    "--since=today",
    "--vacuum-size=1G",
    "--vac=1G",
    "--rotate",
    "--rot",
    "--cursor-file=/etc/passwd",
    "--flush",
    "/var/log/syslog",
    "/etc/shadow",
    "new-name",
    "--",
    "-C",
]
_PATTERN_TOKENS = [*_WORDS, "*", "*.service", "--vac*", "-*", "/var/log/*", "**", "n?inx"]


@st.composite
def patterns(draw: st.DrawFn) -> tuple[str, ...]:
    # Programs whose read-only-ness depends on their arguments come up most, as that is where mistakes would be.
    tricky = [e.words[0] for e in READ_ONLY_COMMANDS if e.arguments is not Arguments.ANY] + ["systemctl"]
    head = draw(st.one_of(st.sampled_from(tricky), st.sampled_from([*_PROGRAMS, *_OTHERS, "*", "d?"])))
    middle = draw(st.lists(st.sampled_from(_PATTERN_TOKENS), max_size=4))
    return (head, *middle)


@st.composite
def fitting_argv(draw: st.DrawFn, pattern: tuple[str, ...]) -> list[str]:
    """An argv the pattern fits: globs are filled with words from the pool (kept only when the pattern matches)."""
    argv: list[str] = []
    for index, token in enumerate(pattern):
        if token == "*" and index == len(pattern) - 1:
            argv.extend(draw(st.lists(st.sampled_from(_WORDS), max_size=4)))
        elif any(c in token for c in "*?["):
            fits = [w for w in [*_WORDS, *_PROGRAMS, "nginx.service"] if fnmatch.fnmatchcase(w, token)]
            assume(fits)
            argv.append(draw(st.sampled_from(fits)))
        else:
            argv.append(token)
    assume(match_argv(pattern, argv) is not None)
    return argv


@examples(max_examples=1500)
@given(st.data())
def test_a_read_only_pattern_only_ever_matches_read_only_commands(data: st.DataObject) -> None:
    pattern = data.draw(patterns())
    argv = data.draw(fitting_argv(pattern))
    if pattern_is_read_only(pattern):
        assert argv_is_read_only(argv), (pattern, argv)


@pytest.mark.parametrize("entry", READ_ONLY_COMMANDS, ids=[e.text() for e in READ_ONLY_COMMANDS])
def test_every_table_entry_written_as_a_rule_is_read_only(entry: Any) -> None:
    words = " ".join(entry.words)
    written = {Arguments.ANY: f"{words} *", Arguments.NONE: words, Arguments.NAMED: f"{words} -u *.service -n 50"}
    assert pattern_is_read_only(parse_pattern(written[entry.arguments]))
    assert argv_is_read_only([*entry.words])


@pytest.mark.parametrize(
    "entry",
    [e for e in READ_ONLY_COMMANDS if e.arguments is not Arguments.ANY],
    ids=[e.text() for e in READ_ONLY_COMMANDS if e.arguments is not Arguments.ANY],
)
def test_entries_that_write_with_arguments_are_not_read_only_with_a_trailing_wildcard(entry: Any) -> None:
    words = " ".join(entry.words)
    assert not pattern_is_read_only(parse_pattern(f"{words} *"))
    if entry.arguments is Arguments.NONE:
        assert not argv_is_read_only([*entry.words, "anything"])
    for option in entry.writes:
        assert not argv_is_read_only([*entry.words, option])
        assert not argv_is_read_only([*entry.words, f"{option}=x"])
        assert not argv_is_read_only([*entry.words, option[:5]])  # getopt_long takes unambiguous abbreviations


def test_no_read_only_program_can_run_code_from_its_arguments() -> None:
    # A program that runs what its arguments name (teleops.domain.arguments.EXECUTORS) can change anything.
    assert not set(_PROGRAMS) & set(EXECUTORS)


@given(st.sampled_from(_OTHERS), st.lists(st.sampled_from(_WORDS), max_size=3))
def test_programs_outside_the_table_and_paths_can_change_the_host(program: str, rest: list[str]) -> None:
    assert not argv_is_read_only([program, *rest])
    assert not pattern_is_read_only((program, *rest))


@given(st.lists(st.sampled_from(_WORDS), max_size=3))
def test_a_glob_naming_the_program_is_never_read_only(rest: list[str]) -> None:
    for head in ("*", "d?", "[d]f", "**"):
        assert not pattern_is_read_only((head, *rest))


def test_examples_people_write() -> None:
    read_only = ["df *", "systemctl status *", "journalctl -u *.service", "tail -n * /var/log/*", "date", "ps aux"]
    changing = ["*", "systemctl *", "systemctl restart *", "journalctl *", "journalctl -u *", "date *",
                "hostname *", "dmesg *", "journalctl --vacuum-size=1G", "sort *", "find *"]  # fmt: skip
    assert all(pattern_is_read_only(parse_pattern(p)) for p in read_only)
    assert not any(pattern_is_read_only(parse_pattern(p)) for p in changing)


# ---------------------------------------------------------------------------------------------------------------
# The policy defaults.


def policy(roles: dict[str, Any]) -> Policy:
    return compile_policy(roles, parse_duration=parse_duration)


def needs_code(p: Policy, role: str, command: str, host: str = "web-1") -> bool:
    decision = p.decide(user="u", role=role, host=host, argv=split_command(command), text=command)
    assert decision.allowed, decision.reason
    return decision.require_2fa


def test_the_default_admin_rule_asks_a_code_before_a_change_but_not_before_a_look() -> None:
    default = compile_policy(None, parse_duration=parse_duration)
    assert [r.step_up for r in default.roles["admin"]] == [StepUp.ON_CHANGE]
    assert needs_code(default, "admin", "systemctl restart nginx")
    assert needs_code(default, "admin", "rm -rf /var/cache/app")
    assert needs_code(default, "admin", "hostname new-name")
    decision = default.decide(user="ada", role="admin", host="web-1", argv=["apt", "upgrade"])
    assert "step-up by default" in decision.reason
    assert not needs_code(default, "admin", "uptime")
    assert not needs_code(default, "admin", "systemctl status nginx")


def test_the_default_operator_rule_is_read_only_and_asks_nothing() -> None:
    default = compile_policy(None, parse_duration=parse_duration)
    [rule] = default.roles["operator"]
    assert rule.read_only
    assert rule.step_up is StepUp.NEVER
    for command in DEFAULT_ROLES["operator"][0]["commands"]:
        argv = [word for word in split_command(command) if word != "*"]
        assert not needs_code(default, "operator", " ".join(argv))
    assert default.unguarded() == ()


def test_an_admin_star_rule_without_require_2fa_asks_for_a_code() -> None:
    p = policy({"admin": [{"hosts": ["*"], "commands": ["*"]}]})
    assert needs_code(p, "admin", "systemctl restart nginx")
    assert p.unguarded() == ()


def test_explicit_require_2fa_keeps_its_meaning() -> None:
    p = policy(
        {
            "admin": [{"hosts": ["*"], "commands": ["*"], "require_2fa": False}],
            "cautious": [{"hosts": ["*"], "commands": ["uptime"], "require_2fa": True}],
        }
    )
    assert not needs_code(p, "admin", "systemctl restart nginx")
    assert needs_code(p, "cautious", "uptime")  # a read-only rule may still ask, when it says so
    assert [r.describe() for r in p.unguarded()] == ["admin rule 1: hosts [*] commands [*]"]


def test_a_command_run_through_a_shell_is_never_read_only() -> None:
    p = policy({"admin": [{"hosts": ["*"], "commands": ["*"], "shell": True}]})
    assert [r.read_only for r in p.roles["admin"]] == [False]
    assert needs_code(p, "admin", "df -h; reboot")  # shlex splits it into a df argv: it is still a shell line
    assert needs_code(p, "admin", "sh -c uptime")


def test_a_narrow_rule_cannot_waive_the_code_a_broad_rule_asks_for() -> None:
    # Most restrictive wins (T09): a read-only rule that also matches does not lift the `*` rule's step-up.
    p = policy({"admin": [{"hosts": ["*"], "commands": ["systemctl status *"]}, {"hosts": ["*"], "commands": ["*"]}]})
    assert needs_code(p, "admin", "systemctl restart nginx")
    assert not needs_code(p, "admin", "systemctl status nginx")


def test_loading_a_config_warns_about_each_rule_that_opts_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = tmp_path / "teleops.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "policy": {
                    "roles": {
                        "operator": [{"hosts": ["*"], "commands": ["df *"], "require_2fa": False}],
                        "admin": [
                            {"hosts": ["*"], "commands": ["*"], "require_2fa": False},
                            {"hosts": ["db-*"], "commands": ["systemctl restart *"]},
                        ],
                    }
                }
            }
        )
    )
    with caplog.at_level(logging.WARNING, logger="teleops.config.settings"):
        settings = load_settings(config)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "policy admin rule 1: hosts [*] commands [*] can change hosts without a second factor (require_2fa: false); "
        "remove that line to ask for a one-time code before such commands"
    ]
    assert settings.policy.roles["admin"][1].require_2fa is None  # absent stays absent: the default applies
    assert settings.access_policy().roles["admin"][1].step_up is StepUp.ON_CHANGE


def test_a_config_without_opt_outs_loads_without_warnings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = tmp_path / "teleops.yaml"
    config.write_text("policy:\n  roles:\n    admin:\n      - {hosts: ['*'], commands: ['*']}\n")
    with caplog.at_level(logging.WARNING, logger="teleops.config.settings"):
        load_settings(config)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


# ---------------------------------------------------------------------------------------------------------------
# End to end: the built-in policy, an admin with TOTP, the REST API and the real local agent.


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC))  # TOTP codes follow real time


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # No `policy:` section: the built-in default, whose admin rule is `*` without require_2fa.
    return settings_with(
        data_dir=tmp_path / "data",
        server={"listen": f"127.0.0.1:{free_port()}"},
        database={"url": f"sqlite+aiosqlite:///{tmp_path}/teleops.db"},
        local_agent={"enabled": True, "name": "web-1"},
        users=[{"name": "ada", "role": "admin"}],
    )


@pytest.fixture
async def live(settings: Settings, clock: FakeClock) -> AsyncIterator[LiveController]:
    async with live_controller(settings, clock, user="ada") as controller:
        yield controller


async def enroll(live: LiveController, user: str) -> pyotp.TOTP:
    uri = await live.services.stepup.enroll(user, now=live.services.clock(), by="admin")
    return pyotp.TOTP(parse_qs(urlparse(uri).query)["secret"][0])


@pytest.fixture
def changed() -> Iterator[Path]:
    # Under /tmp itself: the local agent runs commands as `nobody`, who cannot enter pytest's private tmp_path.
    path = Path("/tmp") / f"teleops-stepup-{uuid.uuid4().hex}"  # a unique name, removed after
    yield path
    path.unlink(missing_ok=True)


async def test_an_admin_without_a_code_is_refused_a_change_and_runs_it_with_one(
    live: LiveController, clock: FakeClock, changed: Path
) -> None:
    body = {"host": "web-1", "command": f"touch {changed}"}

    # Not enrolled yet: refused, and the answer says how to enrol.
    refused = await live.client.post("/api/v1/commands", json=body, headers=live.api)
    assert refused.status_code == 403, refused.text
    assert refused.json()["needs"] == "otp"
    assert "teleops user 2fa-enroll ada" in refused.json()["detail"]

    totp = await enroll(live, "ada")
    missing = await live.client.post("/api/v1/commands", json=body, headers=live.api)
    assert missing.status_code == 403
    assert "X-TeleOps-OTP: CODE" in missing.json()["detail"]
    assert await list_commands(live.services.db) == []
    assert not changed.exists()
    assert "command.stepup_required" in await live.actions()

    ok = await live.client.post("/api/v1/commands", json=body, headers={**live.api, "X-TeleOps-OTP": totp.at(clock())})
    assert ok.status_code == 202, ok.text
    await eventually(changed.exists, timeout=30, what="the admin's touch to run")


async def test_an_admin_looks_at_a_host_without_a_code(live: LiveController) -> None:
    ok = await live.client.post("/api/v1/commands", json={"host": "web-1", "command": "uptime"}, headers=live.api)
    assert ok.status_code == 202, ok.text

    async def finished() -> str | None:
        [run] = await list_commands(live.services.db)
        return run.status if run.status not in ("queued", "running") else None

    assert await eventually(finished, timeout=30, what="uptime to finish") == "succeeded"


# ---------------------------------------------------------------------------------------------------------------
# First response runs diagnostics automatically: nobody can give a code, so a diagnostic whose rule asks for one is
# skipped with a note on the incident (never a silent failure).

RUNBOOK = """
alert: NginxDown
description: nginx stopped answering
diagnostics:
  - {name: config test, command: [nginx, -t], auto: true}
  - {name: load, command: [uptime], auto: true}
"""


@pytest.fixture
def first_response_settings(tmp_path: Path) -> Settings:
    runbooks = tmp_path / "runbooks"
    runbooks.mkdir()
    (runbooks / "nginx.yaml").write_text(RUNBOOK)
    return settings_with(
        data_dir=tmp_path / "data",
        server={"listen": f"127.0.0.1:{free_port()}"},
        database={"url": f"sqlite+aiosqlite:///{tmp_path}/teleops.db"},
        local_agent={"enabled": True, "name": "web-1"},
        users=[{"name": "ada", "role": "admin"}],
        # `nginx *` can change the host (it is not in the read-only table) and says nothing about require_2fa.
        policy={
            "roles": {
                "admin": [{"hosts": ["*"], "commands": ["*"]}],
                "firstresponse": [{"hosts": ["*"], "commands": ["nginx *", "uptime"]}],
            }
        },
        memory={"runbooks_dir": runbooks, "first_response_role": "firstresponse"},
    )


async def test_first_response_skips_a_diagnostic_that_asks_for_a_code_with_a_note(
    first_response_settings: Settings, clock: FakeClock
) -> None:
    async with live_controller(first_response_settings, clock, user="ada") as live:
        ingest = await live.services.tokens.create(TokenKind.INGEST, "am", now=clock())
        body = json.loads(FIRING.read_text())
        body["alerts"][0]["labels"]["alertname"] = "NginxDown"
        posted = await live.client.post(
            "/api/v1/alerts/alertmanager", json=body, headers={"Authorization": f"Bearer {ingest}"}
        )
        assert posted.status_code == 200, posted.text
        incident_id = posted.json()["results"][0]["incident_id"]

        async def notes() -> list[str]:
            events = (await get_incident(live.services.db, incident_id)).timeline
            return [e.data["text"] for e in events if e.kind == "note"]

        [note] = await eventually(notes, timeout=30, what="the first response's note")
        assert "could not run 'config test': its rule asks for a one-time code" in note
        assert "`require_2fa: false`" in note

        async def ran() -> list[tuple[str, ...]]:
            return [tuple(c.argv) for c in await list_commands(live.services.db) if c.status == "succeeded"]

        assert await eventually(ran, timeout=30, what="the read-only diagnostic") == [("uptime",)]
