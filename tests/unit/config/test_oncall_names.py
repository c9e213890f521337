"""The on-call section may only name people under `users:` (or the built-in admin), and rotations and chats it
defines; a bad name stops the load naming its key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from teleops.config import ConfigError, load_settings
from teleops.config.settings import BUILTIN_USERS
from teleops.server.bootstrap import ADMIN

CONFIG: dict[str, Any] = {
    "users": [
        {"name": "alice", "telegram_id": 1001},
        {"name": "bob", "telegram_id": 1002},
        {"name": "carol", "telegram_id": 1003},
        {"name": "dave", "telegram_id": 1004},
    ],
    "oncall": {
        "rotations": [
            {
                "name": "primary",
                "members": ["alice", "bob", "carol"],
                "overrides": [
                    {"user": "dave", "start": "2026-12-01T18:00:00+01:00", "end": "2026-12-02T00:00:00+01:00"}
                ],
            },
            {"name": "db", "members": ["dave"]},
        ],
        "escalation": [
            {"after": "0m", "notify": "rotation:primary"},
            {"after": "10m", "notify": "user:carol"},
            {"after": "20m", "notify": "chat:ops-room"},
        ],
        "teams": [
            {"name": "database", "escalation": [{"notify": "rotation:db"}, {"after": "15m", "notify": "user:alice"}]}
        ],
        "chats": {"ops-room": {"platform": "telegram", "id": "-1001234567890"}},
    },
}


def write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "teleops.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def refusal(tmp_path: Path, config: dict[str, Any]) -> str:
    path = write(tmp_path, config)
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    message = str(raised.value)
    assert "\n" not in message  # one line: the first bad name
    assert message.startswith(f"{path}: ")
    return message.removeprefix(f"{path}: ")


def test_a_config_naming_only_defined_people_rotations_and_chats_loads(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, CONFIG))
    assert settings.oncall.rotations[0].members == ["alice", "bob", "carol"]


def test_the_built_in_admin_needs_no_users_entry(tmp_path: Path) -> None:
    # `admin` is created by the first `teleops serve` and can link a chat, so it can be paged.
    config = copy.deepcopy(CONFIG)
    config["oncall"]["rotations"][1]["members"] = ["dave", "admin"]
    config["oncall"]["escalation"][1]["notify"] = "user:admin"
    load_settings(write(tmp_path, config))
    assert ADMIN in BUILTIN_USERS  # the name bootstrap creates is the one the check accepts


def test_a_rotation_member_who_is_not_a_user_is_refused_naming_the_key(tmp_path: Path) -> None:
    config = copy.deepcopy(CONFIG)
    config["oncall"]["rotations"][0]["members"][2] = "erin"
    assert refusal(tmp_path, config) == (
        "oncall.rotations.0.members.2: 'erin' is not a defined user; define it under users: or fix the name"
    )


def test_a_misspelt_member_gets_the_likely_name(tmp_path: Path) -> None:
    config = copy.deepcopy(CONFIG)
    config["oncall"]["rotations"][1]["members"] = ["dvae"]
    assert refusal(tmp_path, config) == (
        "oncall.rotations.1.members.0: 'dvae' is not a defined user (did you mean 'dave'?); "
        "define it under users: or fix the name"
    )


def test_an_override_for_someone_who_is_not_a_user_is_refused_naming_the_key(tmp_path: Path) -> None:
    config = copy.deepcopy(CONFIG)
    config["oncall"]["rotations"][0]["overrides"][0]["user"] = "mallory"
    assert refusal(tmp_path, config) == (
        "oncall.rotations.0.overrides.0.user: 'mallory' is not a defined user; define it under users: or fix the name"
    )


def test_an_escalation_step_paging_someone_who_is_not_a_user_is_refused_naming_the_key(tmp_path: Path) -> None:
    config = copy.deepcopy(CONFIG)
    config["oncall"]["escalation"][1]["notify"] = "user:erin"
    assert refusal(tmp_path, config) == (
        "oncall.escalation.1.notify: 'erin' is not a defined user; define it under users: or fix the name"
    )


def test_a_team_step_paging_someone_who_is_not_a_user_is_refused_naming_the_key(tmp_path: Path) -> None:
    config = copy.deepcopy(CONFIG)
    config["oncall"]["teams"][0]["escalation"][1]["notify"] = "user:erin"
    assert refusal(tmp_path, config) == (
        "oncall.teams.0.escalation.1.notify: 'erin' is not a defined user; define it under users: or fix the name"
    )


def test_a_step_paging_an_undefined_rotation_is_refused_naming_the_key(tmp_path: Path) -> None:
    config = copy.deepcopy(CONFIG)
    config["oncall"]["teams"][0]["escalation"][0]["notify"] = "rotation:dba"
    assert refusal(tmp_path, config) == (
        "oncall.teams.0.escalation.0.notify: 'dba' is not a defined rotation (did you mean 'db'?); "
        "define it under oncall.rotations or fix the name"
    )


def test_a_step_paging_an_undefined_chat_is_refused_naming_the_key(tmp_path: Path) -> None:
    config = copy.deepcopy(CONFIG)
    config["oncall"]["escalation"][2]["notify"] = "chat:war-room"
    assert refusal(tmp_path, config) == (
        "oncall.escalation.2.notify: 'war-room' is not a defined chat; define it under oncall.chats or fix the name"
    )


def test_the_first_bad_name_in_file_order_is_the_one_named(tmp_path: Path) -> None:
    config = copy.deepcopy(CONFIG)
    config["oncall"]["rotations"][1]["members"] = ["zed"]
    config["oncall"]["escalation"][1]["notify"] = "user:yan"
    assert refusal(tmp_path, config).startswith("oncall.rotations.1.members.0: 'zed' ")


def test_people_are_checked_without_any_users_section(tmp_path: Path) -> None:
    config = {"oncall": {"rotations": [{"name": "primary", "members": ["alice"]}]}}
    assert refusal(tmp_path, config).startswith("oncall.rotations.0.members.0: 'alice' is not a defined user")
