"""The result is spooled while it travels: an acknowledgement that arrives before the spool file is written must
not leave that file behind (it would be reported again after every reconnect)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from teleops.agent.allowlist import Allowlist
from teleops.agent.executions import Executions
from teleops.agent.spool import Spool
from teleops.wire import Ack, Exit, Message


async def no_connection(message: Message) -> bool:
    return False


def executions(tmp_path: Path) -> tuple[Executions, Spool]:
    spool = Spool(tmp_path / "state")
    running = Executions(
        allowlist=Allowlist.deny_all(), spool=spool, max_concurrent=4, kill_grace_s=1.0, send=no_connection,
        connection=lambda: None,
    )  # fmt: skip
    return running, spool


async def test_an_ack_before_the_spool_write_removes_the_file_once_it_is_written(tmp_path: Path) -> None:
    commands, spool = executions(tmp_path)
    written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    commands._spooling["7"] = written  # the result of command 7 is being written in a worker thread
    await commands.on_ack(Ack(command_id="7"))  # the controller stored it first
    spool.put(Exit(command_id="7", exit_code=0))  # now the write lands
    assert [r.command_id for r in spool.pending()] == ["7"]
    written.set_result(None)
    await asyncio.sleep(0)  # the done-callback runs
    assert spool.pending() == []


async def test_an_ack_after_the_spool_write_removes_the_file_at_once(tmp_path: Path) -> None:
    commands, spool = executions(tmp_path)
    spool.put(Exit(command_id="8", exit_code=0))
    await commands.on_ack(Ack(command_id="8"))
    assert spool.pending() == []
