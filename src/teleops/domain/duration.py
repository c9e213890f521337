"""Durations as people write them in config and chat: `30s`, `10m`, `2h`, `7d`.

`Duration` is one such text, parsed once: its length (`.seconds`, `.timedelta`) together with the text as it was
written (`str()`, `.text`), so messages and dumps keep saying "5m" rather than "300.0". Config fields hold
`Duration`s (teleops.config.duration gives them their pydantic type); text typed at run time (`/snooze 2h`, a REST
`timeout`) goes through `parse_duration` where it arrives.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, NoReturn

__all__ = ["Duration", "parse_duration"]

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


class Duration:
    """An immutable length of time written as text (`Duration("5m")`). Raises ValueError (the same message as
    `parse_duration`) when the text is not a duration. Equal when written the same way: "60s" != "1m"."""

    __slots__ = ("_seconds", "_text")
    _seconds: float
    _text: str

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            # Numbers are not durations here: config asks for a unit ("30s"), as it always has.
            raise TypeError(f"a Duration is written as text like 30s, not {type(text).__name__} {text!r}")
        object.__setattr__(self, "_seconds", parse_duration(text))
        object.__setattr__(self, "_text", text)

    @property
    def seconds(self) -> float:
        """As `parse_duration` gives them: a whole number (an int) for s, m, h and d, a fraction for ms."""
        return self._seconds

    @property
    def timedelta(self) -> timedelta:
        return timedelta(seconds=self._seconds)

    @property
    def text(self) -> str:
        """The text as written, spaces included (what a dump of the config gives back)."""
        return self._text

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"Duration({self._text!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Duration):
            return NotImplemented
        return self._text == other._text

    def __hash__(self) -> int:
        return hash(self._text)

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError(f"Duration is immutable; make a new one, e.g. Duration({value!r})")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("Duration is immutable")

    def __reduce__(self) -> tuple[type[Duration], tuple[str]]:
        # copy, deepcopy and pickle rebuild it from its text (the default would set the slots one by one).
        return (Duration, (self._text,))
