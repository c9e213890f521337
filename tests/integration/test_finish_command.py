"""`finish_command` records a command's terminal state once, in one statement, on SQLite and PostgreSQL: given
values replace the stored ones, missing ones keep them (streamed output, a recorded start), a `lost` command
takes a real result only when asked, and a final one is left alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from teleops.domain.command import CommandNotFound, CommandStatus, Finish, NotThisAgentsCommand
from teleops.store.commands import (
    append_output,
    create_command,
    finish_command,
    finish_reported,
    get_command,
    mark_dispatched,
    mark_started,
)
from teleops.store.database import Database

NOW = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)


async def _running(db: Database) -> int:
    record = await create_command(
        db, requester="alice", host="web-1", agent_name="web-1", argv=["df", "-h"], timeout_s=30, now=NOW
    )
    assert await mark_dispatched(db, record.id, now=NOW)
    return record.id


async def test_a_result_replaces_what_it_gives_and_fills_in_a_start_not_recorded(db: Database) -> None:
    command_id = await _running(db)
    started = NOW + timedelta(seconds=1)
    finish = Finish(
        CommandStatus.SUCCEEDED, exit_code=0, output="ok\n", output_bytes=3, truncated=False, started_at=started
    )
    changed = await finish_command(db, command_id, finish, now=NOW + timedelta(seconds=2))
    assert changed is not None
    assert (changed.status, changed.exit_code, changed.output, changed.output_bytes) == ("succeeded", 0, "ok\n", 3)
    assert changed.started_at == started
    assert changed.finished_at == NOW + timedelta(seconds=2)
    assert await get_command(db, command_id) == changed


async def test_missing_values_keep_the_streamed_output_and_the_recorded_start(db: Database) -> None:
    command_id = await _running(db)
    await mark_started(db, command_id, now=NOW + timedelta(seconds=1))
    await append_output(db, command_id, "partial\n", cap_chars=1000)
    finish = Finish(CommandStatus.KILLED, reason="cancelled by bob", started_at=NOW + timedelta(seconds=9))
    changed = await finish_command(db, command_id, finish, now=NOW + timedelta(seconds=5))
    assert changed is not None
    assert changed.output == "partial\n"
    assert changed.exit_code is None
    assert changed.started_at == NOW + timedelta(seconds=1)  # the recorded start stays
    assert changed.reason == "cancelled by bob"


async def test_a_final_command_is_left_alone_and_lost_takes_a_real_result_only_when_asked(db: Database) -> None:
    command_id = await _running(db)
    lost = Finish(CommandStatus.LOST, reason="agent gone")
    assert await finish_command(db, command_id, lost, now=NOW) is not None
    late = Finish(CommandStatus.SUCCEEDED, exit_code=0, output="late\n")
    assert await finish_command(db, command_id, late, now=NOW) is None
    assert (await get_command(db, command_id)).status == "lost"
    replaced = await finish_command(db, command_id, late, now=NOW, replace_lost=True)
    assert replaced is not None
    assert (replaced.status, replaced.output, replaced.reason) == ("succeeded", "late\n", None)
    assert await finish_command(db, command_id, lost, now=NOW, replace_lost=True) is None  # succeeded is final


async def test_an_unknown_command_is_not_found(db: Database) -> None:
    with pytest.raises(CommandNotFound):
        await finish_command(db, 424242, Finish(CommandStatus.LOST), now=NOW)


async def test_only_the_agent_a_command_was_sent_to_can_report_its_outcome(db: Database) -> None:
    command_id = await _running(db)
    forged = Finish(CommandStatus.SUCCEEDED, exit_code=0, output="forged\n")
    with pytest.raises(NotThisAgentsCommand):
        await finish_reported(db, command_id, forged, agent_name="web-2", now=NOW, replace_lost=True)
    assert (await get_command(db, command_id)).status == "running"
    real = Finish(CommandStatus.SUCCEEDED, exit_code=0, output="real\n")
    changed = await finish_reported(db, command_id, real, agent_name="web-1", now=NOW, replace_lost=True)
    assert changed is not None
    assert changed.output == "real\n"
    again = await finish_reported(db, command_id, real, agent_name="web-1", now=NOW, replace_lost=True)
    assert again is None  # its own repeated result: a duplicate, not a forgery


async def test_a_command_never_sent_cannot_be_ended_by_any_agent_report(db: Database) -> None:
    """A command waiting for approval (queued) is ended by no agent, not even the one of its own host."""
    queued = await create_command(
        db, requester="alice", host="web-1", agent_name="web-1", argv=["reboot"], timeout_s=30, now=NOW
    )
    refusal = Finish(CommandStatus.DENIED, reason="agent web-1 refused to run it")
    for agent in ("web-1", "web-2"):
        with pytest.raises(NotThisAgentsCommand):
            await finish_reported(db, queued.id, refusal, agent_name=agent, now=NOW, replace_lost=False)
    assert (await get_command(db, queued.id)).status == "queued"
