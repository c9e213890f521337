"""The `heartbeats:` list: jobs that must check in, and how long TeleOps waits before it pages about one.

```yaml
heartbeats:
  - {name: nightly-backup, interval: 24h, grace: 30m, labels: {team: storage}}
  - {name: watchdog, interval: 5m}        # Alertmanager's Watchdog (docs/heartbeats.md)
```

Heartbeats defined here are synced into the database at start (server/heartbeats.py) and cannot be changed or
deleted through the API; `PUT /api/v1/heartbeats/{name}` defines more at run time.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from teleops.config.duration import Duration, DurationSetting

__all__ = ["MAX_INTERVAL_S", "HeartbeatSettings", "HeartbeatSpec", "HeartbeatsList"]

MAX_INTERVAL_S = 90 * 86400  # a quarter: longer is a calendar reminder, not a heartbeat
HeartbeatSeverity = Literal["critical", "error", "warning", "info"]


class HeartbeatSpec(BaseModel):
    """What a heartbeat is, without its name: the body of `PUT /api/v1/heartbeats/{name}` too."""

    model_config = ConfigDict(extra="forbid")

    interval: DurationSetting = Field(description="How often the job pings, e.g. 5m, 1h, 24h.")
    grace: DurationSetting = Field(
        default="1m",
        validate_default=True,
        description="How much later than `interval` a ping may come before it pages.",
    )
    severity: HeartbeatSeverity = "critical"
    labels: dict[str, Annotated[str, Field(max_length=256)]] = Field(
        default_factory=dict, max_length=32, description="Labels of the incident, matched by on-call routes."
    )
    description: str = Field(default="", max_length=2000, description="What the job is and what to do if missed.")

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: Duration) -> Duration:
        if not 1 <= value.seconds <= MAX_INTERVAL_S:
            raise ValueError(f"{value.text!r} is out of range; use between 1s and 90d, e.g. 5m or 24h")
        return value

    @field_validator("grace")
    @classmethod
    def _grace(cls, value: Duration) -> Duration:
        if not 0 <= value.seconds <= MAX_INTERVAL_S:
            raise ValueError(f"{value.text!r} is out of range; use between 0s and 90d, e.g. 1m")
        return value


class HeartbeatSettings(HeartbeatSpec):
    """One entry of `heartbeats:`."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", min_length=1, max_length=128)


def _unique_names(value: list[HeartbeatSettings]) -> list[HeartbeatSettings]:
    seen: set[str] = set()
    for item in value:
        if item.name in seen:
            raise ValueError(f"heartbeat {item.name!r} is defined twice; give each heartbeat its own name")
        seen.add(item.name)
    return value


HeartbeatsList = Annotated[list[HeartbeatSettings], AfterValidator(_unique_names)]
