"""A command's identity on the wire: `<row id>.<creation time in µs, base 36>`, e.g. `42.lx3v9k2q1a`.

The agent remembers every command id it accepted, across restarts, and never runs one twice (at-most-once).
A bare row id is reused by another controller database, or by this one restored from an older backup, so an
agent that served either refused their new commands as "already received here". The creation time makes the
id unique across controller databases and restores while staying a pure function of the command's row, so
the controller can tell a result of its own command 42 from one of another controller's 42 (command_ownership).
A replayed exec carries the same id and is still refused. Ids without the suffix (sent before this format)
are read as their row id.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["row_id_of", "wire_command_id"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(number: int) -> str:
    text = ""
    while True:
        number, digit = divmod(number, 36)
        text = _DIGITS[digit] + text
        if number == 0:
            return text


def wire_command_id(row_id: int, created_at: datetime) -> str:
    """The id an exec for command `row_id` (created at `created_at`, timezone-aware) carries."""
    micros = (created_at.astimezone(UTC) - _EPOCH) // timedelta(microseconds=1)
    return f"{row_id}.{_base36(max(micros, 0))}"


def row_id_of(wire_id: str) -> int | None:
    """The controller row id a wire id names, or None when it is not one of ours."""
    head, _, _suffix = wire_id.partition(".")
    return int(head) if head.isdigit() and len(head) < 19 else None
