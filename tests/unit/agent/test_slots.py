"""The per-agent concurrency limit: run N, queue Q, refuse the rest at once with a clear message."""

from __future__ import annotations

import asyncio

import pytest

from teleops.agent.slots import CommandSlots, Slot, SlotsBusy


async def test_refuses_without_waiting_when_full() -> None:
    slots = CommandSlots(2)
    first, second = slots.reserve(), slots.reserve()
    async with first, second:
        assert slots.running == 2
        with pytest.raises(SlotsBusy) as info:
            slots.reserve()
        assert str(info.value).startswith("busy: 2 commands already running")
    assert slots.running == 0
    async with slots.reserve():
        assert slots.running == 1


async def test_queue_waits_for_a_turn_in_order() -> None:
    slots = CommandSlots(1, queue=2)
    order: list[str] = []
    gate = asyncio.Event()

    holder = slots.reserve()
    await holder.__aenter__()
    waiting = [slots.reserve(), slots.reserve()]
    with pytest.raises(SlotsBusy, match="1 commands already running on this agent \\(limit 1, 2 waiting\\)"):
        slots.reserve()
    assert slots.waiting == 2

    async def enter(slot: Slot, name: str) -> None:
        async with slot:
            order.append(name)
            await gate.wait()

    tasks = [asyncio.create_task(enter(s, n)) for s, n in zip(waiting, ["a", "b"], strict=True)]
    await asyncio.sleep(0)
    assert order == []  # both wait behind the holder
    holder.release()
    gate.set()
    await asyncio.gather(*tasks)
    assert order == ["a", "b"]
    assert slots.running == 0
    assert slots.waiting == 0


async def test_release_without_entering_gives_the_place_back() -> None:
    slots = CommandSlots(1)
    slot = slots.reserve()
    slot.release()
    slot.release()  # idempotent
    async with slots.reserve():
        assert slots.running == 1


async def test_cancelled_waiter_frees_its_place() -> None:
    slots = CommandSlots(1, queue=1)
    holder = slots.reserve()
    await holder.__aenter__()
    waiter = slots.reserve()

    async def enter() -> None:
        async with waiter:
            raise AssertionError("must not get a turn")

    task = asyncio.create_task(enter())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert slots.waiting == 0
    slots.reserve().release()  # the queue place is free again
    holder.release()


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CommandSlots(0)
    with pytest.raises(ValueError, match="zero or more"):
        CommandSlots(1, queue=-1)
