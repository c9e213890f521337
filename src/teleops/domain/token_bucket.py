"""A token bucket counted in alerts, with debt. Pure; stdlib only; time is given, never read.

The bucket holds up to `capacity` alerts' worth and refills at `rate` per second. A request is admitted while
the bucket holds at least one alert's worth; once admitted it is charged what it carried, which may take the
bucket below zero (a debt). So a batch larger than the burst still gets through once, and the sender then waits
until the debt is paid: over any stretch of T seconds at most `capacity + rate * T` alerts, plus the last
admitted batch, get in (property-tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["TokenBucket"]


@dataclass(slots=True)
class TokenBucket:
    rate: float  # alerts per second
    capacity: float
    level: float
    at: float  # seconds (any monotonic origin) when `level` was last brought up to date

    @classmethod
    def full(cls, *, rate: float, capacity: float, now: float) -> TokenBucket:
        if rate <= 0 or capacity < 1:
            raise ValueError(f"a token bucket needs rate > 0 and capacity >= 1, not {rate} and {capacity}")
        return cls(rate=rate, capacity=capacity, level=capacity, at=now)

    def _refill(self, now: float) -> None:
        if now > self.at:  # a clock that stepped back refills nothing (and takes nothing)
            self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
            self.at = now

    def wait(self, now: float) -> float:
        """Seconds until a request is admitted: 0.0 when one is admitted now."""
        self._refill(now)
        return 0.0 if self.level >= 1 else (1 - self.level) / self.rate

    def charge(self, alerts: int, now: float) -> None:
        """Take what an admitted request carried (at least one alert's worth)."""
        self._refill(now)
        self.level -= max(1, alerts)

    def is_full(self, now: float) -> bool:
        """True when the bucket has refilled to its capacity: the sender stayed under its rate long enough."""
        self._refill(now)
        return self.level >= self.capacity

    @staticmethod
    def retry_after(wait: float) -> int:
        """Whole seconds for a Retry-After header (never 0: a sender told 0 comes straight back)."""
        return max(1, math.ceil(wait))
