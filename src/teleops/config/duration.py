"""Durations as people write them in config and chat: `30s`, `10m`, `2h`, `7d`."""

from __future__ import annotations

import re

__all__ = ["parse_duration"]

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str | int | float) -> float:
    """`30s`, `10m`, `2h`, `7d` (or plain seconds) -> seconds. Raises ValueError with the accepted forms."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a duration; write it like 30s, 10m, 2h or 7d")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
