"""Who is on call at an instant: rotations with shifts, handoff times in a time zone (DST-correct), overrides.

Handoffs happen at local wall-clock times: a daily 09:00 handoff in Europe/Berlin stays at 09:00 across
daylight-saving changes, so a shift can last 23 or 25 hours of real time. Shift lengths are whole days, or
divide a day evenly (1h, 2h, 3h, 4h, 6h, 8h, 12h): anything else has no stable local handoff time.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["Override", "Rotation", "RotationError", "Shift", "parse_handoff"]

_DAY = 86400
_UTC = ZoneInfo("UTC")
_WEEKDAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
_HANDOFF = re.compile(r"^\s*(?:(?P<day>[A-Za-z]{3})[a-z]*\s+)?(?P<h>\d{1,2}):(?P<m>\d{2})\s*$")
# Slot numbers count from here; any fixed date works, it only sets the phase of the member order.
DEFAULT_START = date(2024, 1, 1)


class RotationError(ValueError):
    """The rotation cannot work as written; the message says which part and how to write it."""


def parse_handoff(text: str) -> tuple[int | None, time]:
    """`"Mon 09:00"` -> (0, 09:00); `"09:00"` -> (None, 09:00). Raises RotationError."""
    match = _HANDOFF.match(text)
    if not match:
        raise RotationError(f"handoff {text!r}: write it like 'Mon 09:00' or '09:00'")
    weekday = None
    if match.group("day"):
        weekday = _WEEKDAYS.get(match.group("day").lower())
        if weekday is None:
            raise RotationError(f"handoff {text!r}: unknown weekday; use Mon, Tue, Wed, Thu, Fri, Sat or Sun")
    hour, minute = int(match.group("h")), int(match.group("m"))
    if hour > 23 or minute > 59:
        raise RotationError(f"handoff {text!r}: no such time of day")
    return weekday, time(hour, minute)


@dataclass(frozen=True, slots=True)
class Override:
    """`user` is on call instead of the rotation from `start` (inclusive) to `end` (exclusive)."""

    user: str
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class Shift:
    user: str
    start: datetime
    end: datetime
    overridden: bool = False


@dataclass(frozen=True, slots=True)
class Rotation:
    name: str
    members: Sequence[str]
    shift_seconds: int
    handoff: str = "Mon 09:00"
    tz: str = "UTC"
    start: date = DEFAULT_START
    overrides: Sequence[Override] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.members:
            raise RotationError(f"rotation {self.name!r}: needs at least one member")
        if self.shift_seconds <= 0:
            raise RotationError(f"rotation {self.name!r}: shift must be positive")
        if self.shift_seconds % _DAY and _DAY % self.shift_seconds:
            raise RotationError(
                f"rotation {self.name!r}: a shift must be whole days or divide a day evenly (e.g. 8h, 12h, 1d, 7d)"
            )
        weekday, _ = parse_handoff(self.handoff)
        if weekday is not None and self.shift_seconds % (7 * _DAY):
            raise RotationError(
                f"rotation {self.name!r}: a handoff on a weekday ({self.handoff}) needs a shift of whole weeks"
            )
        try:
            ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise RotationError(
                f"rotation {self.name!r}: unknown time zone {self.tz!r} (e.g. UTC, Europe/Berlin)"
            ) from exc
        for override in self.overrides:
            if override.end <= override.start:
                raise RotationError(f"rotation {self.name!r}: override for {override.user} ends before it starts")

    # -- the pure questions -------------------------------------------------------------------------------

    def on_call(self, at: datetime) -> str:
        """The one person on call at instant `at` (timezone-aware)."""
        return self.shift_at(at).user

    def shift_at(self, at: datetime) -> Shift:
        """The shift containing `at`: overrides first, else the rotation's regular shift."""
        _require_aware(at)
        for override in self.overrides:
            if override.start <= at < override.end:
                return Shift(override.user, override.start, override.end, overridden=True)
        slot = self._slot_at(at)
        return Shift(self._member(slot), self._slot_start(slot), self._slot_start(slot + 1))

    def next_handoff(self, at: datetime) -> tuple[datetime, str]:
        """When the person on call next changes after `at`, and who takes over."""
        _require_aware(at)
        current = self.on_call(at)
        moment = at
        # At most one full cycle of members plus the overrides can pass without a change of person.
        for _ in range(len(self.members) * 2 + 2 * len(self.overrides) + 2):
            moment = self._next_boundary(moment)
            person = self.on_call(moment)
            if person != current:
                return moment, person
        return moment, self.on_call(moment)  # a one-member rotation: the handoff is to the same person

    # -- slot arithmetic in local wall-clock time ---------------------------------------------------------

    @property
    def _zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    @property
    def _handoff(self) -> tuple[int | None, time]:
        return parse_handoff(self.handoff)

    def _anchor(self) -> date:
        """The first handoff date on or after `start` (on the handoff weekday when one is given)."""
        weekday, _ = self._handoff
        if weekday is None:
            return self.start
        return self.start + timedelta(days=(weekday - self.start.weekday()) % 7)

    def _slots_per_day(self) -> int:
        return _DAY // self.shift_seconds if self.shift_seconds < _DAY else 0

    def _slot_at(self, at: datetime) -> int:
        """The slot containing instant `at`: estimated from local wall time, then settled on instants.

        The settling matters only around DST changes, where wall time repeats or skips.
        """
        slot = self._estimate_slot(at)
        while self._slot_start(slot) > at:
            slot -= 1
        while self._slot_start(slot + 1) <= at:
            slot += 1
        return slot

    def _estimate_slot(self, at: datetime) -> int:
        local = at.astimezone(self._zone).replace(tzinfo=None)
        _, handoff = self._handoff
        anchor = datetime.combine(self._anchor(), handoff)
        per_day = self._slots_per_day()
        if per_day:
            # Sub-day shifts: boundaries at handoff + k*shift local time, every day.
            day_start = datetime.combine(local.date(), handoff)
            if local < day_start:
                day_start -= timedelta(days=1)
            days = (day_start.date() - anchor.date()).days
            within = int((local - day_start).total_seconds()) // self.shift_seconds
            return days * per_day + min(within, per_day - 1)
        days_per_shift = self.shift_seconds // _DAY
        boundary_date = local.date() if local.time() >= handoff else local.date() - timedelta(days=1)
        return (boundary_date - anchor.date()).days // days_per_shift

    def _slot_start(self, slot: int) -> datetime:
        _, handoff = self._handoff
        per_day = self._slots_per_day()
        if per_day:
            days, index = divmod(slot, per_day)
            local = datetime.combine(self._anchor() + timedelta(days=days), handoff) + timedelta(
                seconds=index * self.shift_seconds
            )
        else:
            local = datetime.combine(self._anchor() + timedelta(days=slot * (self.shift_seconds // _DAY)), handoff)
        return _localize(local, self._zone)

    def _member(self, slot: int) -> str:
        return self.members[slot % len(self.members)]

    def _next_boundary(self, at: datetime) -> datetime:
        """The next instant after `at` where the answer may change: a slot start or an override edge."""
        candidates = [self._slot_start(self._slot_at(at) + 1)]
        candidates += [o.start for o in self.overrides if o.start > at]
        candidates += [o.end for o in self.overrides if o.end > at]
        return min(candidates)


def _localize(local: datetime, zone: ZoneInfo) -> datetime:
    """Local wall time -> aware instant (UTC). A repeated wall time (fall back) is its first occurrence; a
    skipped one (spring forward) is the instant the clock jumped, the first whose wall time is not earlier."""
    aware = local.replace(tzinfo=zone).astimezone(_UTC)
    if _wall(aware, zone) == local:
        return aware
    # Inside a DST gap: fold=0 put us after the jump; walk back to the jump, minute by minute (gaps are short).
    step = timedelta(minutes=1)
    for _ in range(24 * 60):
        if _wall(aware - step, zone) < local:
            return aware
        aware -= step
    return aware


def _wall(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def _require_aware(at: datetime) -> None:
    if at.tzinfo is None:
        raise ValueError("on-call questions need a timezone-aware time (e.g. datetime.now(UTC))")
