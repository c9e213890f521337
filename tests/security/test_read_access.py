"""Who may read a command (issue #18.2): the requester, who voted on its approval, people whose role's policy
covers its host, and admins — on every read path: the REST API (one command, lists, waiting on ids, cancel), an
incident's timeline, "last time" history, the postmortem export, search, the web incident page, the web console's
room (live and its history) and chat `/history`. A table over endpoints × readers, with real API tokens and web logins against the real app on SQLite
and PostgreSQL; the chat through the fake Telegram Bot API. Plus the rule itself, as a unit."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import Api, FakeClock
from tests.fakes.telegram import FakeTelegram
from tests.scenarios.conftest import eventually
from tests.settings import settings_with

from teleops.chat.console.gateway import CONSOLE_CAPABILITIES, CONSOLE_CHAT_ID, ConsoleGateway
from teleops.chat.render import render
from teleops.commands.read_access import ReadAccess, Reader, may_read
from teleops.config import Settings
from teleops.config.settings import parse_duration
from teleops.domain.command import CommandStatus, Finish
from teleops.domain.message import CodeBlock, Message
from teleops.domain.policy import compile_policy
from teleops.server.session import SESSION_COOKIE
from teleops.store.agents import register_agent
from teleops.store.approvals import ApprovalRules, Vote, cast_vote, open_approval
from teleops.store.commands import create_command, finish_command
from teleops.store.read_facts import approvers_of
from teleops.store.tokens import TokenKind

ALERT_CHAT = -100
ARGV_MARK = "argvmark7q"
OUTPUT_MARK = "outputmark3z"
PASSWORD = "correct horse battery"

POLICY: dict[str, Any] = {
    "operator": [{"hosts": ["web-*"], "commands": ["uptime"]}],
    "dbops": [{"hosts": ["db-*"], "commands": ["uptime"]}],
    "viewer": [{"hosts": ["nowhere-*"], "commands": ["uptime"]}],
    "admin": [{"hosts": ["*"], "commands": ["*"]}],
}


@dataclass(frozen=True)
class Person:
    name: str
    role: str
    telegram_id: int
    may_read: bool
    why: str


# The table's rows: who reads, and whether the rule lets them read rita's command on web-1.
PEOPLE = (
    Person("rita", "viewer", 2001, True, "asked for it (her role covers no host)"),
    Person("carol", "dbops", 2002, True, "voted on its approval (her role covers db-* only)"),
    Person("bob", "operator", 2003, True, "his role's policy covers web-*"),
    Person("ada", "admin", 2004, True, "admin"),
    Person("dave", "dbops", 2005, False, "operator whose policy covers other hosts"),
    Person("vic", "viewer", 2006, False, "viewer"),
)


@pytest.fixture
def settings(tmp_path: Path, db_url: str, fake_telegram: FakeTelegram) -> Settings:
    return settings_with(
        data_dir=tmp_path / "data",
        database={"url": db_url},
        local_agent={"enabled": False},
        policy={"roles": POLICY},
        users=[{"name": p.name, "role": p.role, "telegram_id": p.telegram_id} for p in PEOPLE],
        twofactor={"web_signin": "enrolled"},  # about reading, not sign-in: admins log in without enrolling TOTP
        telegram={
            "token": fake_telegram.token,
            "base_url": fake_telegram.base_url,
            "allowed_chats": [ALERT_CHAT],
            "alert_chats": [ALERT_CHAT],
            "poll_timeout": "1s",
        },
    )


@dataclass
class World:
    api: Api
    tokens: dict[str, str]
    command_id: int
    first: int  # the incident the command ran for (resolved)
    second: int  # the same alert again: its "last time" is `first`

    def headers(self, person: Person) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[person.name]}"}

    async def get(self, person: Person, path: str) -> httpx.Response:
        return await self.api.client.get(path, headers=self.headers(person))


async def _alert(api: Api, status: str = "firing") -> None:
    body = {"summary": "Disk / is full", "host": "web-1", "check": "ReadTest", "severity": "critical", "status": status}
    response = await api.client.post("/api/v1/alerts/generic", json=body, headers=api.ingest_headers)
    assert response.status_code == 200, response.text


async def _newest_incident(api: Api, token: str) -> int:
    response = await api.client.get("/api/v1/incidents", headers={"Authorization": f"Bearer {token}"})
    return int(response.json()["items"][0]["id"])


@pytest.fixture
async def world(api: Api, clock: FakeClock) -> World:
    services = api.services
    db = services.db
    tokens = {}
    for person in PEOPLE:
        tokens[person.name] = await services.tokens.create(
            TokenKind.API, f"{person.name}-cli", now=clock(), user_name=person.name
        )
        assert await services.users.set_password(person.name, PASSWORD)
    await register_agent(db, name="web-1", hostname="web-1", version="1", labels={}, allowlist_digest="", now=clock())
    await _alert(api)
    first = await _newest_incident(api, tokens["ada"])
    command = await create_command(
        db, requester="rita", host="web-1", agent_name="web-1", argv=["cat", f"/srv/{ARGV_MARK}"], timeout_s=30,
        now=clock(), incident_id=first,
    )  # fmt: skip
    await open_approval(
        db, command_id=command.id, digest="0" * 64, requester="rita", command_text=f"cat /srv/{ARGV_MARK}",
        rules=ApprovalRules(), now=clock(), platform=None, chat_id=None, facts={},
    )  # fmt: skip
    vote = await cast_vote(db, command.id, voter="carol", vote=Vote.APPROVE, digest=None, eligible=None, now=clock())
    assert vote.counted, vote.message
    clock.advance(seconds=5)
    output = f"disk report\n{OUTPUT_MARK} 97%\n"
    await finish_command(db, command.id, Finish(CommandStatus.SUCCEEDED, exit_code=0, output=output), now=clock())
    clock.advance(minutes=1)
    resolved = await api.client.post(
        f"/api/v1/incidents/{first}/resolve", headers={"Authorization": f"Bearer {tokens['ada']}"}
    )
    assert resolved.status_code == 200, resolved.text
    clock.advance(hours=2)
    await _alert(api)
    second = await _newest_incident(api, tokens["ada"])
    assert second != first
    return World(api, tokens, command.id, first, second)


def _shows_command(text: str) -> bool:
    """The body shows the command line or its output (a refused reader must see neither)."""
    return ARGV_MARK in text or OUTPUT_MARK in text


@pytest.mark.parametrize("person", PEOPLE, ids=[p.name for p in PEOPLE])
def test_rule_table(person: Person) -> None:
    """The rule alone, for each row of the table: requester, approver, covering policy, admin — and no one else."""
    policy = compile_policy(POLICY, parse_duration=parse_duration)
    decision = may_read(
        Reader(person.name, person.role),
        command_id=7,
        requester="rita",
        host="web-1",
        approvers={"carol"},
        policy=policy,
    )
    assert decision.allowed is person.may_read, (person.why, decision.reason)
    if not decision.allowed:
        assert "Ask rita or an admin" in decision.reason
        assert f'role "{person.role}"' in decision.reason


def test_rule_refuses_a_reader_who_is_no_longer_a_user_and_ignores_deny_rules_for_coverage() -> None:
    policy = compile_policy(
        {"locked": [{"hosts": ["web-*"], "commands": ["*"], "effect": "deny"}]}, parse_duration=parse_duration
    )
    gone = may_read(Reader("rita", None), command_id=1, requester="rita", host="web-1", policy=policy)
    assert not gone.allowed
    assert "not a TeleOps user" in gone.reason
    denied_only = may_read(Reader("lee", "locked"), command_id=1, requester="rita", host="web-1", policy=policy)
    assert not denied_only.allowed  # a deny rule names the host but grants nothing there
    unknown_role = may_read(Reader("lee", "ghost"), command_id=1, requester="rita", host="web-1", policy=policy)
    assert not unknown_role.allowed


def test_host_patterns_match_like_the_policy_case_insensitively() -> None:
    policy = compile_policy(POLICY, parse_duration=parse_duration)
    bob = Reader("bob", "operator")
    assert may_read(bob, command_id=1, requester="rita", host="WEB-2", policy=policy).allowed
    assert not may_read(bob, command_id=1, requester="rita", host="db-1", policy=policy).allowed


# -- the REST API ------------------------------------------------------------------------------------------------


async def _check_one_command(world: World, person: Person) -> None:
    response = await world.get(person, f"/api/v1/commands/{world.command_id}")
    if person.may_read:
        assert response.status_code == 200, response.text
        assert OUTPUT_MARK in response.json()["output"]
        return
    missing = await world.get(person, "/api/v1/commands/999999")
    assert response.status_code == 404
    # Refused exactly like a command that does not exist: the id confirms nothing.
    assert response.json()["detail"] == missing.json()["detail"].replace("999999", str(world.command_id))
    assert not _shows_command(response.text)


async def _check_one_command_waiting(world: World, person: Person) -> None:
    response = await world.get(person, f"/api/v1/commands/{world.command_id}?wait=0.1")
    assert response.status_code == (200 if person.may_read else 404), response.text
    assert _shows_command(response.text) is person.may_read


async def _check_ids(world: World, person: Person) -> None:
    response = await world.get(person, f"/api/v1/commands?ids={world.command_id}&wait=0.1")
    if person.may_read:
        assert response.status_code == 200, response.text
        assert [c["id"] for c in response.json()["items"]] == [world.command_id]
        assert OUTPUT_MARK in response.text
    else:
        assert response.status_code == 404
        assert f"no command {world.command_id}" in response.json()["detail"]
        assert not _shows_command(response.text)


async def _check_newest(world: World, person: Person) -> None:
    response = await world.get(person, "/api/v1/commands")
    assert response.status_code == 200, response.text
    body = response.json()
    ids = [c["id"] for c in body["items"]]
    if person.may_read:
        assert ids == [world.command_id]
        assert body["withheld"] == 0
        assert body["withheld_reason"] is None
        assert OUTPUT_MARK in response.text
    else:
        assert ids == []
        assert body["withheld"] == 1
        assert f'{person.name} (role "{person.role}")' in body["withheld_reason"]
        assert not _shows_command(response.text)


async def _check_cancel(world: World, person: Person) -> None:
    response = await world.api.client.post(f"/api/v1/commands/{world.command_id}/cancel", headers=world.headers(person))
    if not person.may_read:
        assert response.status_code == 404
        assert not _shows_command(response.text)
    elif person.name in ("rita", "ada"):  # who may cancel: it ended already
        assert response.status_code == 409, response.text
    else:  # may read it, may not cancel it
        assert response.status_code == 403, response.text


async def _check_vote(world: World, person: Person) -> None:
    response = await world.api.client.post(
        f"/api/v1/commands/{world.command_id}/approve", headers=world.headers(person)
    )
    assert not _shows_command(response.text), response.text  # a refused vote's reason would quote the command
    if person.may_read:
        assert response.status_code == 409, response.text  # own request, or already decided: counted for no one
    else:
        assert response.status_code == 404, response.text
        assert "does not exist" in response.json()["detail"]


async def _check_incident(world: World, person: Person) -> None:
    response = await world.get(person, f"/api/v1/incidents/{world.first}")
    assert response.status_code == 200, response.text  # incidents are shared with everyone
    events = [e for e in response.json()["timeline"] if e["data"].get("command_id") == world.command_id]
    assert [e["kind"] for e in events] == ["command.requested", "command.finished"]
    assert _shows_command(response.text) is person.may_read
    for event in events:
        if person.may_read:
            assert "withheld" not in event["data"]
        else:
            assert "argv" not in event["data"]
            assert "output_excerpt" not in event["data"]
            assert "Ask rita or an admin" in event["data"]["withheld"]
            assert event["data"]["host"] == "web-1"
    finished = events[1]["data"]
    assert finished["status"] == "succeeded"
    assert finished["exit_code"] == 0


async def _check_history(world: World, person: Person) -> None:
    response = await world.get(person, f"/api/v1/incidents/{world.second}/history")
    assert response.status_code == 200, response.text
    view = response.json()
    [command] = view["last"]["commands"]
    assert command["id"] == world.command_id
    assert command["exit_code"] == 0
    assert _shows_command(response.text) is person.may_read
    if person.may_read:
        assert command["withheld"] is None
        assert [c["id"] for c in view["run_again"]] == [world.command_id]
    else:
        assert command["argv"] == []
        assert command["output_excerpt"] == ""
        assert "Ask rita or an admin" in command["withheld"]
        assert view["run_again"] == []  # never offered to run again by someone who may not see it
        assert any("[command not shown to you] on web-1" in line for line in view["text"])


async def _check_export(world: World, person: Person) -> None:
    response = await world.get(person, f"/api/v1/incidents/{world.first}/export.md")
    assert response.status_code == 200, response.text
    assert _shows_command(response.text) is person.may_read
    assert ("[command not shown to you]" in response.text) is not person.may_read
    assert "Resolved" in response.text


async def _check_search(world: World, person: Person) -> None:
    by_output = await world.get(person, f"/api/v1/scenarios?q={OUTPUT_MARK}")
    assert by_output.status_code == 200, by_output.text
    found = {h["incident_id"] for h in by_output.json()["items"]}
    # Command text is searched only for who may read every command (here: the admin); a hit would tell the others
    # what a command they may not read printed.
    assert (world.first in found) is (person.role == "admin")
    assert not _shows_command(by_output.text) or person.role == "admin"
    by_name = await world.get(person, "/api/v1/scenarios?q=ReadTest")
    assert world.first in {h["incident_id"] for h in by_name.json()["items"]}  # incidents stay searchable


API_PATHS: dict[str, Callable[[World, Person], Any]] = {
    "GET /commands/{id}": _check_one_command,
    "GET /commands/{id}?wait": _check_one_command_waiting,
    "GET /commands?ids&wait": _check_ids,
    "GET /commands": _check_newest,
    "POST /commands/{id}/cancel": _check_cancel,
    "POST /commands/{id}/approve": _check_vote,
    "GET /incidents/{id}": _check_incident,
    "GET /incidents/{id}/history": _check_history,
    "GET /incidents/{id}/export.md": _check_export,
    "GET /scenarios?q": _check_search,
}


@pytest.mark.parametrize("path", list(API_PATHS))
async def test_every_api_read_path_applies_the_rule_to_every_reader(world: World, path: str) -> None:
    for person in PEOPLE:
        try:
            await API_PATHS[path](world, person)
        except AssertionError as exc:
            raise AssertionError(f"{path} for {person.name} ({person.why}): {exc}") from exc


async def test_incident_actions_answer_with_the_timeline_the_reader_may_read(world: World, clock: FakeClock) -> None:
    """Ack / resolve / snooze answer with the incident: its timeline follows the rule too."""
    db = world.api.services.db
    command = await create_command(
        db, requester="rita", host="web-1", agent_name="web-1", argv=["cat", f"/srv/{ARGV_MARK}"], timeout_s=30,
        now=clock(), incident_id=world.second,
    )  # fmt: skip
    await open_approval(
        db, command_id=command.id, digest="1" * 64, requester="rita", command_text="x", rules=ApprovalRules(),
        now=clock(), platform=None, chat_id=None, facts={},
    )  # fmt: skip
    await cast_vote(db, command.id, voter="carol", vote=Vote.APPROVE, digest=None, eligible=None, now=clock())
    await finish_command(db, command.id, Finish(CommandStatus.FAILED, exit_code=1, output=OUTPUT_MARK), now=clock())
    for person in PEOPLE:
        response = await world.api.client.post(
            f"/api/v1/incidents/{world.second}/snooze", json={"duration": "30m"}, headers=world.headers(person)
        )
        assert response.status_code == 200, response.text
        assert _shows_command(response.text) is person.may_read, person.name
        withheld = [e for e in response.json()["timeline"] if "withheld" in e["data"]]
        assert len(withheld) == (0 if person.may_read else 2), person.name


async def test_a_vote_on_a_pending_request_tells_an_outsider_nothing(world: World, clock: FakeClock) -> None:
    """A refused vote says why, and the why quotes the command: someone who may not read it gets a 404 instead."""
    db = world.api.services.db
    command = await create_command(
        db, requester="rita", host="web-1", agent_name="web-1", argv=["cat", f"/srv/{ARGV_MARK}"], timeout_s=30,
        now=clock(), incident_id=None,
    )  # fmt: skip
    await open_approval(
        db, command_id=command.id, digest="2" * 64, requester="rita", command_text=f"cat /srv/{ARGV_MARK}",
        rules=ApprovalRules(), now=clock(), platform=None, chat_id=None, facts={},
    )  # fmt: skip
    expected = {"vic": 404, "dave": 404, "carol": 404, "rita": 409, "bob": 409, "ada": 200}
    for name, status in expected.items():  # outsiders first, while the request is still pending
        person = next(p for p in PEOPLE if p.name == name)
        response = await world.api.client.post(f"/api/v1/commands/{command.id}/deny", headers=world.headers(person))
        assert response.status_code == status, (name, response.text)
        # carol voted on the other command, not on this one; bob may read it (his role covers web-1) and is told
        # why his vote does not count; ada's deny counts.
        if status == 404:
            assert not _shows_command(response.text), response.text
            assert "does not exist" in response.json()["detail"]


async def test_the_approvers_are_who_voted(world: World) -> None:
    assert await approvers_of(world.api.services.db, [world.command_id, 424242]) == {world.command_id: {"carol"}}
    access = ReadAccess(world.api.services.db, Reader("carol", "dbops"))
    [decision] = (await access.decide_ids([world.command_id])).values()
    assert decision.allowed
    assert "voted on the approval" in decision.reason


# -- the web incident page ---------------------------------------------------------------------------------------


def _form_token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the page has no CSRF field"
    return match.group(1)


async def test_the_web_incident_pages_apply_the_rule(world: World) -> None:
    client = world.api.client
    for person in PEOPLE:
        client.cookies.clear()
        page = await client.get("/ui/login")
        login = await client.post(
            "/ui/login", data={"username": person.name, "password": PASSWORD, "csrf_token": _form_token(page.text)}
        )
        assert login.status_code == 303, login.text
        assert SESSION_COOKIE in login.cookies
        timeline = await client.get(f"/ui/incidents/{world.first}")
        last_time = await client.get(f"/ui/incidents/{world.second}")
        for response in (timeline, last_time):
            assert response.status_code == 200, response.text
            assert _shows_command(response.text) is person.may_read, (person.name, response.url)
        assert ("Command not shown to you" in timeline.text) is not person.may_read, person.name
        assert ("[command not shown to you]" in last_time.text) is not person.may_read, person.name
    client.cookies.clear()


# -- chat /history -----------------------------------------------------------------------------------------------


async def test_chat_history_applies_the_rule_to_who_asks(
    world: World, fake_telegram: FakeTelegram, clock: FakeClock
) -> None:
    def alert_message_of_second() -> Any:
        return next((m for m in fake_telegram.chat_messages(ALERT_CHAT) if f"#{world.second}" in m.text), None)

    alert = await eventually(alert_message_of_second, what="the second incident's alert message")
    for person in PEOPLE:
        before = len(fake_telegram.chat_messages(ALERT_CHAT))
        fake_telegram.push_update(
            fake_telegram.message_update(
                ALERT_CHAT,
                person.telegram_id,
                "/history",
                username=person.name,
                reply_to=alert.message_id,
                date=int(clock().timestamp()),  # the controller's (fake) now: not a message from the future
            )
        )

        def answer(before: int = before) -> Any:
            new = fake_telegram.chat_messages(ALERT_CHAT)[before:]
            return next((m for m in new if "Last time" in m.text), None)

        reply = await eventually(answer, what=f"the /history answer for {person.name}")
        assert _shows_command(reply.text) is person.may_read, (person.name, reply.text)
        assert ("[command not shown to you]" in reply.text) is not person.may_read, (person.name, reply.text)


async def test_chat_history_search_looks_into_command_output_only_for_who_reads_every_command(
    world: World, fake_telegram: FakeTelegram, clock: FakeClock
) -> None:
    for person in (p for p in PEOPLE if p.name in ("ada", "bob", "vic")):
        before = len(fake_telegram.chat_messages(ALERT_CHAT))
        fake_telegram.push_update(
            fake_telegram.message_update(
                ALERT_CHAT,
                person.telegram_id,
                f"/history {OUTPUT_MARK}",
                username=person.name,
                date=int(clock().timestamp()),
            )
        )

        def answer(before: int = before) -> Any:
            new = fake_telegram.chat_messages(ALERT_CHAT)[before:]
            return next((m for m in new if "Scenarios matching" in m.text or "No scenario mentions" in m.text), None)

        reply = await eventually(answer, what=f"the /history search answer for {person.name}")
        if person.role == "admin":
            assert f"#{world.first}" in reply.text, reply.text
        else:
            assert "No scenario mentions" in reply.text
            assert "you may not read every command" in reply.text


# -- the web console's room ----------------------------------------------------------------------------------------


async def test_the_console_room_applies_the_rule_live_and_in_its_history(world: World) -> None:
    """The console's messages about rita's command (its result, its output file) are pushed to every open tab and
    listed in every history: with the line and output for who may read it, one line in their place for the others
    (chat/console/read_rule.py). The WebSocket end to end is tests/security/test_console_read_rule.py."""
    services = world.api.services
    console = services.chat.gateway("console")
    assert isinstance(console, ConsoleGateway)
    tabs = {person.name: console.subscribe(person.name) for person in PEOPLE}
    try:
        result = Message(
            title=f"web-1 $ cat /srv/{ARGV_MARK}", code=(CodeBlock(OUTPUT_MARK),), command_id=world.command_id
        )
        result_id = await console.send(CONSOLE_CHAT_ID, render(result, CONSOLE_CAPABILITIES))
        caption = render(Message(body="Full output", command_id=world.command_id), CONSOLE_CAPABILITIES)
        file_id = await console.send_file(CONSOLE_CHAT_ID, "out.txt", OUTPUT_MARK.encode(), caption=caption)
        shared = await console.send(CONSOLE_CHAT_ID, render(Message(body="Disk / is full"), CONSOLE_CAPABILITIES))
        for person in PEOPLE:
            queue = tabs[person.name].queue
            live = [queue.get_nowait()["message"] for _ in range(queue.qsize())]
            assert [m["id"] for m in live] == [int(result_id), int(file_id), int(shared)], person.name
            history = {m["id"]: m for m in await console.history(person.name)}
            for view in (*live[:2], history[int(result_id)], history[int(file_id)]):
                assert _shows_command(str(view)) is person.may_read, (person.name, person.why, view)
                assert ("withheld" in view) is not person.may_read, person.name
                if not person.may_read:
                    assert view["text"] == "a command by rita on web-1 — not yours to read"
                    assert "Ask rita or an admin" in view["withheld"]
                    assert "file" not in view
            assert live[2]["text"] == history[int(shared)]["text"] == "Disk / is full"  # shared with everyone
    finally:
        for tab in tabs.values():
            console.unsubscribe(tab)
