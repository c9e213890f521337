"""The On call page's rules and texts (server/oncall_board.py): who may change what, times, escalation chains."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.settings import settings_with

from teleops.domain.rotation import Rotation
from teleops.oncall.directory import OnCallDirectory
from teleops.server.oncall_board import build_board, chain_text, may_cover, may_remove, parse_form_time
from teleops.store.oncall_overrides import StoredOverride

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
ROTATION = Rotation("primary", ("alice", "bob"), 86400, handoff="09:00")


def test_admins_may_add_any_cover_and_members_only_their_own() -> None:
    assert may_cover(actor="root", admin=True, rotation=ROTATION, cover="carol")
    assert may_cover(actor="alice", admin=False, rotation=ROTATION, cover="alice")
    assert not may_cover(actor="alice", admin=False, rotation=ROTATION, cover="bob")
    assert not may_cover(actor="olga", admin=False, rotation=ROTATION, cover="olga")


def test_members_remove_overrides_that_name_them_or_that_they_made() -> None:
    made_by_bob = StoredOverride(1, "primary", "alice", NOW, NOW + timedelta(hours=1), "bob", NOW)
    assert may_remove(actor="alice", admin=False, rotation=ROTATION, override=made_by_bob)
    assert may_remove(actor="bob", admin=False, rotation=ROTATION, override=made_by_bob)
    assert may_remove(actor="root", admin=True, rotation=ROTATION, override=made_by_bob)
    assert not may_remove(actor="olga", admin=False, rotation=ROTATION, override=made_by_bob)


def test_form_times_are_local_to_the_rotation_unless_they_carry_an_offset() -> None:
    berlin = parse_form_time("2026-07-01T09:00", "Europe/Berlin")
    assert berlin.astimezone(UTC) == datetime(2026, 7, 1, 7, 0, tzinfo=UTC)
    assert parse_form_time("2026-07-01T09:00+00:00", "Europe/Berlin") == datetime(2026, 7, 1, 9, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="write it like 2026-11-24T18:00"):
        parse_form_time("tomorrow", "UTC")


def test_the_escalation_chain_reads_as_steps_with_who_is_on_call_now(tmp_path: Path) -> None:
    settings = settings_with(
        data_dir=tmp_path / "data",
        local_agent={"enabled": False},
        users=[{"name": n, "role": "operator"} for n in ("alice", "bob", "carol")],
        oncall={
            "rotations": [{"name": "primary", "members": ["alice", "bob"], "shift": "1d", "handoff": "09:00"}],
            "escalation": [
                {"after": "0m", "notify": "rotation:primary"},
                {"after": "5m", "notify": "user:carol"},
                {"after": "1h", "notify": "chat:ops"},
            ],
            "chats": {"ops": {"platform": "console", "id": "ops"}},
            "repeat": 2,
        },
    )
    directory = OnCallDirectory(settings)
    steps, _ = directory.policy("default")
    assert chain_text(steps, directory, NOW) == (
        "1. at once: page the on-call of primary (now bob)",
        "2. after 5m: page carol",
        "3. after 1h: post to chat ops",
    )
    [board] = build_board(directory, NOW, actor="alice", admin=False)
    assert (board.current, board.next, board.until) == ("bob", "alice", datetime(2026, 3, 5, 9, 0, tzinfo=UTC))
    assert board.chains == (("default", chain_text(steps, directory, NOW), 2),)
    assert len(board.week) == 7
    assert [(c.user, c.start, c.end) for c in board.week[0].covers] == [
        ("alice", "00:00", "09:00"),
        ("bob", "09:00", "24:00"),
    ]
    assert board.may_cover
