"""The `self_check:` section: defaults, and bad values refused naming the key without echoing a secret URL."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from teleops.config.self_check import SelfCheckSettings
from teleops.config.settings import ConfigError, load_settings
from teleops.domain.duration import Duration


def test_defaults_ping_nothing_and_test_every_five_minutes() -> None:
    settings = SelfCheckSettings()
    assert settings.ping_url is None
    assert (settings.ping_every, settings.timeout, settings.self_test_every, settings.max_outbox_age) == (
        Duration("1m"), Duration("10s"), Duration("5m"), Duration("5m")
    )  # fmt: skip


def test_a_url_without_scheme_is_refused_naming_the_key_without_showing_its_secret(tmp_path: Path) -> None:
    config = tmp_path / "teleops.yaml"
    config.write_text("self_check:\n  ping_url: hc.example/5f1c-secret-uuid\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(config)
    assert "self_check.ping_url" in str(raised.value)
    assert "http:// or https://" in str(raised.value)
    assert "5f1c-secret-uuid" not in str(raised.value)


def test_a_ping_url_is_kept_secret_in_reprs() -> None:
    settings = SelfCheckSettings(ping_url="https://hc.example/5f1c-secret-uuid")
    assert "5f1c-secret-uuid" not in repr(settings)


@pytest.mark.parametrize("key", ["ping_every", "timeout", "self_test_every", "max_outbox_age"])
def test_durations_must_be_positive(key: str) -> None:
    with pytest.raises(ValidationError, match=key):
        SelfCheckSettings(**{key: "0s"})
