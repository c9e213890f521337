from __future__ import annotations

import re
from pathlib import Path

import pytest

from teleops.config import ConfigError, load_settings
from teleops.config.settings import parse_duration


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "teleops.yaml"
    path.write_text(text)
    return path


def test_embedded_default_is_sqlite_on_loopback() -> None:
    settings = load_settings(None)
    assert settings.server.listen == "127.0.0.1:8080"
    assert settings.database.url == "sqlite+aiosqlite:///./teleops-data/teleops.db"
    assert settings.local_agent.enabled is True


def _readme_config_reference() -> str:
    """The YAML block under README.md's "Configuration reference", as a reader copies it."""
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme[readme.index("## Configuration reference") :]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None
    return block.group(1)


def test_the_documented_example_config_loads(tmp_path: Path) -> None:
    # The README's reference config, as written there (its "…" placeholders stand for secrets and a URL).
    text = _readme_config_reference().replace('base_url: "…/bot"', 'base_url: "http://127.0.0.1:9/bot"')
    text = text.replace('token: "…"', 'token: "123:abc"')
    path = write(tmp_path, text)
    settings = load_settings(path)
    assert settings.users[0].telegram_id == 1001
    assert settings.telegram.token is not None
    assert settings.telegram.token.get_secret_value() == "123:abc"
    assert "123:abc" not in repr(settings)  # secrets never print
    assert settings.policy.roles["operator"][1].require_2fa is True


def test_environment_wins_over_the_file_and_nests_with_double_underscore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, 'server: {listen: "127.0.0.1:9000", public_url: "http://example.invalid"}\n')
    monkeypatch.setenv("TELEOPS_SERVER__LISTEN", "127.0.0.1:9100")
    settings = load_settings(path)
    assert settings.server.listen == "127.0.0.1:9100"
    assert settings.server.public_url == "http://example.invalid"  # the rest of the section stays


def test_unknown_key_stops_startup_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "server: {lissten: '127.0.0.1:1'}\n")
    with pytest.raises(ConfigError, match=r"server\.lissten: unknown key"):
        load_settings(path)


def test_wrong_value_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "database: {url: 'mysql://x'}\n")
    with pytest.raises(ConfigError, match=r"database\.url: .*sqlite\+aiosqlite"):
        load_settings(path)


def test_missing_required_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "users: [{role: operator}]\n")
    with pytest.raises(ConfigError, match=r"users\.0\.name: required key is missing"):
        load_settings(path)


@pytest.mark.parametrize("pseudo", [1087968824, 777000, 136817688])
def test_telegram_service_accounts_can_never_be_users(tmp_path: Path, pseudo: int) -> None:
    path = write(tmp_path, f"users: [{{name: eve, telegram_id: {pseudo}}}]\n")
    with pytest.raises(ConfigError, match="Telegram service account"):
        load_settings(path)


def test_not_yaml_is_a_clear_error(tmp_path: Path) -> None:
    path = write(tmp_path, "server: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(path)


def test_a_list_at_top_level_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_settings(path)


def test_missing_file_says_which(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "nope.yaml")


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("10m", 600), ("2h", 7200), ("7d", 604800), (45, 45)])
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "5 weeks", "-1m", "1.5h"])
def test_bad_durations_say_how_to_write_them(text: str) -> None:
    with pytest.raises(ValueError, match="write it like 30s"):
        parse_duration(text)
