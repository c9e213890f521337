"""Who the embedded local agent's commands run as, and the check that they cannot reach TeleOps' own data (T33).

The embedded agent allows every command (it is this machine, administered by whoever runs TeleOps), so what keeps
a command from reading the database, the audit checkpoint key or the agent tokens is the user it runs as:

- TeleOps runs as root: the agent's commands run as ``local_agent.run_as`` (default ``nobody``). Before the agent
  starts, the data directory is made 0700 if the controller owns it, and the directory and the SQLite database are
  checked from that user's point of view (owner, group and other permission bits along the path; POSIX ACLs are
  not read). ``run_as: root`` or a user that can read them is refused.
- TeleOps runs as another user: it cannot switch users, so its commands would run as itself, with access to
  everything. The agent is not started, with a message saying what to do, unless the admin accepted exactly that
  with ``local_agent.allow_data_access: true`` (a laptop trial).

The agent process itself stays the controller's child with the controller's user: it needs its token and spool, and
runs only TeleOps' code; it never runs a command as itself once it is root (agent/allowlist.py ``runs_as``).
Not covered: the config file (keep it 0600: it holds chat tokens) and secrets outside these paths.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

import structlog

from teleops.config import Settings

__all__ = ["LocalAgentRefused", "local_run_as", "reachable_by"]

log = structlog.get_logger(__name__)


class LocalAgentRefused(Exception):
    """The embedded agent must not start as configured; the message says why and what to do."""


def reachable_by(path: Path, uid: int, gids: set[int]) -> bool:
    """Whether user ``uid`` (with groups ``gids``) can read ``path``: search permission on every directory on the
    way, read on the last component (a path that does not exist yet: its nearest existing parent). Root reaches
    everything. Decided from permission bits only (no ACLs, no capabilities)."""
    if uid == 0:
        return True
    target = path.absolute()
    while not target.exists() and target != target.parent:
        target = target.parent
    chain = [*reversed(target.parents), target]
    for index, component in enumerate(chain):
        try:
            info = component.stat()
        except OSError:
            return False
        last = index == len(chain) - 1
        need = stat.S_IROTH if last and not stat.S_ISDIR(info.st_mode) else stat.S_IXOTH
        if last and stat.S_ISDIR(info.st_mode):
            need |= stat.S_IROTH
        if info.st_uid == uid:
            shift = 6
        elif info.st_gid in gids:
            shift = 3
        else:
            shift = 0
        if (info.st_mode >> shift) & need != need:
            return False
    return True


def _protected(settings: Settings) -> list[Path]:
    paths = [settings.data_dir]
    url = settings.database.url
    prefix = "sqlite+aiosqlite:///"
    if url.startswith(prefix):
        database = Path(url.removeprefix(prefix).split("?", 1)[0])
        if not database.absolute().is_relative_to(settings.data_dir.absolute()):
            paths.append(database)
    return paths


def _tighten(directory: Path) -> None:
    """Make the data directory 0700 when the controller owns it (it holds only the controller's own files)."""
    try:
        info = directory.stat()
    except FileNotFoundError:
        directory.mkdir(mode=0o700, parents=True)
        return
    if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(directory, stat.S_IMODE(info.st_mode) & 0o700)
        log.info("local_agent.data_dir_tightened", data_dir=str(directory), mode="0700")


def _own_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def local_run_as(settings: Settings) -> str | None:
    """The ``--run-as`` user for the embedded agent (None: it cannot switch and runs commands as the controller's
    user, accepted with ``allow_data_access``). Raises LocalAgentRefused when its commands could read the data."""
    section = settings.local_agent
    data_dir = settings.data_dir
    if os.geteuid() != 0:
        me = _own_user()
        if section.allow_data_access:
            log.warning(
                "local_agent.data_access_allowed",
                user=me,
                hint=f"commands on this machine run as {me} and can read {data_dir}: fine for a trial only",
            )
            return None
        raise LocalAgentRefused(
            f"the local agent is not started: TeleOps runs as {me!r}, not root, so commands on this machine would "
            f"run as {me!r} too and could read the database, the audit key and the tokens in {data_dir}. Run "
            "TeleOps as root (commands then run as local_agent.run_as, default nobody), or run `teleops agent` "
            "as another user (docs/install-agent.md), or, on a machine only you use, set "
            "local_agent.allow_data_access: true"
        )
    user = section.run_as
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise LocalAgentRefused(
            f"the local agent is not started: local_agent.run_as {user!r} is not a user on this machine; create it "
            f"(useradd --system --no-create-home {user}) or name another unprivileged user"
        ) from None
    _tighten(data_dir)
    groups = set(os.getgrouplist(entry.pw_name, entry.pw_gid))
    for path in _protected(settings):
        if not reachable_by(path, entry.pw_uid, groups):
            continue
        if section.allow_data_access:
            log.warning("local_agent.data_access_allowed", user=user, path=str(path))
            continue
        fix = "name an unprivileged user" if entry.pw_uid == 0 else f"remove {user}'s access (chmod o-rwx, chown) to it"
        raise LocalAgentRefused(
            f"the local agent is not started: its commands run as {user!r} (local_agent.run_as), which can read "
            f"{path}; {fix}, or accept it with local_agent.allow_data_access: true"
        )
    return user
