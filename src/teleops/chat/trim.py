"""Cutting text to a length budget, always saying what was cut.

Budgets count UTF-16 code units, as Telegram does (never fewer than code points, so a text within a budget
is within it on every platform). The count in a marker is of characters (code points), as a person counts.
"""

from __future__ import annotations

from collections.abc import Sequence

from teleops.domain.text import ZWJ

__all__ = ["clip_body", "clip_head", "clip_tail", "count", "length", "more_characters", "share"]

ELLIPSIS = "…"


def length(text: str) -> int:
    """`text`'s length in UTF-16 code units (what Telegram's 4096 counts)."""
    return len(text.encode("utf-16-le")) // 2


def count(n: int, noun: str) -> str:
    """`3,976 characters`, `1 label`."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def more_characters(n: int) -> str:
    """The marker of a text cut at its end: `… 3,976 more characters`."""
    return f"{ELLIPSIS} {count(n, 'more character')}"


def _head(text: str, units: int) -> str:
    """The longest start of `text` within `units` code units (an emoji is never split in half)."""
    if units <= 0:
        return ""
    if len(text) == length(text):
        return text[:units]
    used = 0
    for at, char in enumerate(text):
        used += 2 if ord(char) > 0xFFFF else 1
        if used > units:
            return text[:at]
    return text


def _tail(text: str, units: int) -> str:
    """The longest end of `text` within `units` code units."""
    if units <= 0:
        return ""
    return _head(text[::-1], units)[::-1]


def clip_head(text: str, budget: int) -> str:
    """`text` within `budget`, its end replaced by "…" when cut (for short fields: a title, a label value)."""
    if length(text) <= budget:
        return text
    return _head(text, budget - 1).rstrip(ZWJ) + ELLIPSIS


def clip_body(text: str, budget: int) -> str:
    """`text` within `budget`, cut at its end with `… N more characters` saying how much is not shown.

    When `budget` cannot hold even the marker, the marker alone is returned (it may then exceed `budget`).
    """
    if length(text) <= budget:
        return text
    room = budget - len(more_characters(len(text)))  # the longest the marker can be
    kept = _head(text, room).rstrip(ZWJ)  # a joiner left at the cut would join nothing
    return kept + more_characters(len(text) - len(kept))


def clip_tail(text: str, budget: int) -> str:
    """The end of `text` within `budget`, led by `[N characters above not shown]` when its start is cut."""
    if length(text) <= budget:
        return text
    room = budget - len(_above(len(text)))
    kept = _tail(text, room)
    return _above(len(text) - len(kept)) + kept


def _above(n: int) -> str:
    return f"[{count(n, 'character')} above not shown]\n"


def share(room: int, needs: Sequence[int]) -> list[int]:
    """Split `room` among parts needing `needs`: a part needing less than an even share gets all it needs, and
    what it leaves goes to the others (water-filling). The shares never add up to more than `room`."""
    shares = [0] * len(needs)
    left, waiting = max(room, 0), sorted(range(len(needs)), key=lambda i: needs[i])
    while waiting:
        even = left // len(waiting)
        part = waiting.pop(0)
        shares[part] = min(needs[part], even)
        left -= shares[part]
    return shares
