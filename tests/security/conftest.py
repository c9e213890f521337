"""Fixtures shared by the security tests that run commands for real."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from teleops.agent.warm import WarmTrampolines


@pytest.fixture(params=["cold", "warm"])
async def trampolines(request: pytest.FixtureRequest) -> AsyncIterator[WarmTrampolines | None]:
    """Both ways a command starts: cold, and on a warm trampoline whose shell learns the argv (agent/warm.py)."""
    if request.param == "cold":
        yield None
        return
    warm = WarmTrampolines(use_cgroup=False)
    warm.start()
    while not warm._ready:
        await asyncio.sleep(0.01)
    yield warm
    await warm.close()
