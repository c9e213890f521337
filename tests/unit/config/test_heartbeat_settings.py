"""The `heartbeats:` config section: good entries load, bad ones stop the load naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from teleops.config import Settings
from teleops.config.settings import ConfigError, load_settings


def load(tmp_path: Path, heartbeats: object) -> Settings:
    path = tmp_path / "teleops.yaml"
    path.write_text(yaml.safe_dump({"heartbeats": heartbeats}))
    return load_settings(path)


def test_a_heartbeat_gets_defaults_for_grace_and_severity(tmp_path: Path) -> None:
    settings = load(tmp_path, [{"name": "nightly-backup", "interval": "24h", "labels": {"team": "storage"}}])
    [heartbeat] = settings.heartbeats
    assert (heartbeat.name, heartbeat.interval.seconds, heartbeat.grace.seconds, heartbeat.severity) == (
        "nightly-backup",
        86400,
        60,
        "critical",
    )
    assert heartbeat.labels == {"team": "storage"}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "bad name", "interval": "5m"}, "heartbeats.0.name"),
        ({"name": "x", "interval": "soon"}, "heartbeats.0.interval: Value error, 'soon' is not a duration"),
        ({"name": "x", "interval": "0s"}, "heartbeats.0.interval: Value error, '0s' is out of range"),
        ({"name": "x", "interval": "5m", "severity": "loud"}, "heartbeats.0.severity"),
        ({"name": "x", "interval": "5m", "every": "5m"}, "heartbeats.0.every: unknown key"),
        ({"name": "x"}, "heartbeats.0.interval: required key is missing"),
    ],
)
def test_a_bad_heartbeat_names_its_key(tmp_path: Path, entry: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, [entry])
    assert message in str(caught.value)


def test_two_heartbeats_with_one_name_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, [{"name": "job", "interval": "5m"}, {"name": "job", "interval": "1h"}])
    assert "heartbeat 'job' is defined twice" in str(caught.value)
