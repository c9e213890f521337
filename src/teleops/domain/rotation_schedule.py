"""Who covers a rotation over a window: its shifts cut where overrides begin and end, in time order.

`Rotation.shift_at` answers for one instant; the week view and the calendar feeds need every change over days or
weeks. Walking from one change to the next with `shift_at` gives exactly the answers paging would give at each
instant, overrides included (an override wins over the regular shift; the first listed wins where two overlap).
"""

from __future__ import annotations

from datetime import datetime

from teleops.domain.rotation import Rotation, Shift

__all__ = ["coverage"]

# A rotation changes hands at most at slot starts and override edges; this bounds a window of a year of 1h shifts.
_MAX_SEGMENTS = 20_000


def coverage(rotation: Rotation, start: datetime, end: datetime) -> list[Shift]:
    """The shifts that cover [`start`, `end`), in order, each cut where an override begins or ends.

    The first shift keeps its real start (before `start` when it began earlier) and the last its real end, so a
    calendar shows whole shifts. Raises ValueError for naive times or an empty window.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("coverage needs timezone-aware times (e.g. datetime.now(UTC))")
    if end <= start:
        raise ValueError("coverage needs a window that ends after it starts")
    edges = sorted({edge for o in rotation.overrides for edge in (o.start, o.end)})
    result: list[Shift] = []
    moment = start
    while moment < end and len(result) < _MAX_SEGMENTS:
        shift = rotation.shift_at(moment)
        # The shift lasts until its own end or the next override edge after `moment`, whichever comes first.
        stop = min([shift.end, *(edge for edge in edges if edge > moment)])
        begin = moment if result else max([shift.start, *(edge for edge in edges if shift.start < edge <= moment)])
        result.append(Shift(shift.user, begin, stop, shift.overridden))
        moment = stop
    return result
