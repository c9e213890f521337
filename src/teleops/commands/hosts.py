"""Which agent is "host"? By agent name, then bound hostname, then the bound `host=` label; ambiguity is an error.

Bound, never claimed: what an agent announces now does not decide where commands go (store/agents.py, T32).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

__all__ = ["AmbiguousHost", "HostCandidate", "UnknownHost", "resolve_host"]


class HostCandidate(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def bound_hostname(self) -> str | None: ...
    @property
    def bound_host(self) -> str | None: ...


A = TypeVar("A", bound=HostCandidate)


class UnknownHost(LookupError):
    def __init__(self, host: str, known: Sequence[str]) -> None:
        listed = ", ".join(known) if known else "none: no agent has connected yet (see docs/install-agent.md)"
        super().__init__(f"no agent serves host {host!r}; known hosts: {listed}")
        self.host = host
        self.known = list(known)


class AmbiguousHost(LookupError):
    def __init__(self, host: str, names: Sequence[str]) -> None:
        super().__init__(f"host {host!r} matches several agents ({', '.join(names)}); use the agent name")


def resolve_host(host: str, candidates: Sequence[A]) -> A:
    """The agent for `host`: exact agent name wins; else a unique bound hostname (case-insensitive); else a
    unique bound `host` label. Raises UnknownHost (naming the known hosts) or AmbiguousHost."""
    wanted = host.strip()
    for candidate in candidates:
        if candidate.name == wanted:
            return candidate
    for matches in (
        [c for c in candidates if (c.bound_hostname or "").lower() == wanted.lower() and c.bound_hostname],
        [c for c in candidates if c.bound_host == wanted and c.bound_host],
    ):
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise AmbiguousHost(wanted, sorted(c.name for c in matches))
    raise UnknownHost(wanted, sorted(c.name for c in candidates))
