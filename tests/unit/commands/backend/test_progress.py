"""Waiting for a command's end: an end that lands between reading the state and waiting is not lost."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from teleops.commands.backend.progress import CommandProgress
from teleops.domain.command import CommandRecord
from teleops.store.database import Database


def progress() -> CommandProgress:
    return CommandProgress(cast(Database, cast(Any, None)), output_cap_chars=1024)  # no flush happens here


async def test_an_end_between_the_read_and_the_wait_wakes_the_waiter() -> None:
    waits = progress()
    event = waits.waiter(7)  # taken before the read, as the API does
    waits.finished(7)  # the command ends while the API reads its state
    final = await asyncio.wait_for(waits.wait(event, timeout_s=30), timeout=5)  # returns at once, not after 30 s
    assert final is None  # this end came without its record: the caller reads it
    waits.release(7)


async def test_the_final_record_reaches_every_waiter_without_a_read() -> None:
    waits = progress()
    first, second = waits.waiter(4), waits.waiter(4)
    record = cast(CommandRecord, object())
    waits.finished(4, record)
    assert await waits.wait(first, 30) is record
    assert await waits.wait(second, 30) is record


async def test_a_wait_that_times_out_returns_no_record() -> None:
    waits = progress()
    event = waits.waiter(5)
    assert await waits.wait(event, timeout_s=0.01) is None
    waits.release(5)
    assert waits._waiters == {}


async def test_two_waiters_are_both_woken_and_nothing_is_kept_afterwards() -> None:
    waits = progress()
    first, second = waits.waiter(9), waits.waiter(9)
    tasks = [asyncio.create_task(waits.wait(first, 30)), asyncio.create_task(waits.wait(second, 30))]
    await asyncio.sleep(0)
    waits.finished(9)
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)
    waits.release(9)
    waits.release(9)
    assert waits._waiters == {}
    assert waits._waiting == {}


async def test_a_waiter_for_an_already_ended_command_is_released() -> None:
    waits = progress()
    waits.waiter(3)
    waits.release(3)  # the read showed it had ended: no wait
    assert waits._waiters == {}
    assert waits._waiting == {}
