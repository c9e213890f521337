"""An agent's exit report → the command's terminal status."""

from __future__ import annotations

import pytest

from teleops.commands.backend.exit_report import finish_of_exit, status_of_exit
from teleops.domain.command import CommandStatus
from teleops.wire import Exit


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"exit_code": 0}, CommandStatus.SUCCEEDED),
        ({"exit_code": 1}, CommandStatus.FAILED),
        ({"exit_code": 127}, CommandStatus.FAILED),
        ({"exit_code": 124, "timed_out": True, "signal": 15}, CommandStatus.TIMED_OUT),
        ({"exit_code": 137, "signal": 9}, CommandStatus.KILLED),
        ({"exit_code": 143, "signal": 15, "cancelled": True}, CommandStatus.KILLED),
    ],
)
def test_exit_reports_map_to_one_terminal_status(fields: dict[str, object], status: CommandStatus) -> None:
    assert status_of_exit(Exit.model_validate({"command_id": "1", **fields})) is status


def test_a_late_result_says_it_came_after_a_reconnect() -> None:
    finish = finish_of_exit(Exit(command_id="1", exit_code=0, output="ok\n", output_bytes=3), agent="web-1", late=True)
    assert finish.status is CommandStatus.SUCCEEDED
    assert finish.reason == "result reported after the agent reconnected"
    assert (finish.output, finish.output_bytes) == ("ok\n", 3)


def test_a_timeout_reason_names_the_agent() -> None:
    finish = finish_of_exit(Exit(command_id="1", exit_code=124, timed_out=True), agent="web-1")
    assert finish.reason == "timed out on web-1; the process group was killed"
