"""The access-control steps of dispatch: injection (T10), human principal (T08), step-up fail-closed, and
write-ahead audit (T30) — through the real `submit` (commands/submit.py), store and policy; the agent hub is replaced by a
recorder of what would have been sent to an agent."""

from __future__ import annotations

import shlex
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.engine import Connection

from teleops.commands.authorize import authorize, current_policy, use_policy
from teleops.commands.dispatch import CommandRequest
from teleops.commands.fanout import FanoutItem, submit_fanout
from teleops.commands.outcome import Denied, Dispatched, NeedsCode, NotRun, NotRunWhy, Outcome
from teleops.commands.submit import submit
from teleops.config.settings import parse_duration
from teleops.domain.command import CommandRecord, CommandStatus
from teleops.domain.policy import compile_policy
from teleops.store.agents import list_agents, register_agent
from teleops.store.audit import iter_events
from teleops.store.audit_checkpoints import CheckpointLog
from teleops.store.audit_verify import verify_audit
from teleops.store.commands import list_commands
from teleops.store.database import Database
from teleops.store.twofactor import TwoFactorStore
from teleops.wire import Exec
from teleops.wire.command_ids import row_id_of

NOW = datetime(2026, 11, 25, 9, 0, 5, tzinfo=UTC)
POLICY = yaml.safe_load(
    """
operator:
  - {hosts: ["*"], commands: ["uptime", "df *", "echo *", "journalctl -u *.service"]}
  - {hosts: ["web-*"], commands: ["systemctl restart *"], require_2fa: true, max_timeout: 30s}
  - {hosts: ["*"], commands: ["reboot"], require_approval: true, require_2fa: false}
bot:
  - {hosts: ["*"], commands: ["*"], shell: true}
"""
)


@dataclass
class Recorder:
    """Stands in for the agent hub: records each exec instead of sending it."""

    sent: list[Exec] = field(default_factory=list)

    def is_connected(self, agent_name: str) -> bool:
        return True

    async def send_exec(self, agent_name: str, message: Exec) -> None:
        self.sent.append(message)


@dataclass
class Rig:
    db: Database
    sender: Recorder
    data_dir: Path

    async def submit(self, command: str, *, user: str = "alice", role: str = "operator", **kw: Any) -> Outcome:
        request = CommandRequest(user, role, "web-1", command, 60, 65536)
        return await submit(self.db, self.sender, await list_agents(self.db), request, now=NOW, **kw)

    async def dispatched(self, command: str, **kw: Any) -> CommandRecord:
        outcome = await self.submit(command, **kw)
        assert isinstance(outcome, Dispatched), outcome
        return outcome.record

    async def audit_actions(self) -> list[tuple[str, str]]:
        def read(conn: Connection) -> list[tuple[str, str]]:
            return [(e.actor, e.action) for e in iter_events(conn)]

        return await self.db.run_in_transaction(read)


@pytest.fixture
async def rig(db_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    previous = current_policy()
    use_policy(compile_policy(POLICY, parse_duration=parse_duration))
    db = Database(db_url)
    await db.migrate()
    await register_agent(db, name="web-1", hostname="web-1", version="1", labels={}, allowlist_digest="", now=NOW)
    yield Rig(db, Recorder(), tmp_path / "data")
    await db.close()
    use_policy(previous)


INJECTIONS = [
    "uptime; touch /tmp/canary",
    "uptime && touch /tmp/canary",
    "uptime || touch /tmp/canary",
    "uptime | sh",
    "echo $(touch /tmp/canary)",
    'echo "$(touch /tmp/canary)"',
    "echo `touch /tmp/canary`",
    "uptime\ntouch /tmp/canary",
    "echo hi > /tmp/canary",
    "echo 'unbalanced",
    "sh -c 'touch /tmp/canary'",
    "env bash -c 'touch /tmp/canary'",
    "journalctl -u --output=/tmp/canary.service",
]


@pytest.mark.parametrize("payload", INJECTIONS)
async def test_injection_payloads_never_reach_an_agent(rig: Rig, payload: str) -> None:
    outcome = await rig.submit(payload)
    assert isinstance(outcome, Denied) or (isinstance(outcome, NotRun) and outcome.why is NotRunWhy.BAD_COMMAND_LINE)
    assert rig.sender.sent == []
    assert all(c.status == CommandStatus.DENIED for c in await list_commands(rig.db))


@pytest.mark.parametrize("payload", ["echo '$(touch /tmp/canary)'", "echo a\\;b", "echo '`id`' '&&' x"])
async def test_quoted_metacharacters_travel_as_literal_argv(rig: Rig, payload: str) -> None:
    record = await rig.dispatched(payload)
    assert record.status == CommandStatus.RUNNING
    [sent] = rig.sender.sent
    assert sent.argv == shlex.split(payload)
    assert await rig.audit_actions() == [("alice", "command.dispatching")]


async def test_a_refusal_is_audited_and_changes_nothing_else(rig: Rig) -> None:
    outcome = await rig.submit("uptime; reboot")
    assert isinstance(outcome, Denied), outcome
    assert "shell syntax is not run" in outcome.reason
    assert outcome.record.status == CommandStatus.DENIED
    assert await rig.audit_actions() == [("alice", "command.denied")]


async def test_audit_failure_means_no_execution_and_says_so(rig: Rig) -> None:
    def break_audit(conn: Connection) -> None:
        conn.execute(text("DELETE FROM audit_head"))

    await rig.db.run_in_transaction(break_audit)
    record = await rig.dispatched("uptime")
    assert rig.sender.sent == []
    assert record.status == CommandStatus.FAILED
    assert record.reason is not None
    assert record.reason.startswith("not executed: audit unavailable")


async def test_a_dispatch_is_checkpointed_outside_the_database(rig: Rig) -> None:
    log = CheckpointLog(rig.data_dir)
    await rig.submit("uptime", checkpoints=log)
    assert [c.seq for c in log.read()] == [1]
    assert (await verify_audit(rig.db, log)).ok


async def test_two_factor_rules_fail_closed_until_a_code_is_accepted(rig: Rig) -> None:
    needs = await rig.submit("systemctl restart nginx")
    assert isinstance(needs, NeedsCode), needs
    assert "needs a TOTP code" in needs.reason
    store = TwoFactorStore(rig.db, rig.data_dir)
    needs = await rig.submit("systemctl restart nginx", stepup=store)
    assert isinstance(needs, NeedsCode), needs
    assert "needs a TOTP code" in needs.reason
    assert await list_commands(rig.db) == []  # nothing recorded while the code is missing; only the audit
    assert [a for _, a in await rig.audit_actions()] == ["command.stepup_required"] * 2
    uri = await store.enroll("alice", now=NOW, by="admin")
    totp = pyotp.TOTP(parse_qs(urlparse(uri).query)["secret"][0])
    assert (await store.verify("alice", totp.at(NOW), now=NOW - timedelta(seconds=1))).accepted
    record = await rig.dispatched("systemctl restart nginx", stepup=store)
    assert record.status == CommandStatus.RUNNING
    assert rig.sender.sent[-1].timeout_s == 30  # the rule's max_timeout caps the requested 60 s


async def test_approval_rules_fail_closed_without_approval_rules(rig: Rig) -> None:
    outcome = await rig.submit("reboot")
    assert isinstance(outcome, Denied), outcome
    assert "second person" in outcome.reason
    assert rig.sender.sent == []


HUMAN_ROLES = {"alice": "operator", "eve": "nobody", "mallory": None}


@given(
    user=st.sampled_from(sorted(HUMAN_ROLES)),
    host=st.sampled_from(["web-1", "db-1", "WEB-2"]),
    argv=st.lists(st.sampled_from(["uptime", "df", "-h", "reboot", "sh", "-c", "echo", "x", "*"]), max_size=4),
)
def test_decisions_are_the_humans_never_the_bots(user: str, host: str, argv: list[str]) -> None:
    policy = compile_policy(POLICY, parse_duration=parse_duration)
    role = HUMAN_ROLES[user]
    decision = authorize(user, role, host, argv, policy=policy)
    assert decision == policy.decide(user=user, role=role, host=host, argv=argv)
    bot = policy.decide(user="teleops-bot", role="bot", host=host, argv=argv)
    if decision.allowed:
        assert bot.allowed  # the bot can do everything, so this proves nothing by itself...
    elif argv:
        assert bot.allowed  # ...but here the bot could, and the human's refusal still stands


# -- one command on many hosts: every host decided and audited on its own -------------------------------------


async def fan_out(rig: Rig, command: str, hosts: list[str], *, verify: bool = True) -> list[FanoutItem]:
    for name in ("web-2", "db-1"):
        await register_agent(rig.db, name=name, hostname=name, version="1", labels={}, allowlist_digest="", now=NOW)
    request = CommandRequest("alice", "operator", "", command, 60, 65536)
    checkpoints = CheckpointLog(rig.data_dir)
    items = await submit_fanout(
        rig.db, rig.sender, await list_agents(rig.db), request, hosts, now=NOW, checkpoints=checkpoints
    )
    if verify:
        await checkpoints.checkpoint(rig.db)  # as the controller does every few seconds: refusals dispatch nothing
        assert (await verify_audit(rig.db, checkpoints)).ok
    return items


async def test_a_fan_out_sends_only_what_the_policy_allows_on_each_host(rig: Rig) -> None:
    items = await fan_out(rig, "systemctl restart nginx", ["web-1", "db-1", "web-2", "nowhere"])
    assert [item.host for item in items] == ["web-1", "db-1", "web-2", "nowhere"]
    assert "one-time code" in (items[0].error or "")  # 2FA: never from a batch
    assert items[0].command is None
    assert items[1].command is not None
    assert items[1].command.status == CommandStatus.DENIED  # no rule on db-1 for it
    assert "one-time code" in (items[2].error or "")
    assert "known hosts" in (items[3].error or "")
    assert rig.sender.sent == []
    assert await rig.audit_actions() == [
        ("alice", "command.stepup_required"),
        ("alice", "command.denied"),
        ("alice", "command.stepup_required"),
    ]


async def test_a_fan_out_needing_approval_is_refused_per_host_and_audited(rig: Rig) -> None:
    items = await fan_out(rig, "reboot", ["web-1", "db-1"])
    assert all("second person" in (item.error or "") for item in items)
    assert rig.sender.sent == []
    assert await list_commands(rig.db) == []
    assert await rig.audit_actions() == [("alice", "command.approval_required")] * 2


async def test_a_fan_out_dispatches_every_allowed_host_in_one_chain(rig: Rig) -> None:
    items = await fan_out(rig, "uptime", ["web-1", "web-2", "db-1"])
    assert [item.command.status if item.command else None for item in items] == [CommandStatus.RUNNING] * 3
    assert [row_id_of(m.command_id) for m in rig.sender.sent] == [item.command.id for item in items if item.command]
    assert await rig.audit_actions() == [("alice", "command.dispatching")] * 3
    assert [c.seq for c in CheckpointLog(rig.data_dir).read()] == [3]


async def test_a_fan_out_without_audit_runs_nothing(rig: Rig) -> None:
    def break_audit(conn: Connection) -> None:
        conn.execute(text("DELETE FROM audit_head"))

    await rig.db.run_in_transaction(break_audit)
    items = await fan_out(rig, "uptime", ["web-1", "web-2"], verify=False)
    assert all((item.error or "").startswith("not executed: audit unavailable") for item in items)
    assert rig.sender.sent == []
    assert await list_commands(rig.db) == []


# -- the dispatch committed but its fsync failed: it must not run, nor stay `running` ---------------------------


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the pipelined WAL fsync is SQLite's
async def test_a_dispatch_that_cannot_be_made_durable_fails_and_is_never_sent(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    committer = rig.db._committer
    assert committer is not None
    failures = iter([OSError(5, "Input/output error")])

    def failing_fsync() -> None:
        error = next(failures, None)  # only the dispatch's fsync fails; recording the failure may sync again
        if error is not None:
            raise error

    monkeypatch.setattr(committer, "_fsync_wal", failing_fsync)
    record = await rig.dispatched("uptime")
    assert rig.sender.sent == []
    assert record.status == CommandStatus.FAILED
    assert (record.reason or "").startswith("not executed: the database could not put the dispatch safely on disk")
    assert [c.status for c in await list_commands(rig.db)] == [CommandStatus.FAILED]
