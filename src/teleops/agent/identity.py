"""What the forked child does before it execs the command: join its cgroup, set rlimits, drop privileges.

This runs as ``preexec_fn`` between fork and exec. Python warns that preexec_fn is unsafe when the parent has
threads (a lock held by another thread at fork time stays held in the child); the function below therefore
only makes plain system calls (write, setrlimit, setgroups/setgid/setuid) on values computed in the parent,
takes no Python-level locks, imports nothing and allocates almost nothing.

The order matters: the cgroup is joined while still privileged (cgroup.procs is owned by the agent), the limits
are set next (lowering needs no privilege), and the uid is dropped last so the command cannot undo any of it.
"""

from __future__ import annotations

import os
import pwd
import resource
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from teleops.agent.rlimits import RlimitSetting

__all__ = ["Identity", "IdentityError", "child_setup", "resolve_identity"]


class IdentityError(Exception):
    """The requested run_as user cannot be used; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the command runs as, resolved in the parent. ``switch`` is False when it is the agent's own user."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    switch: bool


def resolve_identity(run_as: str | None) -> Identity | None:
    """Look up run_as (a user name) and check the agent may become that user.

    Returns None for run_as=None (the command runs as the agent). Raises IdentityError for an unknown user,
    or when the agent is not root and run_as names another user.
    """
    if run_as is None:
        return None
    try:
        entry = pwd.getpwnam(run_as)
    except KeyError:
        raise IdentityError(
            f"cannot run as {run_as!r}: no such user on this host; create it or fix run_as in the agent config"
        ) from None
    switch = entry.pw_uid != os.geteuid()
    if switch and os.geteuid() != 0:
        raise IdentityError(
            f"cannot run as {run_as!r}: the agent runs as uid {os.geteuid()}, not root, so it cannot switch users; "
            "run the agent as that user or drop run_as"
        )
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid)) if switch else ()
    return Identity(entry.pw_name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir or "/", switch)


def child_setup(
    *, cgroup_procs_fd: int | None, limits: Sequence[RlimitSetting], identity: Identity | None
) -> Callable[[], None]:
    """Build the preexec_fn for one command. Any failure in it makes the spawn raise SubprocessError."""
    setrlimit = resource.setrlimit
    write = os.write
    limits = tuple(limits)
    drop = identity if identity is not None and identity.switch else None

    def setup() -> None:
        if cgroup_procs_fd is not None:
            write(cgroup_procs_fd, b"0")  # "0" moves the writing process itself into the cgroup
        for res, soft, hard in limits:
            setrlimit(res, (soft, hard))
        if drop is not None:
            os.setgroups(list(drop.groups))
            os.setresgid(drop.gid, drop.gid, drop.gid)
            os.setresuid(drop.uid, drop.uid, drop.uid)

    return setup
