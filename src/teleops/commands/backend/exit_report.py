"""What an agent's exit report means for the command: its terminal status and stored fields."""

from __future__ import annotations

from teleops.domain.command import CommandStatus, Finish
from teleops.wire import Exit

__all__ = ["finish_of_exit", "status_of_exit"]


def status_of_exit(exit_: Exit) -> CommandStatus:
    """timed out → timed_out; cancelled or killed by a signal → killed; 0 → succeeded; else failed."""
    if exit_.timed_out:
        return CommandStatus.TIMED_OUT
    if exit_.cancelled or exit_.signal is not None:
        return CommandStatus.KILLED
    return CommandStatus.SUCCEEDED if exit_.exit_code == 0 else CommandStatus.FAILED


def finish_of_exit(exit_: Exit, *, agent: str, late: bool = False) -> Finish:
    status = status_of_exit(exit_)
    reason: str | None = None
    if status is CommandStatus.TIMED_OUT:
        reason = f"timed out on {agent}; the process group was killed"
    elif exit_.cancelled:
        reason = "cancelled on request; the process group was killed"
    elif exit_.signal is not None:
        reason = f"killed by signal {exit_.signal}"
    if late:
        # The agent was unreachable for a while; say so, the person may have seen `lost` earlier.
        reason = "result reported after the agent reconnected" + (f"; {reason}" if reason else "")
    return Finish(
        status=status,
        reason=reason,
        exit_code=exit_.exit_code,
        signal=exit_.signal,
        output=exit_.output,
        output_bytes=exit_.output_bytes,
        truncated=exit_.truncated,
        duration_s=exit_.duration_s,
    )
