"""The directory merges overrides made in the web UI into every answer (oncall/directory.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.settings import settings_with

from teleops.oncall.directory import OnCallDirectory
from teleops.store.oncall_overrides import StoredOverride

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)  # bob's day on the daily rotation below


def directory(tmp_path: Path) -> OnCallDirectory:
    settings = settings_with(
        data_dir=tmp_path / "data",
        local_agent={"enabled": False},
        users=[{"name": n, "role": "operator"} for n in ("alice", "bob", "carol", "dave")],
        oncall={
            "rotations": [
                {
                    "name": "primary",
                    "members": ["alice", "bob"],
                    "shift": "1d",
                    "handoff": "09:00",
                    "overrides": [
                        {"user": "carol", "start": NOW - timedelta(hours=1), "end": NOW + timedelta(hours=1)}
                    ],
                }
            ],
            "escalation": [{"after": "0m", "notify": "rotation:primary"}],
        },
    )
    return OnCallDirectory(settings)


def stored(id_: int, user: str, start: datetime, end: datetime, rotation: str = "primary") -> StoredOverride:
    return StoredOverride(id_, rotation, user, start, end, "admin", NOW)


def test_without_stored_overrides_the_config_override_is_in_force(tmp_path: Path) -> None:
    found = directory(tmp_path)
    assert found.resolve("rotation:primary", NOW).users == ("carol",)
    assert found.resolve("rotation:primary", NOW + timedelta(hours=2)).users == ("bob",)


def test_a_stored_override_wins_over_config_and_shows_everywhere(tmp_path: Path) -> None:
    found = directory(tmp_path)
    found.use_stored_overrides([stored(1, "dave", NOW - timedelta(minutes=5), NOW + timedelta(hours=3))])
    assert found.resolve("rotation:primary", NOW).users == ("dave",)  # paging
    [row] = found.on_call_now(NOW)  # /oncall
    assert (row.current, row.overridden, row.until, row.next) == ("dave", True, NOW + timedelta(hours=3), "bob")
    assert found.rotations["primary"].shift_at(NOW).user == "dave"  # handovers, the page, the feeds
    # The configured rotation itself is untouched: the page can tell config overrides from stored ones.
    assert [o.user for o in found.configured_rotations["primary"].overrides] == ["carol"]


def test_the_newest_stored_override_wins_and_unknown_rotations_are_ignored(tmp_path: Path) -> None:
    found = directory(tmp_path)
    window = (NOW - timedelta(hours=1), NOW + timedelta(hours=1))
    found.use_stored_overrides(
        [stored(2, "alice", *window), stored(1, "dave", *window), stored(3, "x", *window, "gone")]
    )
    assert found.resolve("rotation:primary", NOW).users == ("alice",)
    assert set(found.rotations) == {"primary"}


def test_replacing_the_stored_overrides_restores_the_schedule(tmp_path: Path) -> None:
    found = directory(tmp_path)
    found.use_stored_overrides([stored(1, "dave", NOW - timedelta(hours=2), NOW + timedelta(hours=3))])
    found.use_stored_overrides([])  # the override was removed
    assert found.resolve("rotation:primary", NOW + timedelta(hours=2)).users == ("bob",)
