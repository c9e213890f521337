"""Commands that will never report: ended `lost` so nobody waits on them forever (docs/threat-model.md F07, F11).

Two cases, checked about once a second by the agent hub:
- the agent is unreachable (not connected here, nor to another replica: commands/backend/routing.py, whose rule
  says when a dead replica's connections stop counting) past the command's timeout plus `agents.lost_after`:
  "agent web-1 unreachable since …";
- the agent is connected but never reported a command it started, past its timeout plus `agents.lost_after`
  (the agent kills at the timeout and reports at once, so the command or its result was lost on the way).
A real result that still comes replaces `lost` (`finish_command(..., replace_lost=True)` in the hub).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import structlog

from teleops.commands.backend.progress import CommandProgress
from teleops.domain.clock import Clock
from teleops.domain.command import CommandRecord, CommandStatus, Finish
from teleops.store.agents import get_agent, list_agents
from teleops.store.commands import finish_command, in_flight_commands
from teleops.store.database import Database

__all__ = ["LostCommands"]

log = structlog.get_logger(__name__)


class LostCommands:
    def __init__(
        self,
        db: Database,
        *,
        clock: Clock,
        progress: CommandProgress,
        connected: Callable[[str], bool],
        elsewhere: Callable[[str], bool] | None = None,
        running_over_ssh: Callable[[int], bool],
        heartbeat_s: float,
        lost_after: timedelta,
    ) -> None:
        self._db = db
        self._clock = clock
        self.progress = progress
        self._connected = connected
        self._elsewhere = elsewhere
        self._running_over_ssh = running_over_ssh
        self._heartbeat_s = heartbeat_s
        self._lost_after = lost_after

    async def sweep(self) -> int:
        """End as `lost` every running command of the two cases in the module docstring. Returns how many."""
        now = self._clock()
        stale_after = timedelta(seconds=3 * self._heartbeat_s)
        ended = 0
        agents = {agent.name: agent for agent in await list_agents(self._db)}
        for command in await in_flight_commands(self._db):
            if self._connected(command.agent_name):
                ended += await self._silent(command, now)
                continue
            if self._running_over_ssh(command.id):
                continue
            agent = agents.get(command.agent_name) or await get_agent(self._db, command.agent_name)
            last_seen = agent.last_seen_at if agent is not None else None
            if self._elsewhere is not None:
                if self._elsewhere(command.agent_name):
                    continue  # connected to another replica, which watches it (commands/backend/routing.py)
            elif agent is not None and agent.online and last_seen is not None and now - last_seen < stale_after:
                continue  # connected to another controller process (one database, no routing)
            dispatched = command.dispatched_at or command.created_at
            since = last_seen or dispatched
            deadline = max(since, dispatched + timedelta(seconds=command.timeout_s)) + self._lost_after
            if now < deadline:
                continue
            reason = (
                f"agent {command.agent_name} unreachable since {since:%Y-%m-%d %H:%M:%S} UTC; "
                "outcome unknown — check the host"
            )
            ended += await self._end_lost(command, reason, now)
        return ended

    async def _silent(self, command: CommandRecord, now: datetime) -> int:
        """A command its agent started, still connected, with no result long after its timeout: the agent kills a
        command at its timeout and reports at once, so the command or its result was lost on the way (an agent
        bug, a result the database refused). End it `lost` rather than `running` forever; a result that still
        comes is recorded over it. Not started yet (queued on the agent behind its concurrency limit): left."""
        started = self.progress.started_at(command.id) or command.started_at
        if started is None or now < started + timedelta(seconds=command.timeout_s) + self._lost_after:
            return 0
        reason = (
            f"agent {command.agent_name} is connected but sent no result within the {command.timeout_s} s timeout "
            f"plus {self._lost_after.total_seconds():.0f} s; outcome unknown — check the host and the agent's log"
        )
        return await self._end_lost(command, reason, now)

    async def _end_lost(self, command: CommandRecord, reason: str, now: datetime) -> int:
        if not await finish_command(self._db, command.id, Finish(CommandStatus.LOST, reason=reason), now=now):
            return 0  # it ended meanwhile
        self.progress.finished(command.id)
        log.warning("command.lost", command_id=command.id, agent=command.agent_name, reason=reason)
        return 1
