"""Command history under the read rule (commands/readable_commands.py over store/command_history.py), on SQLite
and PostgreSQL: filters in SQL, newest first, pages by id, and only what the reader may read — also when the
readable commands are far apart."""

from __future__ import annotations

from datetime import UTC, datetime

from teleops.commands.read_access import ReadAccess, Reader
from teleops.commands.readable_commands import readable_page, readable_recent
from teleops.domain.command import CommandStatus, Finish
from teleops.domain.policy import compile_policy
from teleops.store.command_history import CommandQuery
from teleops.store.commands import create_command, finish_command
from teleops.store.database import Database

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POLICY = compile_policy(
    {"web": [{"hosts": ["web-*"], "commands": ["uptime"]}], "admin": [{"hosts": ["*"], "commands": ["*"]}]},
    parse_duration=float,
)


async def add(db: Database, requester: str, agent: str, argv: list[str], status: CommandStatus) -> int:
    record = await create_command(
        db, requester=requester, host=agent, agent_name=agent, argv=argv, timeout_s=30, now=NOW
    )
    await finish_command(db, record.id, Finish(status, exit_code=0 if status is CommandStatus.SUCCEEDED else 1),
                         now=NOW)  # fmt: skip
    return record.id


def access(db: Database, name: str, role: str) -> ReadAccess:
    return ReadAccess(db, Reader(name, role), policy=POLICY)


async def test_filters_apply_in_sql_and_the_reader_sees_only_what_the_rule_allows(db: Database) -> None:
    ids = [
        await add(db, "alice", "web-1", ["uptime"], CommandStatus.SUCCEEDED),
        await add(db, "root", "db-1", ["pg_ctl", "status"], CommandStatus.FAILED),
        await add(db, "wendy", "db-1", ["uptime"], CommandStatus.SUCCEEDED),  # her own, on a host not hers
        await add(db, "root", "web-2", ["reboot"], CommandStatus.FAILED),
    ]
    wendy = access(db, "wendy", "web")
    page = await readable_page(db, wendy, CommandQuery(limit=10))
    assert [c.id for c in page.commands] == [ids[3], ids[2], ids[0]]  # newest first; root's db-1 command is not hers
    assert page.older is None
    assert [c.id for c in (await readable_page(db, wendy, CommandQuery(host="WEB-2"))).commands] == [ids[3]]
    assert [c.id for c in (await readable_page(db, wendy, CommandQuery(requester="root"))).commands] == [ids[3]]
    failed = await readable_page(db, access(db, "ann", "admin"), CommandQuery(status="failed"))
    assert [c.id for c in failed.commands] == [ids[3], ids[1]]


async def test_pages_are_full_of_readable_commands_even_when_they_are_far_apart(db: Database) -> None:
    readable = []
    for n in range(7):
        readable.append(await add(db, "root", "web-1", ["uptime"], CommandStatus.SUCCEEDED))
        for _ in range(4):  # between each readable one, commands on a host the reader's rules do not cover
            await add(db, "root", f"db-{n}", ["uptime"], CommandStatus.SUCCEEDED)
    wendy = access(db, "wendy", "web")
    # 4 rows a batch: the page reads batches until it has 3 readable ones and knows a 4th exists.
    first = await readable_page(db, wendy, CommandQuery(limit=3), batch=4)
    assert [c.id for c in first.commands] == readable[::-1][:3]
    assert first.older == readable[-3]
    assert not first.stopped_early
    second = await readable_page(db, wendy, CommandQuery(limit=3, before=first.older), batch=4)
    assert [c.id for c in second.commands] == readable[::-1][3:6]
    last = await readable_page(db, wendy, CommandQuery(limit=3, before=second.older), batch=4)
    assert [c.id for c in last.commands] == readable[:1]
    assert last.older is None
    # The scan limit stops a page short, saying so; "older" carries on from the last row read.
    stopped = await readable_page(db, wendy, CommandQuery(limit=3), scan_limit=8, batch=4)
    assert [c.id for c in stopped.commands] == readable[-1:]  # the newest 8 rows hold one readable command
    assert stopped.stopped_early
    rest = await readable_page(db, wendy, CommandQuery(limit=3, before=stopped.older), batch=4)
    assert [c.id for c in rest.commands] == readable[::-1][1:4]


async def test_each_hosts_latest_commands_as_far_as_the_reader_may_read_them(db: Database) -> None:
    web = [await add(db, "root", "web-1", ["uptime"], CommandStatus.SUCCEEDED) for _ in range(4)]
    db_ids = [await add(db, "root", "db-1", ["uptime"], CommandStatus.SUCCEEDED) for _ in range(2)]
    own = await add(db, "wendy", "db-1", ["uptime"], CommandStatus.SUCCEEDED)
    recent = await readable_recent(db, access(db, "wendy", "web"), ["web-1", "db-1", "idle"], per_host=3)
    assert [c.id for c in recent["web-1"]] == web[::-1][:3]
    assert [c.id for c in recent["db-1"]] == [own]  # root's commands on db-1 are not hers to read
    assert recent["idle"] == []
    every = await readable_recent(db, access(db, "ann", "admin"), ["db-1"], per_host=5)
    assert [c.id for c in every["db-1"]] == [own, *db_ids[::-1]]
