"""Duration settings: parsed once at load into `Duration`, with the same inputs, errors and dumps as the text
fields they replace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, Field, ValidationError

from teleops.config.duration import DurationSetting
from teleops.config.heartbeats import HeartbeatSpec
from teleops.config.settings import ConfigError, Settings, load_settings
from teleops.domain.duration import Duration


class _Example(BaseModel):
    every: DurationSetting = Field("5m", validate_default=True)
    timeout: DurationSetting


def test_text_loads_as_a_duration_and_dumps_back_as_written() -> None:
    example = _Example(timeout=" 2h ")
    assert example.timeout == Duration(" 2h ")
    assert example.timeout.seconds == 7200
    assert example.every == Duration("5m")
    assert example.model_dump() == {"every": "5m", "timeout": " 2h "}
    assert example.model_dump(mode="json") == {"every": "5m", "timeout": " 2h "}
    assert example.model_dump_json() == '{"every":"5m","timeout":" 2h "}'
    assert _Example.model_validate_json(example.model_dump_json()) == example


def test_an_already_parsed_duration_is_taken_as_it_is() -> None:
    parsed = Duration("90s")
    assert _Example(timeout=parsed).timeout is parsed


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("soon", "Value error, 'soon' is not a duration; write it like 30s, 10m, 2h or 7d"),
        ("30", "Value error, '30' is not a duration; write it like 30s, 10m, 2h or 7d"),
        (30, "Input should be a valid string"),  # as the str fields did: a unit is required
        (None, "Input should be a valid string"),
    ],
)
def test_bad_input_gets_the_errors_the_text_fields_gave(value: object, message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        _Example(timeout=value)
    [error] = raised.value.errors()
    assert (error["loc"], error["msg"]) == (("timeout",), message)


def test_the_json_schema_is_a_string_with_its_default_as_text() -> None:
    properties = _Example.model_json_schema()["properties"]
    assert properties["every"] == {"default": "5m", "title": "Every", "type": "string"}
    assert properties["timeout"] == {"title": "Timeout", "type": "string"}
    grace = HeartbeatSpec.model_json_schema()["properties"]["grace"]  # the PUT /api/v1/heartbeats body
    assert (grace["type"], grace["default"]) == ("string", "1m")


def _durations(model: BaseModel, path: str = "") -> Iterator[tuple[str, object]]:
    for name in type(model).model_fields:
        value = getattr(model, name)
        key = f"{path}{name}"
        if isinstance(value, BaseModel):
            yield from _durations(value, f"{key}.")
        elif isinstance(value, Duration) or (isinstance(value, str) and _looks_like_duration(value)):
            yield key, value


def _looks_like_duration(text: str) -> bool:
    try:
        Duration(text)
    except ValueError:
        return False
    return True


def test_every_default_duration_setting_is_a_parsed_duration() -> None:
    found = dict(_durations(Settings()))
    texts = {key: value for key, value in found.items() if not isinstance(value, Duration)}
    assert texts == {}, f"duration settings still held as text: {sorted(texts)}"
    assert len(found) >= 28  # every section was walked (twofactor.duo is None by default; lists are empty)
    assert found["telegram.max_update_age"] == Duration("5m")
    assert found["server.session_lifetime"].seconds == 12 * 3600  # type: ignore[attr-defined]


def test_a_config_file_round_trips_through_the_json_dump(tmp_path: Path) -> None:
    config = {
        "server": {"body_timeout": "45s", "session_idle": "1h"},
        "oncall": {"escalation": [{"after": "5m", "notify": "user:admin"}], "delivery_deadline": "90s"},
        "heartbeats": [{"name": "backup", "interval": "24h", "grace": "30m"}],
        "ingest": {"limits": {"generic": {"alerts": 10, "per": "10s"}}},
    }
    path = tmp_path / "teleops.yaml"
    path.write_text(yaml.safe_dump(config))
    settings = load_settings(path)
    assert settings.server.body_timeout.seconds == 45
    assert settings.oncall.escalation[0].after.timedelta.total_seconds() == 300
    assert settings.heartbeats[0].grace.seconds == 1800
    assert settings.ingest.limit_for(source="generic", token="t") is not None
    dumped = settings.model_dump(mode="json")
    assert dumped["server"]["body_timeout"] == "45s"
    assert dumped["oncall"]["escalation"][0]["after"] == "5m"
    assert dumped["heartbeats"][0]["interval"] == "24h"
    assert dumped["ingest"]["limits"]["generic"]["per"] == "10s"
    path.write_text(yaml.safe_dump(dumped))
    assert load_settings(path) == settings


def test_an_environment_variable_sets_a_duration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEOPS_SERVER__BODY_TIMEOUT", "45s")
    assert Settings().server.body_timeout == Duration("45s")
    monkeypatch.setenv("TELEOPS_SERVER__BODY_TIMEOUT", "45")
    with pytest.raises(ValidationError, match="'45' is not a duration; write it like 30s"):
        Settings()


def test_a_range_error_quotes_the_text_as_written(tmp_path: Path) -> None:
    path = tmp_path / "teleops.yaml"
    path.write_text("server:\n  body_timeout: 2h\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert str(raised.value) == (
        f"{path}: server.body_timeout: Value error, '2h' is out of range; use between 1s and 1h, e.g. 30s"
    )
