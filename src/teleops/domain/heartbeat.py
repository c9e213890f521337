"""Heartbeats in: a job that should check in every `interval` is missed once it has been silent interval + grace.

Pure rules; the monitor (server/heartbeats.py) reads the clock and the store and acts on what these say.

The one subtle rule is the restart: a controller that was down did not hear the pings sent meanwhile, so a
heartbeat is never due before one whole `interval` has passed since this controller started. Otherwise every
heartbeat would page the moment a controller comes back from an outage longer than interval + grace, although
the jobs were fine all along. A heartbeat that never pinged is due interval + grace after it was defined.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = [
    "HEARTBEAT_NAME",
    "HEARTBEAT_SOURCE",
    "HeartbeatState",
    "HeartbeatTiming",
    "age_text",
    "due_at",
    "heartbeat_fingerprint",
    "state_of",
]

# Names go into URL paths and chat; this is also what the Opsgenie ping path accepts.
HEARTBEAT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
HEARTBEAT_SOURCE = "heartbeat"  # the source of the incidents a missed heartbeat opens (routes may match it)


class HeartbeatState(enum.StrEnum):
    NEW = "new"  # defined, never pinged, not yet due
    UP = "up"  # pinged within interval + grace (or not due yet after a restart)
    LATE = "late"  # missed: its incident is open until the next ping


@dataclass(frozen=True, slots=True)
class HeartbeatTiming:
    """What the due time depends on."""

    interval: timedelta
    grace: timedelta
    created_at: datetime  # when the heartbeat was first defined (config sync or API)
    last_ping_at: datetime | None


def due_at(timing: HeartbeatTiming, *, started_at: datetime) -> datetime:
    """When the heartbeat is missed if no ping comes first:

    max(last ping (or creation) + interval + grace, this controller's start + interval).
    """
    heard = timing.last_ping_at if timing.last_ping_at is not None else timing.created_at
    return max(heard + timing.interval + timing.grace, started_at + timing.interval)


def state_of(*, last_ping_at: datetime | None, late: bool) -> HeartbeatState:
    """The state to show: late once the monitor recorded the miss (it stays late until the next ping); before
    that, new (never pinged) or up."""
    if late:
        return HeartbeatState.LATE
    return HeartbeatState.NEW if last_ping_at is None else HeartbeatState.UP


def heartbeat_fingerprint(name: str) -> str:
    """The fingerprint of the incident for `name`: stable, so a miss and its next ping name the same incident."""
    return f"heartbeat:{name}"


def age_text(seconds: float) -> str:
    """`42s`, `5m`, `3h 10m`, `2d 4h`: how long ago, for people."""
    whole = max(int(seconds), 0)
    if whole < 60:
        return f"{whole}s"
    minutes, _ = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"
