"""The `self_check:` section: who watches the watcher (docs/self-monitoring.md).

TeleOps tests its own path end to end every `self_test_every` and, while that and a quick liveness check pass,
pings an external dead-man's switch (`ping_url`, e.g. a healthchecks.io check) every `ping_every`. When it is
unhealthy it pings `fail_url` instead (with the reason in the body), or nothing. A controller that is down, stopped
or stuck pings nothing, so the switch's own timer pages someone outside TeleOps.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from teleops.config.duration import Duration, DurationSetting

__all__ = ["SelfCheckSettings"]


class SelfCheckSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # healthchecks-style URLs carry a secret (the check's uuid): kept secret, logged as scheme://host only.
    ping_url: SecretStr | None = None
    fail_url: SecretStr | None = None  # e.g. the same check's /fail; None: an unhealthy tick pings nothing
    ping_every: DurationSetting = Field("1m", validate_default=True)
    # For one ping, and for each self-test step (capped at ping_every for pings)
    timeout: DurationSetting = Field("10s", validate_default=True)
    self_test_every: DurationSetting = Field("5m", validate_default=True)
    # A chat message still queued after this long fails the outbox step
    max_outbox_age: DurationSetting = Field("5m", validate_default=True)

    @field_validator("ping_every", "timeout", "self_test_every", "max_outbox_age")
    @classmethod
    def _positive_duration(cls, value: Duration) -> Duration:
        if value.seconds <= 0:
            raise ValueError(f"{value.text!r} must be a positive duration like 1m or 10s")
        return value

    @field_validator("ping_url", "fail_url")
    @classmethod
    def _http_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            # Never echo the URL back: it may carry the check's secret.
            raise ValueError(
                "must be an http:// or https:// URL with a host (e.g. https://hc-ping.example/<uuid>); "
                "check for a typo or a missing scheme"
            )
        return value

    @property
    def pings(self) -> bool:
        return self.ping_url is not None
