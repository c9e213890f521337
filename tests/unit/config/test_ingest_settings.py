"""The `ingest:` section: per-source defaults, overrides per source and per token, `off`, and bad keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from teleops.config import ConfigError, Settings, load_settings
from teleops.config.ingest import DEFAULT_LIMITS


def test_defaults_are_generous_for_resending_senders_and_sane_for_the_others() -> None:
    ingest = Settings().ingest
    for source in ("alertmanager", "grafana"):
        limit = ingest.limit_for(source=source, token="t")
        assert limit is not None
        assert limit.alerts >= 20000
    for source in ("generic", "pagerduty", "zabbix", "sensu"):
        limit = ingest.limit_for(source=source, token="t")
        assert limit is not None
        assert limit.per_second == pytest.approx(20.0)
        assert limit.capacity == 1200
    assert set(DEFAULT_LIMITS) == {"alertmanager", "grafana", "generic", "pagerduty", "zabbix", "sensu"}


def test_a_token_entry_wins_over_its_sources_and_off_means_no_limit(tmp_path: Path) -> None:
    config = tmp_path / "teleops.yaml"
    config.write_text(
        "ingest:\n"
        "  limits: {zabbix: {alerts: 60, per: 10s, burst: 5}, sensu: off, generic: null}\n"
        "  tokens: {zabbix-prod: {alerts: 5000}, trusted: off}\n"
    )
    ingest = load_settings(config).ingest
    zabbix = ingest.limit_for(source="zabbix", token="zabbix-other")
    assert zabbix is not None
    assert (zabbix.per_second, zabbix.capacity) == (6.0, 5)
    assert ingest.limit_for(source="sensu", token="x") is None
    assert ingest.limit_for(source="generic", token="x") is None
    prod = ingest.limit_for(source="zabbix", token="zabbix-prod")
    assert prod is not None
    assert prod.alerts == 5000
    assert ingest.limit_for(source="alertmanager", token="trusted") is None
    assert ingest.limit_for(source="grafana", token="x") == DEFAULT_LIMITS["grafana"]  # untouched sources keep theirs


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ingest: {limits: {nagios: {alerts: 5}}}", "'nagios' is not an alert source; use one of alertmanager"),
        ("ingest: {limits: {generic: {alerts: 0}}}", "ingest.limits.generic.alerts"),
        ("ingest: {limits: {generic: {alerts: 5, per: 0s}}}", "'0s' is not a positive duration"),
        ("ingest: {limits: {generic: {alerts: 5, rate: 3}}}", "ingest.limits.generic.rate: unknown key"),
    ],
)
def test_a_bad_limit_stops_the_load_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "teleops.yaml"
    config.write_text(text + "\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert message in str(caught.value)
