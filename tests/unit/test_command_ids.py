"""Wire command ids: the row id, then the creation time in µs; parsed back to the row id (bare ids too)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from teleops.wire.command_ids import row_id_of, wire_command_id
from teleops.wire.messages import Exec

AT = datetime(2026, 12, 5, 22, 0, 0, 123456, tzinfo=UTC)


def test_the_same_row_created_at_another_time_has_another_id() -> None:
    assert wire_command_id(1, AT) != wire_command_id(1, AT + timedelta(microseconds=1))
    assert wire_command_id(1, AT) == wire_command_id(1, AT.astimezone())  # any zone, the same instant


@given(st.integers(min_value=1, max_value=10**18 - 1), st.datetimes(timezones=st.just(UTC)))
def test_an_id_parses_back_to_its_row_and_is_a_valid_wire_id(row: int, created_at: datetime) -> None:
    wire_id = wire_command_id(row, created_at)
    assert row_id_of(wire_id) == row
    Exec(command_id=wire_id, argv=["true"], timeout_s=1)  # the wire's own pattern and length accept it


def test_bare_and_foreign_ids() -> None:
    assert row_id_of("42") == 42  # sent by an older controller
    assert row_id_of("x.1") is None
    assert row_id_of("") is None
    assert row_id_of("9" * 19) is None
