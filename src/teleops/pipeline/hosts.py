"""Which agent is "host"? By agent name, then hostname, then the label `host=`; ambiguity is an error."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, TypeVar

__all__ = ["AmbiguousHost", "HostCandidate", "UnknownHost", "resolve_host"]


class HostCandidate(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def hostname(self) -> str: ...
    @property
    def labels(self) -> Mapping[str, str]: ...


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
    """The agent for `host`: exact agent name wins; else a unique hostname (case-insensitive); else a
    unique `host` label. Raises UnknownHost (naming the known hosts) or AmbiguousHost."""
    wanted = host.strip()
    for candidate in candidates:
        if candidate.name == wanted:
            return candidate
    for matches in (
        [c for c in candidates if c.hostname.lower() == wanted.lower()],
        [c for c in candidates if c.labels.get("host") == wanted],
    ):
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise AmbiguousHost(wanted, sorted(c.name for c in matches))
    raise UnknownHost(wanted, sorted(c.name for c in candidates))
