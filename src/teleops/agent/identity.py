"""Who a command runs as: the agent's own user, or ``run_as`` when the agent is root.

The switch itself is done by ``subprocess`` in the child (setgroups, setregid, setreuid before exec); this
module only resolves and checks the user in the parent so that a bad ``run_as`` is a clear refusal.
"""

from __future__ import annotations

import os
import pwd
import resource
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from teleops.agent.rlimits import RlimitSetting

__all__ = ["Identity", "IdentityError", "become", "resolve_identity"]


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


def become(identity: Identity, limits: Sequence[RlimitSetting]) -> Callable[[], None]:
    """A preexec_fn that sets ``limits`` (still privileged), then becomes ``identity``, so the command cannot undo
    them. It makes only plain system calls on values computed here, in the parent: a preexec_fn runs between fork
    and exec, where a lock held by another thread of the agent would never be freed."""
    setrlimit = resource.setrlimit
    settings = tuple(limits)
    groups = list(identity.groups)
    uid, gid = identity.uid, identity.gid

    def switch() -> None:
        for res, soft, hard in settings:
            setrlimit(res, (soft, hard))
        os.setgroups(groups)
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)

    return switch
