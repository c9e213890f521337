from __future__ import annotations

import pytest

from teleops.server.json_body import BadJSON, loads_strict


def test_plain_json_parses() -> None:
    assert loads_strict(b'{"a": [1, 2.5, "x", null, true]}') == {"a": [1, 2.5, "x", None, True]}


def test_a_byte_order_mark_is_tolerated() -> None:
    assert loads_strict('\ufeff{"a": 1}'.encode()) == {"a": 1}


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"a": 1, "a": 2}', "duplicate key"),
        (b'{"a": NaN}', "NaN"),
        (b'{"a": Infinity}', "Infinity"),
        (b'{"a": -Infinity}', "-Infinity"),
        (b'{"a": 1e400}', "out of range"),
        (b'{"a": ' + b"9" * 500 + b"}", "too large"),
        (b"[" * 100 + b"]" * 100, "nested deeper"),
        (b"[" * 100_000, "nested deeper"),
        (b'{"a": "\xff"}', "not UTF-8"),
        (b'{"a": ', "malformed"),
        (b"", "malformed"),
    ],
)
def test_hostile_json_is_refused_with_the_reason(body: bytes, why: str) -> None:
    with pytest.raises(BadJSON, match=why):
        loads_strict(body)


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = '{"a": "' + "[" * 1000 + '"}'
    assert loads_strict(text.encode()) == {"a": "[" * 1000}
