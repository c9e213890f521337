"""The controller stopping its embedded agent records what that does to the agent's commands: `killed`, with the
reason, for every unfinished command of that agent, except one whose result the agent spooled before it stopped
(reported at the next start) and any command of another agent (remote agents keep running theirs).

The child is a stand-in process, not a real agent: what matters here is how it exits. The whole path with
`teleops serve` and its real agent is in test_agent_e2e.py.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path

from teleops.agent.spool import Spool
from teleops.commands.backend.agent_hub import KILLED_AT_SHUTDOWN, AgentHub
from teleops.config import Settings
from teleops.server.local_agent import STATE_DIR, LocalAgentSupervisor
from teleops.store.commands import create_command, get_command, mark_dispatched
from teleops.store.database import Database
from teleops.store.tokens import TokenStore
from teleops.wire import Exit
from tests.settings import settings_with

NOW = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)

# Exits 0 on SIGTERM, as `teleops agent` does once it has killed its commands; or dies of the signal.
STOPS_CLEANLY = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))"
DIES_OF_SIGTERM = "import time"


class _StandIn(LocalAgentSupervisor):
    def __init__(self, settings: Settings, hub: AgentHub, ready: Path, code: str) -> None:
        super().__init__(settings, Path("/nonexistent-token"), hub=hub)
        self._code = f"{code}; open({str(ready)!r}, 'w').close(); time.sleep(60)"

    def argv(self) -> list[str]:
        return [sys.executable, "-c", self._code]


async def _running(db: Database, agent: str) -> int:
    record = await create_command(db, requester="alice", host=agent, agent_name=agent, argv=["sleep", "60"],
                                  timeout_s=120, now=NOW)  # fmt: skip
    assert await mark_dispatched(db, record.id, now=NOW)
    return record.id


async def _stop_child(db: Database, db_url: str, tmp_path: Path, code: str) -> tuple[int, int, int]:
    """Three running commands (the local agent's, the local agent's with a spooled result, web-1's); start the
    child, stop it; returns their ids."""
    settings = settings_with(data_dir=tmp_path / "data", database={"url": db_url})
    hub = AgentHub(db=db, tokens=TokenStore(db), clock=lambda: NOW, settings=settings.agents)
    killed, spooled, remote = (await _running(db, "localhost"), await _running(db, "localhost"),
                               await _running(db, "web-1"))  # fmt: skip
    spool = Spool(settings.data_dir / STATE_DIR)
    spool.put(Exit(command_id=str(spooled), exit_code=0, output="done\n", output_bytes=5))
    spool.close()
    ready = tmp_path / "ready"
    supervisor = _StandIn(settings, hub, ready, code)
    supervisor.start()
    async with asyncio.timeout(10):
        while not ready.exists():
            await asyncio.sleep(0.01)
    await supervisor.stop()
    return killed, spooled, remote


async def test_a_cleanly_stopped_local_agent_has_its_unfinished_commands_ended_killed(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    killed, spooled, remote = await _stop_child(db, db_url, tmp_path, STOPS_CLEANLY)

    record = await get_command(db, killed)
    assert (record.status, record.reason, record.finished_at) == ("killed", KILLED_AT_SHUTDOWN, NOW)
    assert KILLED_AT_SHUTDOWN.startswith("killed: the controller shut down")
    assert (await get_command(db, spooled)).status == "running"  # its real result comes with the next hello
    assert (await get_command(db, remote)).status == "running"  # a remote agent keeps running its commands


async def test_a_local_agent_that_did_not_run_its_own_stop_gets_nothing_claimed(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    commands = await _stop_child(db, db_url, tmp_path, DIES_OF_SIGTERM)

    assert [(await get_command(db, c)).status for c in commands] == ["running"] * 3
