"""Two-person approval (docs/threat-model.md T07, T22, T23) through the real dispatch step, approval desk, store and policy;
the agent hub is replaced by a recorder of what would have been sent. Each refused case asserts that nothing
changed except the audit log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import Connection
from tests.conftest import FakeClock

from teleops.commands.approval import ApprovalDesk, ApprovalNews, Vote
from teleops.commands.authorize import current_policy, use_policy
from teleops.commands.dispatch import CommandRequest
from teleops.commands.outcome import AwaitingApproval
from teleops.commands.submit import submit
from teleops.config.settings import parse_duration
from teleops.domain.command import CommandStatus
from teleops.domain.policy import compile_policy
from teleops.store.agents import list_agents, register_agent
from teleops.store.approvals import ApprovalRules, ApprovalStatus, get_approval
from teleops.store.audit import iter_events
from teleops.store.commands import get_command
from teleops.store.database import Database
from teleops.store.users import UserStore
from teleops.wire import Exec

POLICY = yaml.safe_load(
    """
operator:
  - {hosts: ["*"], commands: ["uptime"]}
  - {hosts: ["*"], commands: ["reboot", "reboot *"], require_approval: true, require_2fa: false}
viewer:
  - {hosts: ["*"], commands: ["uptime"]}
"""
)


@dataclass
class Recorder:
    sent: list[Exec] = field(default_factory=list)

    def is_connected(self, agent_name: str) -> bool:
        return True

    async def send_exec(self, agent_name: str, message: Exec) -> None:
        self.sent.append(message)


@dataclass
class Rig:
    db: Database
    sender: Recorder
    users: UserStore
    clock: FakeClock
    news: list[ApprovalNews]

    def desk(self, needed: int = 1) -> ApprovalDesk:
        desk = ApprovalDesk(
            db=self.db,
            users=self.users,
            sender=self.sender,
            clock=self.clock,
            rules=ApprovalRules(ttl=timedelta(minutes=15), needed=needed),
            output_cap_bytes=65536,
        )

        async def hear(news: ApprovalNews) -> None:
            self.news.append(news)

        desk.listen(hear)
        return desk

    async def request(self, desk: ApprovalDesk, command: str = "reboot", *, user: str = "alice") -> AwaitingApproval:
        record = await self.users.get(user)
        assert record is not None
        req = CommandRequest(user, record.role, "web-1", command, 60, 65536, platform="telegram", chat_id="-100")
        outcome = await submit(
            self.db, self.sender, await list_agents(self.db), req, now=self.clock(), approval=desk.rules
        )
        assert isinstance(outcome, AwaitingApproval), outcome
        return outcome

    async def actions(self) -> list[tuple[str, str]]:
        def read(conn: Connection) -> list[tuple[str, str]]:
            return [(e.actor, e.action) for e in iter_events(conn)]

        return await self.db.run_in_transaction(read)


@pytest.fixture
async def rig(db_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    previous = current_policy()
    use_policy(compile_policy(POLICY, parse_duration=parse_duration))
    db = Database(db_url)
    await db.migrate()
    clock = FakeClock(datetime(2026, 11, 25, 9, 0, tzinfo=UTC))
    await register_agent(db, name="web-1", hostname="web-1", version="1", labels={}, allowlist_digest="", now=clock())
    users = UserStore(db)
    for name, role in (("alice", "operator"), ("bob", "operator"), ("carol", "operator"), ("vic", "viewer")):
        await users.ensure(name, role, now=clock())
    yield Rig(db, Recorder(), users, clock, [])
    await db.close()
    use_policy(previous)


async def test_a_command_needing_approval_waits_queued_and_runs_once_approved(rig: Rig) -> None:
    desk = rig.desk()
    pending = await rig.request(desk, "reboot now")
    assert pending.record.status == CommandStatus.QUEUED
    assert rig.sender.sent == []
    assert await rig.actions() == [("alice", "approval.requested")]
    answer = await desk.vote(pending.record.id, voter="bob", vote=Vote.APPROVE, digest=pending.approval.short_digest)
    assert answer == f"Command {pending.record.id} approved by bob."
    assert [m.argv for m in rig.sender.sent] == [["reboot", "now"]]
    assert (await get_command(rig.db, pending.record.id)).status == CommandStatus.RUNNING
    assert await rig.actions() == [
        ("alice", "approval.requested"),
        ("bob", "approval.approved"),
        ("alice", "command.dispatching"),
    ]
    assert rig.news[-1].final
    assert "running `reboot now` on web-1" in rig.news[-1].text
    # A second approval (or a replayed button) cannot run it again.
    again = await desk.vote(pending.record.id, voter="carol", vote=Vote.APPROVE)
    assert again.startswith("Not counted")
    assert "already dispatched" in again
    assert len(rig.sender.sent) == 1


async def test_self_approval_is_refused_and_only_audited(rig: Rig) -> None:
    desk = rig.desk()
    pending = await rig.request(desk)
    answer = await desk.vote(pending.record.id, voter="alice", vote=Vote.APPROVE, digest=pending.approval.short_digest)
    assert "a second person must decide" in answer
    assert rig.sender.sent == []
    approval = await get_approval(rig.db, pending.record.id)
    assert approval is not None
    assert approval.status is ApprovalStatus.PENDING
    assert approval.approved_by == ()
    assert (await get_command(rig.db, pending.record.id)).status == CommandStatus.QUEUED
    assert (await rig.actions())[-1] == ("alice", "approval.refused")


async def test_someone_whose_role_could_not_run_it_cannot_approve(rig: Rig) -> None:
    desk = rig.desk()
    pending = await rig.request(desk)
    answer = await desk.vote(pending.record.id, voter="vic", vote=Vote.APPROVE)
    assert "you may not decide on it: your own rules would not let you run it" in answer
    assert "reboot" not in answer  # a vote by number never reveals the command to someone who may not read it
    assert rig.sender.sent == []
    assert (await get_command(rig.db, pending.record.id)).status == CommandStatus.QUEUED
    assert (await rig.actions())[-1] == ("vic", "approval.refused")


async def test_a_deny_after_an_approve_blocks(rig: Rig) -> None:
    desk = rig.desk(needed=2)
    pending = await rig.request(desk)
    first = await desk.vote(pending.record.id, voter="bob", vote=Vote.APPROVE)
    assert first == f"Approval 1 of 2 for command {pending.record.id} counted."
    denied = await desk.vote(pending.record.id, voter="carol", vote=Vote.DENY)
    assert denied == f"Command {pending.record.id} denied by carol; it will not run."
    record = await get_command(rig.db, pending.record.id)
    assert (record.status, record.reason) == (CommandStatus.DENIED, "not run: denied by carol")
    await rig.users.ensure("dave", "operator", now=rig.clock())
    late = await desk.vote(pending.record.id, voter="dave", vote=Vote.APPROVE)
    assert late.startswith("Not counted")
    assert "already denied by carol" in late
    assert rig.sender.sent == []
    assert [a for _, a in await rig.actions()] == [
        "approval.requested",
        "approval.approved",
        "approval.denied",
        "command.denied",
        "approval.refused",
    ]


async def test_an_approval_after_the_ttl_is_refused(rig: Rig) -> None:
    desk = rig.desk()
    pending = await rig.request(desk)
    rig.clock.advance(minutes=15)
    answer = await desk.vote(pending.record.id, voter="bob", vote=Vote.APPROVE)
    assert "expired" in answer
    assert rig.sender.sent == []
    record = await get_command(rig.db, pending.record.id)
    assert record.status == CommandStatus.DENIED
    assert record.reason is not None
    assert "expired" in record.reason
    assert [a for _, a in await rig.actions()][-2:] == ["approval.expired", "command.denied"]


async def test_expiry_sweep_ends_undecided_requests(rig: Rig) -> None:
    desk = rig.desk()
    pending = await rig.request(desk)
    assert await desk.expire_due() == 0
    rig.clock.advance(minutes=16)
    assert await desk.expire_due() == 1
    assert (await get_command(rig.db, pending.record.id)).status == CommandStatus.DENIED
    assert rig.news[-1].final
    assert "expired" in rig.news[-1].text


async def test_a_button_for_another_request_approves_nothing(rig: Rig) -> None:
    desk = rig.desk()
    x = await rig.request(desk, "reboot")
    y = await rig.request(desk, "reboot")  # same text, another request: another digest
    assert x.approval.digest != y.approval.digest
    answer = await desk.vote(y.record.id, voter="bob", vote=Vote.APPROVE, digest=x.approval.short_digest)
    assert "belongs to another request" in answer
    for pending in (x, y):
        approval = await get_approval(rig.db, pending.record.id)
        assert approval is not None
        assert approval.status is ApprovalStatus.PENDING
    assert rig.sender.sent == []
    assert (await rig.actions())[-1] == ("bob", "approval.refused")


async def test_a_role_revoked_between_approval_and_dispatch_stops_the_command(rig: Rig) -> None:
    desk = rig.desk(needed=2)
    pending = await rig.request(desk)
    await desk.vote(pending.record.id, voter="bob", vote=Vote.APPROVE)
    await rig.users.ensure("alice", "viewer", now=rig.clock())  # alice's role no longer allows reboot
    answer = await desk.vote(pending.record.id, voter="carol", vote=Vote.APPROVE)
    assert answer == f"Command {pending.record.id} approved by bob, carol."
    record = await get_command(rig.db, pending.record.id)
    assert record.status == CommandStatus.DENIED
    assert record.reason is not None
    assert record.reason.startswith("not run: the policy changed after approval")
    assert rig.sender.sent == []
    assert [a for _, a in await rig.actions()][-2:] == ["approval.approved", "command.denied"]
    assert "was approved by bob, carol but not run" in rig.news[-1].text


async def _tamper(rig: Rig, command_id: int, **changes: object) -> None:
    """What a database writer can do: change the command row and recompute the approval digest every way it can
    without the key outside the database (plain SHA-256 of the old and of the new canonical form)."""
    import hashlib
    import json

    from sqlalchemy import update

    from teleops.store.approvals import approval_digest, approvals
    from teleops.store.schema import commands

    record = await get_command(rig.db, command_id)
    argv = list(changes.get("argv", record.argv))  # type: ignore[call-overload]
    timeout_s = int(changes.get("timeout_s", record.timeout_s))  # type: ignore[call-overload]
    forged = {
        "old": hashlib.sha256(
            json.dumps(
                {"agent": record.agent_name.lower(), "argv": argv, "requester": record.requester, "request_id": command_id},
                sort_keys=True, separators=(",", ":"), ensure_ascii=False,
            ).encode()
        ).hexdigest(),
        "unkeyed": approval_digest(
            agent=record.agent_name, argv=argv, requester=record.requester, command_id=command_id, timeout_s=timeout_s
        ),
    }  # fmt: skip

    def apply(conn: Connection, digest: str) -> None:
        conn.execute(update(commands).where(commands.c.id == command_id).values(argv=argv, timeout_s=timeout_s))
        conn.execute(update(approvals).where(approvals.c.command_id == command_id).values(digest=digest))

    await rig.db.run_in_transaction(apply, forged[str(changes.get("forge", "unkeyed"))])


@pytest.mark.parametrize(
    "changes",
    [
        {"argv": ["reboot", "--force"], "forge": "unkeyed"},
        {"argv": ["reboot", "--force"], "forge": "old"},
        {"timeout_s": 3600, "forge": "unkeyed"},
    ],
    ids=["argv-rehashed", "argv-old-digest", "timeout"],
)
async def test_a_command_rewritten_in_the_database_after_approval_is_not_run(
    rig: Rig, tmp_path: Path, changes: dict[str, object]
) -> None:
    from teleops.domain.redaction import SecretRules
    from teleops.store.sealed_argv import ArgvVault

    rig.db.argv_vault = ArgvVault.open(tmp_path / "keys", SecretRules.build())  # as `teleops serve` has it
    desk = rig.desk(needed=2)
    pending = await rig.request(desk, "reboot now")
    await desk.vote(pending.record.id, voter="bob", vote=Vote.APPROVE)
    await _tamper(rig, pending.record.id, **changes)
    await desk.vote(pending.record.id, voter="carol", vote=Vote.APPROVE)
    record = await get_command(rig.db, pending.record.id)
    assert record.status == CommandStatus.DENIED
    assert record.reason == (
        "not run: the command changed after it was approved (its argv, host or timeout no longer match)"
    )
    assert rig.sender.sent == []


async def test_an_untouched_approval_under_the_key_still_runs(rig: Rig, tmp_path: Path) -> None:
    from teleops.domain.redaction import SecretRules
    from teleops.store.sealed_argv import ArgvVault

    rig.db.argv_vault = ArgvVault.open(tmp_path / "keys", SecretRules.build())
    desk = rig.desk()
    pending = await rig.request(desk, "reboot now")
    await desk.vote(pending.record.id, voter="bob", vote=Vote.APPROVE)
    assert [m.argv for m in rig.sender.sent] == [["reboot", "now"]]
