"""A command's record and its states, as every layer names them: `queued` (recorded) → `running` (marked
dispatched, committed before the exec is sent) → one terminal state. store/commands.py keeps them in SQL."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

__all__ = [
    "TERMINAL",
    "CommandNotFound",
    "CommandRecord",
    "CommandStatus",
    "Finish",
    "NewCommand",
    "NotThisAgentsCommand",
]


class CommandStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    KILLED = "killed"
    DENIED = "denied"
    LOST = "lost"


TERMINAL = frozenset(
    {
        CommandStatus.SUCCEEDED,
        CommandStatus.FAILED,
        CommandStatus.TIMED_OUT,
        CommandStatus.KILLED,
        CommandStatus.DENIED,
        CommandStatus.LOST,
    }
)


class NotThisAgentsCommand(LookupError):
    """An agent reported on a command that was not sent to it (another host's, or one never dispatched)."""

    def __init__(self, command_id: int, agent_name: str) -> None:
        super().__init__(f"command {command_id} was not sent to agent {agent_name}")
        self.command_id = command_id
        self.agent_name = agent_name


class CommandNotFound(LookupError):
    def __init__(self, command_id: int) -> None:
        super().__init__(f"command {command_id} does not exist; check the id returned by POST /api/v1/commands")
        self.command_id = command_id


@dataclass(frozen=True, slots=True)
class CommandRecord:
    id: int
    requester: str
    host: str
    agent_name: str
    argv: list[str]
    status: str
    timeout_s: int
    incident_id: int | None
    exit_code: int | None
    signal: int | None
    output: str
    output_bytes: int
    truncated: bool
    reason: str | None
    created_at: datetime
    dispatched_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    sealed_argv: str | None = field(default=None, repr=False)  # the original argv, sealed; see sealed_argv.py

    @property
    def duration_s(self) -> float | None:
        begin = self.started_at or self.dispatched_at
        if begin is None or self.finished_at is None:
            return None
        return max(0.0, (self.finished_at - begin).total_seconds())


@dataclass(frozen=True, slots=True)
class Finish:
    """A terminal outcome to record."""

    status: CommandStatus
    reason: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    output: str | None = None  # None keeps what was streamed so far
    output_bytes: int | None = None
    truncated: bool | None = None
    duration_s: float | None = None
    started_at: datetime | None = None  # when the start was not written yet (it arrived with the result)


@dataclass(frozen=True, slots=True)
class NewCommand:
    """A command to record: `argv` as it may be shown and kept, `sealed_argv` its original when that differs."""

    requester: str
    host: str
    agent_name: str
    argv: list[str]
    timeout_s: int
    incident_id: int | None = None
    sealed_argv: str | None = None
