"""What the On call page shows, built from the directory at an instant: pure, so it is tested without a browser.

Per rotation: who is on call now and who next (with the handoff time), a seven-day view in the rotation's time zone
(who covers each day, overrides marked), the escalation policies that page it as a readable chain, and its
overrides, those from teleops.yaml (read-only) and those made here (removable). Also who may change what: admins
anything; a member of a rotation may cover it themselves, and remove an override that names them or that they made.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from teleops.config.oncall import DEFAULT_TEAM
from teleops.domain.rotation import Rotation
from teleops.domain.rotation_schedule import coverage
from teleops.oncall.directory import OnCallDirectory
from teleops.oncall.escalation import Step
from teleops.store.oncall_overrides import StoredOverride

__all__ = [
    "BoardOverride",
    "DayCover",
    "RotationBoard",
    "build_board",
    "chain_text",
    "may_cover",
    "may_remove",
    "parse_form_time",
]

WEEK_DAYS = 7


@dataclass(frozen=True, slots=True)
class Cover:
    user: str
    start: str  # local "HH:MM"
    end: str  # local "HH:MM", "24:00" at the day's end
    overridden: bool


@dataclass(frozen=True, slots=True)
class DayCover:
    day: date
    covers: tuple[Cover, ...]


@dataclass(frozen=True, slots=True)
class BoardOverride:
    user: str
    start: datetime
    end: datetime
    from_config: bool
    id: int | None = None  # stored overrides only
    created_by: str = ""
    removable: bool = False


@dataclass(frozen=True, slots=True)
class RotationBoard:
    name: str
    tz: str
    members: tuple[str, ...]
    current: str
    overridden: bool
    until: datetime
    next: str
    week: tuple[DayCover, ...]
    chains: tuple[tuple[str, tuple[str, ...], int], ...]  # (team, step lines, repeat)
    overrides: tuple[BoardOverride, ...]
    may_cover: bool
    default_start: str  # for the form's datetime-local inputs, in the rotation's zone
    default_end: str


def may_cover(*, actor: str, admin: bool, rotation: Rotation, cover: str) -> bool:
    """Whether `actor` may add an override of `rotation` in which `cover` is on call."""
    return admin or (actor in rotation.members and cover == actor)


def may_remove(*, actor: str, admin: bool, rotation: Rotation, override: StoredOverride) -> bool:
    """Whether `actor` may remove a stored override of `rotation`."""
    return admin or (actor in rotation.members and actor in (override.user, override.created_by))


def _after(delay: timedelta) -> str:
    seconds = int(delay.total_seconds())
    if seconds <= 0:
        return "at once"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"after {seconds // size}{unit}"
    return f"after {seconds}s"


def _target(target: str, directory: OnCallDirectory, at: datetime) -> str:
    kind, _, name = target.partition(":")
    if kind == "rotation":
        rotation = directory.rotations.get(name)
        return f"page the on-call of {name}" + (f" (now {rotation.on_call(at)})" if rotation else " (not configured)")
    if kind == "user":
        return f"page {name}"
    return f"post to {kind} {name}"


def chain_text(steps: Sequence[Step], directory: OnCallDirectory, at: datetime) -> tuple[str, ...]:
    """ "1. at once: page the on-call of ops (now alice)", "2. after 5m: page bob", …"""
    return tuple(
        f"{number}. {_after(step.after)}: {_target(step.notify, directory, at)}"
        for number, step in enumerate(steps, start=1)
    )


def parse_form_time(text: str, zone: str) -> datetime:
    """A time from the form: ISO 8601 with an offset, or a local time (the form's datetime-local) in `zone`.

    Raises ValueError saying how to write it."""
    value = text.strip()
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(
            f"{value or 'an empty value'!r} is not a time; write it like 2026-11-24T18:00 (in {zone}) "
            "or 2026-11-24T18:00+01:00"
        ) from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=ZoneInfo(zone))


def _local_minutes(at: datetime, zone: ZoneInfo) -> str:
    return at.astimezone(zone).strftime("%Y-%m-%dT%H:%M")


def _week(rotation: Rotation, now: datetime) -> tuple[DayCover, ...]:
    zone = ZoneInfo(rotation.tz)
    today = now.astimezone(zone).date()
    days = []
    for offset in range(WEEK_DAYS):
        day = today + timedelta(days=offset)
        begin = datetime.combine(day, time(0), zone)
        end = datetime.combine(day + timedelta(days=1), time(0), zone)
        covers = []
        for shift in coverage(rotation, begin, end):
            start = max(shift.start, begin).astimezone(zone).strftime("%H:%M")
            stop = "24:00" if shift.end >= end else shift.end.astimezone(zone).strftime("%H:%M")
            covers.append(Cover(shift.user, start, stop, shift.overridden))
        days.append(DayCover(day, tuple(covers)))
    return tuple(days)


def build_board(directory: OnCallDirectory, now: datetime, *, actor: str, admin: bool) -> list[RotationBoard]:
    """The page's data for every rotation, as `actor` sees it (with the stored overrides already loaded)."""
    boards = []
    for name, rotation in directory.rotations.items():
        zone = ZoneInfo(rotation.tz)
        shift = rotation.shift_at(now)
        until, following = rotation.next_handoff(now)
        chains = []
        for team, (steps, repeat) in directory.policies.items():
            if any(step.notify == f"rotation:{name}" for step in steps):
                chains.append((team if team != DEFAULT_TEAM else "default", chain_text(steps, directory, now), repeat))
        overrides = [
            BoardOverride(o.user, o.start, o.end, False, id=o.id, created_by=o.created_by,
                          removable=may_remove(actor=actor, admin=admin, rotation=rotation, override=o))
            for o in directory.stored_overrides
            if o.rotation == name and o.end > now
        ]  # fmt: skip
        configured = directory.configured_rotations[name]
        overrides += [BoardOverride(o.user, o.start, o.end, True) for o in configured.overrides if o.end > now]
        overrides.sort(key=lambda o: o.start)
        boards.append(
            RotationBoard(
                name=name,
                tz=rotation.tz,
                members=tuple(rotation.members),
                current=shift.user,
                overridden=shift.overridden,
                until=until,
                next=following,
                week=_week(rotation, now),
                chains=tuple(chains),
                overrides=tuple(overrides),
                may_cover=admin or actor in rotation.members,
                default_start=_local_minutes(now, zone),
                default_end=_local_minutes(until if until > now else now + timedelta(days=1), zone),
            )
        )
    return boards
