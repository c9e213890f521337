"""The first steps of a command (commands/submit.py) without a database: each returns a value or a NotRun whose
reason a person reads, never an exception."""

from __future__ import annotations

from datetime import UTC, datetime

from teleops.commands.outcome import NotRun, NotRunWhy
from teleops.commands.submit import online, parse, resolve
from teleops.store.agents import AgentRecord
from teleops.wire import Exec


def agent(name: str, hostname: str, *, seen: datetime | None = None, host: str | None = None) -> AgentRecord:
    return AgentRecord(
        id=1, name=name, hostname=hostname, version="1", labels={}, allowlist_digest="", online=seen is not None,
        connected_at=seen, last_seen_at=seen, bound_hostname=hostname, bound_host=host,
    )  # fmt: skip


class Connected:
    def __init__(self, *names: str) -> None:
        self.names = set(names)

    def is_connected(self, agent_name: str) -> bool:
        return agent_name in self.names

    async def send_exec(self, agent_name: str, message: Exec) -> None:
        raise AssertionError("the steps before dispatch never send")


def test_parse_gives_the_argv_of_a_good_line() -> None:
    assert parse("df -h '/var/log'") == ["df", "-h", "/var/log"]


def test_parse_says_how_to_fix_a_bad_line() -> None:
    outcome = parse("echo 'unbalanced")
    assert outcome == NotRun(
        "cannot parse the command: unbalanced quote; close the quote or escape it with \\", NotRunWhy.BAD_COMMAND_LINE
    )
    empty = parse("   ")
    assert isinstance(empty, NotRun)
    assert empty.reason == "the command is empty; write what to run, e.g. `uptime`"


def test_resolve_finds_the_agent_or_names_the_known_hosts() -> None:
    web, db = agent("web-1", "web-1.example.org", host="front"), agent("db-1", "db-1.example.org", host="front")
    assert resolve("web-1.example.org", [web, db]) is web
    unknown = resolve("mail-1", [web, db])
    assert unknown == NotRun("no agent serves host 'mail-1'; known hosts: db-1, web-1", NotRunWhy.UNKNOWN_HOST)
    ambiguous = resolve("front", [web, db])
    assert ambiguous == NotRun(
        "host 'front' matches several agents (db-1, web-1); use the agent name", NotRunWhy.AMBIGUOUS_HOST
    )


def test_online_is_none_for_a_connected_agent_and_says_when_it_was_last_seen_otherwise() -> None:
    seen = datetime(2026, 12, 1, 8, 30, 5, tzinfo=UTC)
    web = agent("web-1", "web-1", seen=seen)
    assert online(Connected("web-1"), web, "web") is None
    offline = online(Connected(), web, "web")
    assert offline == NotRun(
        "agent web-1 for host 'web' is offline (last seen 2026-12-01 08:30:05 UTC); nothing was run. "
        "Check that `teleops agent` is running on it and can reach this server.",
        NotRunWhy.AGENT_OFFLINE,
    )
    never = online(Connected(), agent("db-1", "db-1"), "db-1")
    assert isinstance(never, NotRun)
    assert "(never seen)" in never.reason
