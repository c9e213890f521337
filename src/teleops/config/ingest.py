"""The `ingest:` section: how many alerts each ingest token may send per source before it is answered 429.

Each (ingest token, source) pair has its own token bucket (teleops.server.ingest_limits): `alerts` per `per`
refill it, up to `burst`. A request is admitted while the bucket holds at least one alert's worth, and then
costs as many as it carried. `null` (or `off`) switches the limit off. `limits` holds one entry per source
(defaults in DEFAULT_LIMITS, so a config names only what it changes); `tokens` overrides them for one ingest
token by its name, on every source it sends to. docs/ingest-limits.md explains the defaults sender by sender.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from teleops.config.duration import Duration, DurationSetting
from teleops.sources.registry import SOURCES

__all__ = ["DEFAULT_LIMITS", "IngestSettings", "RateLimit"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RateLimit(_Section):
    alerts: int = Field(ge=1, description="alerts admitted per `per`, on average")
    per: DurationSetting = Field("1m", validate_default=True)
    burst: int | None = Field(
        default=None, ge=1, description="alerts admitted at once after a quiet spell; default: alerts"
    )

    @field_validator("per")
    @classmethod
    def _per_is_duration(cls, value: Duration) -> Duration:
        if value.seconds <= 0:
            raise ValueError(f"{value.text!r} is not a positive duration; write e.g. 1m or 10s")
        return value

    @property
    def per_second(self) -> float:
        return self.alerts / self.per.seconds

    @property
    def capacity(self) -> int:
        return self.burst if self.burst is not None else self.alerts


# Alertmanager and Grafana send a whole alert group at once and send it again at every group_interval while it
# fires (a 4xx is not retried at once: docs/ingest-limits.md), so their limit is generous: far above any
# normal resend rate, still a ceiling for a flood. Senders that post one request per event get a sane default.
_GENEROUS = RateLimit(alerts=20000, per="1m")
_ONE_PER_EVENT = RateLimit(alerts=1200, per="1m")
DEFAULT_LIMITS: dict[str, RateLimit | None] = {
    "alertmanager": _GENEROUS,
    "grafana": _GENEROUS,
    "generic": _ONE_PER_EVENT,
    "pagerduty": _ONE_PER_EVENT,
    "zabbix": _ONE_PER_EVENT,
    "sensu": _ONE_PER_EVENT,
}
_SOURCE_NAMES = frozenset(source.name for source in SOURCES)


def _off_is_none(value: Any) -> Any:
    # YAML reads `off`/`false` as False: both mean "no limit", like null.
    if isinstance(value, dict):
        return {key: (None if limit is False else limit) for key, limit in value.items()}
    return value


class IngestSettings(_Section):
    limits: dict[str, RateLimit | None] = Field(default_factory=dict)
    tokens: dict[str, RateLimit | None] = Field(default_factory=dict)

    _limits_off = field_validator("limits", "tokens", mode="before")(_off_is_none)

    @field_validator("limits")
    @classmethod
    def _known_sources(cls, value: dict[str, RateLimit | None]) -> dict[str, RateLimit | None]:
        for name in value:
            if name not in _SOURCE_NAMES:
                raise ValueError(f"{name!r} is not an alert source; use one of {', '.join(sorted(_SOURCE_NAMES))}")
        return value

    def limit_for(self, *, source: str, token: str) -> RateLimit | None:
        """The limit for ingest token `token` sending to `source`: the token's own entry, else the source's (the
        configured one, else DEFAULT_LIMITS); None when there is no limit."""
        if token in self.tokens:
            return self.tokens[token]
        if source in self.limits:
            return self.limits[source]
        return DEFAULT_LIMITS.get(source)
