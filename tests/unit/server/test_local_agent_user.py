"""Who the embedded agent's commands run as, and whether that user can read TeleOps' data (docs/threat-model.md T33)."""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from teleops.config import Settings
from teleops.server.local_agent_user import LocalAgentRefused, local_run_as, reachable_by

NOBODY = pwd.getpwnam("nobody")


def _settings(tmp_path: Path, **local_agent: object) -> Settings:
    data = tmp_path / "data"
    return Settings.model_validate(
        {
            "data_dir": str(data),
            "database": {"url": f"sqlite+aiosqlite:///{data}/teleops.db"},
            "local_agent": local_agent,
        }
    )


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user can reach (pytest's own temporary root is 0700)."""
    base = Path("/tmp") / f"teleops-reach-{os.getpid()}-{os.urandom(4).hex()}"
    base.mkdir(mode=0o755)
    yield base
    for path in sorted(base.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    base.rmdir()


def test_reachability_follows_owner_group_and_other_bits_along_the_path(open_dir: Path) -> None:
    groups = {NOBODY.pw_gid}
    readable = open_dir / "readable"
    readable.write_text("x")
    readable.chmod(0o644)
    assert reachable_by(readable, NOBODY.pw_uid, groups)
    readable.chmod(0o600)
    assert not reachable_by(readable, NOBODY.pw_uid, groups)
    closed = open_dir / "closed"
    closed.mkdir(mode=0o700)
    inside = closed / "file"
    inside.write_text("x")
    inside.chmod(0o644)
    assert not reachable_by(inside, NOBODY.pw_uid, groups)  # a 0700 parent closes what is inside it
    os.chown(closed, 0, NOBODY.pw_gid)
    closed.chmod(0o750)
    assert reachable_by(inside, NOBODY.pw_uid, groups)  # through the group bits
    assert not reachable_by(inside, NOBODY.pw_uid, set())
    assert reachable_by(inside, 0, set())  # root reaches everything
    assert not reachable_by(closed / "not-yet" / "db", NOBODY.pw_uid, set())  # judged by what exists


def test_as_root_commands_run_as_nobody_and_the_data_directory_is_closed_first(open_dir: Path) -> None:
    settings = _settings(open_dir)
    settings.data_dir.mkdir(mode=0o755)
    assert local_run_as(settings) == "nobody"
    assert stat.S_IMODE(settings.data_dir.stat().st_mode) == 0o700


def test_run_as_root_or_a_user_that_can_read_the_data_is_refused(open_dir: Path) -> None:
    with pytest.raises(LocalAgentRefused, match="name an unprivileged user"):
        local_run_as(_settings(open_dir, run_as="root"))
    settings = _settings(open_dir)
    settings.data_dir.mkdir(mode=0o700, exist_ok=True)
    os.chown(settings.data_dir, NOBODY.pw_uid, -1)  # owned by the run_as user: it can always read it
    with pytest.raises(LocalAgentRefused, match="which can read"):
        local_run_as(settings)
    assert local_run_as(_settings(open_dir, allow_data_access=True)) == "nobody"  # accepted explicitly
    with pytest.raises(LocalAgentRefused, match="is not a user on this machine"):
        local_run_as(_settings(open_dir, run_as="no-such-user-teleops"))


def test_not_root_the_agent_is_refused_unless_data_access_is_accepted(
    open_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: NOBODY.pw_uid)
    with pytest.raises(LocalAgentRefused) as caught:
        local_run_as(_settings(open_dir))
    message = str(caught.value)
    assert "TeleOps runs as 'nobody', not root" in message
    assert "local_agent.allow_data_access: true" in message
    assert local_run_as(_settings(open_dir, allow_data_access=True)) is None
