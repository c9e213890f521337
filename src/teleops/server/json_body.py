"""Strict JSON for untrusted bodies: what Python's json module tolerates, a monitoring sender never sends."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["BadJSON", "loads_strict"]

MAX_DEPTH = 64
MAX_INT_DIGITS = 64


class BadJSON(ValueError):
    """The body is not acceptable JSON; the message says why (answered as 400)."""


def _no_constants(name: str) -> Any:
    raise BadJSON(f"{name} is not valid JSON; send numbers as finite values")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise BadJSON(f"duplicate key {key[:64]!r} in a JSON object")
        out[key] = value
    return out


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise BadJSON(f"integer with {len(text)} digits is too large")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise BadJSON("number out of range")
    return value


def loads_strict(body: bytes) -> Any:
    """Parse UTF-8 JSON, refusing duplicate keys, NaN/Infinity, huge numbers and deep nesting."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadJSON(f"body is not UTF-8 (bad byte at offset {exc.start})") from exc
    if text.startswith("\ufeff"):
        text = text[1:]
    _check_depth(text)
    try:
        return json.loads(
            text, object_pairs_hook=_pairs, parse_constant=_no_constants, parse_int=_int, parse_float=_float
        )
    except BadJSON:
        raise
    except RecursionError as exc:
        raise BadJSON(f"JSON nested deeper than {MAX_DEPTH} levels") from exc
    except ValueError as exc:
        raise BadJSON(f"malformed JSON: {exc}") from exc


def _check_depth(text: str) -> None:
    """Reject deep nesting before the parser recurses (a scan that skips string contents)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return  # cannot nest deeper than the brackets it has: the common, small body
    depth = 0
    in_string = False
    escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise BadJSON(f"JSON nested deeper than {MAX_DEPTH} levels")
        elif char in "]}":
            depth -= 1
