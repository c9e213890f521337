"""Host → agent: by agent name, then hostname, then the `host` label; unknown hosts name the known ones."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from teleops.commands.hosts import AmbiguousHost, UnknownHost, resolve_host


@dataclass(frozen=True)
class Candidate:
    name: str
    hostname: str  # as bound (store/agents.py binds what an agent announced at its first connection)
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def bound_hostname(self) -> str | None:
        return self.hostname

    @property
    def bound_host(self) -> str | None:
        return self.labels.get("host")


WEB1 = Candidate("web-1", "web-1.prod.example.org", {"host": "frontend"})
DB1 = Candidate("db-1", "db-1.prod.example.org", {"host": "database"})
LOCAL = Candidate("localhost", "vm")
AGENTS = [WEB1, DB1, LOCAL]


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("web-1", WEB1),
        ("db-1.prod.example.org", DB1),
        ("DB-1.PROD.example.org", DB1),
        ("frontend", WEB1),
        ("localhost", LOCAL),
        ("vm", LOCAL),
        (" web-1 ", WEB1),
    ],
)
def test_hosts_resolve_to_their_agent(host: str, expected: Candidate) -> None:
    assert resolve_host(host, AGENTS) is expected


def test_the_agent_name_wins_over_another_agents_hostname() -> None:
    impostor = Candidate("other", "web-1")
    assert resolve_host("web-1", [impostor, WEB1]) is WEB1


def test_an_unknown_host_names_the_known_hosts() -> None:
    with pytest.raises(UnknownHost) as caught:
        resolve_host("mail-7", AGENTS)
    assert str(caught.value) == "no agent serves host 'mail-7'; known hosts: db-1, localhost, web-1"


def test_with_no_agents_the_error_says_none_has_connected() -> None:
    with pytest.raises(UnknownHost, match="no agent has connected yet"):
        resolve_host("web-1", [])


def test_a_hostname_shared_by_two_agents_is_ambiguous() -> None:
    twins = [Candidate("a", "box"), Candidate("b", "box")]
    with pytest.raises(AmbiguousHost, match=r"matches several agents \(a, b\)"):
        resolve_host("box", twins)


def test_a_homoglyph_does_not_resolve() -> None:
    with pytest.raises(UnknownHost):
        resolve_host("wеb-1", AGENTS)  # Cyrillic "е"
