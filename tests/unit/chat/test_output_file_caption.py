"""The caption of the output file posted to chat says what the file holds: all the output, or which part of it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from teleops.agent.output import CappedOutput
from teleops.chat.commands import output_file_caption
from teleops.domain.command import CommandRecord

NOW = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
CAP = 64 * 1024

RECORD = CommandRecord(
    id=12, requester="alice", host="web-1", agent_name="web-1", argv=["journalctl", "-u", "nginx"],
    status="succeeded", timeout_s=60, incident_id=None, exit_code=0, signal=None, output="…", output_bytes=20_040,
    truncated=False, reason=None, created_at=NOW, dispatched_at=NOW, started_at=NOW, finished_at=NOW,
)  # fmt: skip


def test_output_within_the_cap_is_the_full_output_with_its_size() -> None:
    assert output_file_caption(RECORD, CAP) == "Full output of command 12 (20,040 bytes)"


def test_capped_output_says_which_bytes_of_how_many_the_file_holds() -> None:
    capped = replace(RECORD, output_bytes=1_234_567, truncated=True)

    caption = output_file_caption(capped, CAP)

    assert caption == (
        "Output of command 12: the first 32,768 and the last 32,768 of 1,234,567 bytes; "
        "the 1,169,031 between them were cut"
    )
    assert "Full output" not in caption


def test_the_sizes_are_the_ones_the_agent_keeps() -> None:
    buffer = CappedOutput(1025)
    buffer.feed(b"x" * 5000)
    capped = replace(RECORD, output_bytes=buffer.total, truncated=buffer.truncated)

    caption = output_file_caption(capped, 1025)

    assert buffer.dropped == 3975  # what the agent's buffer really cut: the caption's numbers are its numbers
    expected = "Output of command 12: the first 512 and the last 513 of 5,000 bytes; the 3,975 between them were cut"
    assert caption == expected


def test_a_cap_raised_since_the_command_ran_gives_no_made_up_sizes() -> None:
    capped = replace(RECORD, output_bytes=70_000, truncated=True)

    caption = output_file_caption(capped, 128 * 1024)

    assert caption == "Output of command 12: the start and the end of its 70,000 bytes; the middle was cut"


def test_a_command_that_ended_without_a_result_has_only_what_streamed_before() -> None:
    lost = replace(RECORD, status="lost", output_bytes=0, exit_code=None)

    caption = output_file_caption(lost, CAP)

    assert caption == "Output of command 12 received before it ended (lost); the rest is not known"
