"""The routing_key scan over a body's first 4 KiB (server/body_token.py): the top-level key only, whole, plain."""

from __future__ import annotations

import json

import pytest

from teleops.server.body_token import PREFIX_BYTES, leading_field


@pytest.mark.parametrize(
    ("prefix", "found"),
    [
        (b'{"routing_key": "R1", "payload": {}}', "R1"),
        (b'  {\n  "routing_key" :\t"R1"', "R1"),  # the value is whole; the rest of the body may be cut
        (b'{"payload": {"routing_key": "inner"}, "routing_key": "R2"}', "R2"),  # a nested one is not the sender's
        (b'{"a": ["routing_key", {"routing_key": "x"}], "routing_key": "R3"}', "R3"),
        (b'{"note": "\\"routing_key\\": \\"x\\"", "routing_key": "R4"}', "R4"),  # inside a string: text, not a key
        (b'{"a": "routing_key", "routing_key": "R5"}', "R5"),  # a value that looks like the key
        (b'{"routing_key": "R6', None),  # cut by the prefix
        (b'{"routing_key": "R\\u0036"}', None),  # escapes: a token never needs them
        (b'{"routing_key": 7}', None),
        (b'{"payload": {"routing_key": "inner"}}', None),
        (b'{"a": 1} {"routing_key": "R"}', None),  # the object ended first
        (b'[{"routing_key": "R"}]', None),
        (b"", None),
        (b'{"routing_key": "\xff\xfe"}', None),  # not UTF-8
    ],
)
def test_leading_field(prefix: bytes, found: str | None) -> None:
    assert leading_field(prefix, "routing_key") == found


def test_a_key_past_the_prefix_is_not_found() -> None:
    body = json.dumps({"payload": {"custom_details": {"pad": "x" * PREFIX_BYTES}}, "routing_key": "R"}).encode()
    assert leading_field(body, "routing_key") == "R"  # whole body
    assert leading_field(body[:PREFIX_BYTES], "routing_key") is None  # what the front door reads
