"""Commands reach the agent on whichever replica it is connected to (issue #23, item 1; docs/replicas.md).

Real: one PostgreSQL, two `teleops serve` processes on it (replica A and replica B), a real `teleops agent`
connected to B only, the commands it runs. Every command is asked for on A, whose hub has no connection to the
agent: it reaches the agent only through the database and a NOTIFY to B, and its output and end come back to A's
caller through the database. Replicas are stopped by PID (kill -9 where the test says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import websockets

from teleops.store.wakeups import LISTENER_NAME
from tests.integration.servers import PostgresServer, TeleopsServer, eventually, start_teleops, stop_process
from tests.integration.test_agent_e2e import (
    AgentFactory,
    AgentProcess,
    command,
    connected_agent,
    final,
    log_count,
    post_command,
    run_command,
    script,
    start_agent,
)

__all__ = ["start_agent"]  # the fixture, imported for pytest

# Fast enough to see a dead replica's agent as gone and its command as lost within the test.
# The replicas' LISTEN connections to this test's database.
LISTENERS = "FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()"
# The web console signs people in with a password alone (the chat path is the subject, not sign-in).
REPLICA_CONFIG: dict[str, Any] = {
    "agents": {"lost_after": "2s", "heartbeat": "1s"},
    "twofactor": {"web_signin": "enrolled"},
}


@dataclass
class Replicas:
    a: TeleopsServer
    b: TeleopsServer
    database_url: str


@pytest.fixture
def replicas(postgres_server: PostgresServer, tmp_path: Path) -> Iterator[Replicas]:
    """Replica A and replica B of one controller on one fresh PostgreSQL database, stopped by PID at the end."""
    url = postgres_server.create_database()
    started: list[TeleopsServer] = []
    try:
        started.append(start_teleops(tmp_path / "replica-a", database_url=url, config=REPLICA_CONFIG))
        # Replicas share the keys kept outside the database (docs/replicas.md, "Key files").
        started.append(
            start_teleops(tmp_path / "replica-b", database_url=url, config=REPLICA_CONFIG, keys_from=started[0])
        )
        yield Replicas(started[0], started[1], url)
    finally:
        for server in started:
            if server.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    server.process.send_signal(signal.SIGCONT)  # a test may have left it frozen
            stop_process(server.process)
        postgres_server.drop_database(url)


def agent_on_b(replicas: Replicas, start: AgentFactory, name: str, *, allow: tuple[str, ...] = ()) -> AgentProcess:
    """A real agent connected to replica B, once replica A counts it online (A would dispatch to it)."""
    agent = start(replicas.b.url, name, replicas.a.create_token("agent", name), allow=allow)
    connected_agent(replicas.b, agent)
    connected_agent(replicas.a, agent)
    return agent


def wait_for(server: TeleopsServer, command_id: int, seconds: float) -> dict[str, Any]:
    """`GET /api/v1/commands/{id}?wait=…` on `server`: answers when the command ends (or after `seconds`)."""
    response = httpx.get(
        f"{server.url}/api/v1/commands/{command_id}",
        params={"wait": seconds},
        headers=server.api_headers,
        timeout=seconds + 10,
    )
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def test_a_command_asked_on_a_runs_on_the_agent_of_b_and_its_output_streams_back_to_a(
    replicas: Replicas, start_agent: AgentFactory, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.txt"
    # More output than the agent holds back to redact a secret split across chunks: the first part streams at once.
    job = script(tmp_path / "job.sh", f"echo run >> {runs}; seq 1 2000; sleep 2; echo second; exit 3")
    agent = agent_on_b(replicas, start_agent, "web-1", allow=(str(job),))

    response = post_command(replicas.a, "web-1", str(job))
    assert response.status_code == 202, response.text  # dispatched, not 409 "offline"
    command_id: int = response.json()["id"]
    assert response.json()["status"] == "running"

    # Streamed: A's caller sees the first line while the command still runs on B's agent.
    streaming = eventually(
        lambda: c if (c := command(replicas.a, command_id))["output"].startswith("1\n2\n3\n") else None,
        what="the first output lines on replica A",
    )
    assert streaming["status"] == "running"
    assert "second" not in streaming["output"]

    result = wait_for(replicas.a, command_id, 30)  # woken by B's NOTIFY when the command ends
    assert result["status"] == "failed"
    assert result["exit_code"] == 3
    assert result["output"] == "".join(f"{n}\n" for n in range(1, 2001)) + "second\n"
    assert runs.read_text() == "run\n"  # ran exactly once
    assert log_count(agent.text(), "agent.command_started", command_id) == 1
    assert log_count(replicas.a.log.read_text(), "command.relayed", command_id) == 1
    assert log_count(replicas.b.log.read_text(), "command.finished", command_id) == 1
    assert log_count(replicas.a.log.read_text(), "command.finished", command_id) == 0  # A holds no connection
    # /metrics counts the hand-over on both sides (issue #23: claims and failovers are visible).
    assert replicas.a.metric("teleops_command_handovers_total", direction="out") == 1
    assert replicas.b.metric("teleops_command_handovers_total", direction="in") == 1

    # The same command asked on B, where the agent is, takes the in-memory path: nothing is relayed.
    local_id = run_command(replicas.b, "web-1", "echo here")
    assert final(replicas.b, local_id)["output"] == "here\n"
    assert log_count(replicas.b.log.read_text(), "command.relayed", local_id) == 0


def test_a_command_line_with_a_secret_reaches_the_agent_of_b_whole_and_is_stored_masked(
    replicas: Replicas, start_agent: AgentFactory
) -> None:
    agent_on_b(replicas, start_agent, "web-1")
    command_id = run_command(replicas.a, "web-1", "echo --password S3cret-value")

    result = wait_for(replicas.a, command_id, 30)
    assert result["status"] == "succeeded", result
    assert result["argv"] == ["echo", "--password", "[REDACTED]"]  # what is stored and shown
    assert result["output"] == "--password S3cret-value\n"  # what the agent received and ran: the original
    assert relays_left(replicas) == 0  # taken, nothing left behind


def test_a_hand_over_forged_in_the_database_is_refused_and_nothing_runs(
    replicas: Replicas, start_agent: AgentFactory, tmp_path: Path
) -> None:
    """Whoever can write the database but holds no argv.key (T29, T30) inserts a running command and its hand-over to
    the agent's replica, with a made-up signature, and wakes that replica: it must not send it."""
    canary = tmp_path / "forged-ran"
    job = script(tmp_path / "job.sh", f"touch {canary}")
    agent = agent_on_b(replicas, start_agent, "web-1", allow=(str(job),))
    [replica_b] = execute(replicas, "SELECT replica FROM agent_connections WHERE agent_name = 'web-1'")
    [command_id] = execute(
        replicas,
        "INSERT INTO commands (requester, host, agent_name, argv, status, timeout_s, output, output_bytes, truncated,"
        " created_at, dispatched_at) VALUES ('admin', 'web-1', 'web-1', $1, 'running', 30, '', 0, false,"
        " timezone('UTC', now()), timezone('UTC', now())) RETURNING id",
        json.dumps([str(job)]),
    )
    execute(
        replicas,
        "WITH relay AS (INSERT INTO command_relays (command_id, kind, replica, origin, tag, created_at)"
        " VALUES ($1, 'exec', $2, 'intruder', 'hmac-sha256:' || repeat('0', 64), timezone('UTC', now())) RETURNING 1)"
        " SELECT pg_notify('teleops_commands', json_build_object('what', 'relay', 'to', $2::text)::text) FROM relay",
        command_id,
        replica_b,
    )

    result = final(replicas.a, command_id)
    assert result["status"] == "failed"
    assert "did not carry a valid signature" in result["reason"]
    assert log_count(replicas.b.log.read_text(), "command.relay_refused", command_id) == 1
    assert log_count(agent.text(), "agent.command_started", command_id) == 0
    assert not canary.exists()


def test_a_frozen_replica_b_resumed_after_its_command_ended_lost_never_sends_it(
    replicas: Replicas, start_agent: AgentFactory, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.txt"
    job = script(tmp_path / "job.sh", f"echo run >> {runs}")
    agent = agent_on_b(replicas, start_agent, "web-1", allow=(str(job),))

    replicas.b.process.send_signal(signal.SIGSTOP)  # B holds the agent's connection but does nothing
    try:
        # Within the few seconds B's connection row stays fresh, A still hands the command to B.
        command_id = run_command(replicas.a, "web-1", str(job), timeout=1)
        result = final(replicas.a, command_id, timeout=60)  # B's row went stale: agent unreachable, ended lost
        assert result["status"] == "lost"
        assert "agent web-1 unreachable since" in result["reason"]
    finally:
        replicas.b.process.send_signal(signal.SIGCONT)

    # B wakes believing it holds the agent, takes the hand-over, and finds the command ended: nothing is sent.
    eventually(
        lambda: re.search(rf"routing.relays_dropped +commands=\[{command_id}\]", replicas.b.log.read_text()),
        what="replica B to drop the hand-over of the ended command",
    )
    assert relays_left(replicas) == 0
    connected_agent(replicas.a, agent)  # B refreshes its rows again: A sees the agent back
    assert command(replicas.a, command_id)["status"] == "lost"
    assert not runs.exists()  # never ran
    assert log_count(agent.text(), "agent.command_started", command_id) == 0


def relays_left(replicas: Replicas) -> int:
    """Rows in `command_relays`: hand-overs not taken yet."""
    [count] = execute(replicas, "SELECT count(*) FROM command_relays")
    return int(count)


def execute(replicas: Replicas, query: str, *args: Any) -> list[Any]:
    """The first column of each row of `query` on the replicas' database."""

    async def run() -> list[Any]:
        conn = await asyncpg.connect(replicas.database_url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            return [row[0] for row in await conn.fetch(query, *args)]
        finally:
            await conn.close()

    return asyncio.run(run())


def test_wake_ups_lost_while_the_listeners_are_cut_only_delay_a_command_and_the_listeners_come_back(
    replicas: Replicas, start_agent: AgentFactory
) -> None:
    agent_on_b(replicas, start_agent, "web-1")
    assert execute(replicas, f"SELECT pg_terminate_backend(pid) {LISTENERS}", LISTENER_NAME) == [True, True]

    # Asked at once, while the listeners reconnect: B finds the hand-over when it re-reads (after reconnecting, or
    # at its next poll), and A finds the end the same way.
    command_id = run_command(replicas.a, "web-1", "echo still here")
    result = wait_for(replicas.a, command_id, 30)
    assert result["status"] == "succeeded", result
    assert result["output"] == "still here\n"
    for server in (replicas.a, replicas.b):
        assert "wakeups.listener_down" in server.log.read_text()
    eventually(
        lambda: execute(replicas, f"SELECT true {LISTENERS}", LISTENER_NAME) == [True, True],
        what="both replicas to listen again",
    )


def test_a_command_typed_in_the_web_console_of_a_runs_on_the_agent_of_b_and_its_result_is_in_the_chat(
    replicas: Replicas, start_agent: AgentFactory
) -> None:
    agent_on_b(replicas, start_agent, "web-1")
    password = replicas.a.cli("user", "set-password", "admin", "--generate").stdout.strip().splitlines()[-1]
    mark = "consolemark7q"

    def shows_the_result(message: dict[str, Any]) -> bool:
        return message.get("author") is None and mark in message["text"] and "· succeeded · exit 0" in message["text"]

    async def say_then_read() -> None:
        cookie = await console_login(replicas.a, password)
        async with console(replicas.a, cookie) as socket:
            await socket.send(json.dumps({"type": "text", "text": f"/run web-1 echo {mark}"}))
            # Live, whichever replica's outbox worker writes the answer: a console write on B is pushed to A's tabs.
            async with asyncio.timeout(20):
                async for raw in socket:
                    frame = json.loads(raw)
                    if frame["type"] in ("message", "edit") and shows_the_result(frame["message"]):
                        return

    asyncio.run(say_then_read())
    [command_id] = execute(replicas, "SELECT id FROM commands WHERE argv::text LIKE $1", f"%{mark}%")
    assert log_count(replicas.a.log.read_text(), "command.relayed", command_id) == 1
    assert log_count(replicas.b.log.read_text(), "command.finished", command_id) == 1


def test_an_open_console_tab_on_b_sees_live_what_replica_a_wrote(replicas: Replicas) -> None:
    """A message written on replica A (here the announcement of an alert A ingested, delivered by A's outbox worker)
    reaches a console tab open on replica B at once, not only at B's next page load."""
    password = replicas.a.cli("user", "set-password", "admin", "--generate").stdout.strip().splitlines()[-1]
    name = "ConsoleAcrossReplicas"

    async def watch_b_while_a_ingests() -> None:
        cookie = await console_login(replicas.b, password)
        async with console(replicas.b, cookie) as socket:
            history = json.loads(await socket.recv(decode=True))
            assert not any(name in m["text"] for m in history["messages"])
            body = {"alerts": [{"status": "firing", "labels": {"alertname": name, "instance": "web-1"},
                                "annotations": {}, "startsAt": "2026-12-06T10:00:00Z", "fingerprint": "x1"}]}  # fmt: skip
            async with httpx.AsyncClient(timeout=30) as client:
                answer = await client.post(
                    f"{replicas.a.url}/api/v1/alerts/alertmanager", json=body, headers=replicas.a.ingest_headers
                )
                assert answer.status_code == 200, answer.text
            async with asyncio.timeout(15):
                async for raw in socket:
                    frame = json.loads(raw)
                    if frame["type"] == "message" and name in frame["message"]["text"]:
                        break

    asyncio.run(watch_b_while_a_ingests())
    # Written by A (the ingest's own hand-off, ADR 0007), so B's tab had it only through the wake-up.
    query = "SELECT claimed_by FROM outbox WHERE platform = 'console' AND payload::text LIKE $1 ORDER BY id LIMIT 1"
    [claimed_by] = execute(replicas, query, f"%{name}%")
    assert claimed_by.split("/")[1] == str(replicas.a.process.pid)


async def console_login(server: TeleopsServer, password: str) -> str:
    """Sign `admin` in to `server`'s web UI over real HTTP; the session's Cookie header."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        page = await client.get("/ui/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token, page.text
        answer = await client.post("/ui/login", data={"username": "admin", "password": password,
                                                      "csrf_token": token.group(1)})  # fmt: skip
        assert answer.status_code == 303, answer.text
        return "; ".join(f"{k}={v}" for k, v in client.cookies.items())


@contextlib.asynccontextmanager
async def console(server: TeleopsServer, cookie: str) -> AsyncIterator[Any]:
    """The web console's WebSocket on `server` (its first frame is the history)."""
    host = server.url.removeprefix("http://")
    async with websockets.connect(
        f"ws://{host}/ui/console/ws",
        origin=websockets.Origin(server.url),
        additional_headers={"Cookie": cookie},
        open_timeout=20,
    ) as socket:
        yield socket


def test_a_cancel_asked_on_a_stops_the_command_running_on_the_agent_of_b(
    replicas: Replicas, start_agent: AgentFactory
) -> None:
    agent_on_b(replicas, start_agent, "web-1")
    command_id = run_command(replicas.a, "web-1", "sleep 60", timeout=120)
    eventually(lambda: command(replicas.a, command_id)["started_at"], what="the agent to start the command")

    cancelled = httpx.post(
        f"{replicas.a.url}/api/v1/commands/{command_id}/cancel", headers=replicas.a.api_headers, timeout=10
    )
    assert cancelled.status_code == 202, cancelled.text

    result = wait_for(replicas.a, command_id, 30)
    assert result["status"] == "killed"
    assert log_count(replicas.a.log.read_text(), "command.cancel_relayed", command_id) == 1


def test_an_agent_online_on_no_replica_is_refused_409_with_the_offline_message(
    replicas: Replicas, start_agent: AgentFactory
) -> None:
    agent = agent_on_b(replicas, start_agent, "web-1")
    stop_process(agent.process)
    eventually(lambda: not (_online(replicas.a, "web-1") or _online(replicas.b, "web-1")), what="the agent offline")
    response = post_command(replicas.a, "web-1", "echo hi")
    assert response.status_code == 409, response.text
    assert "agent web-1 for host 'web-1' is offline" in response.json()["detail"]
    assert "nothing was run" in response.json()["detail"]


def _online(server: TeleopsServer, name: str) -> bool:
    items = httpx.get(f"{server.url}/api/v1/agents", headers=server.api_headers, timeout=10).json()["items"]
    return any(item["name"] == name and item["online"] for item in items)


def test_replica_b_killed_mid_command_ends_it_lost_on_a_and_the_late_result_replaces_it(
    replicas: Replicas, start_agent: AgentFactory, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.txt"
    job = script(tmp_path / "job.sh", f"echo run >> {runs}; sleep 3; echo done")
    agent = agent_on_b(replicas, start_agent, "web-1", allow=(str(job),))
    command_id = run_command(replicas.a, "web-1", str(job), timeout=5)
    eventually(lambda: command(replicas.a, command_id)["started_at"], what="the agent to start the command")

    replicas.b.process.kill()  # kill -9: no goodbye, B's connection rows are left to go stale
    replicas.b.process.wait()

    result = final(replicas.a, command_id, timeout=60)  # a known end, not `running` forever
    assert result["status"] == "lost"
    assert "agent web-1 unreachable since" in result["reason"]
    assert not _online(replicas.a, "web-1")

    # The agent finished the command meanwhile and spooled its result; once it reaches a live replica (as behind a
    # load balancer), that result replaces `lost`.
    results = agent.state_dir / "results"
    eventually(lambda: next(iter(results.glob(f"{command_id}.*.json")), None), what="the agent to spool the result")
    stop_process(agent.process)
    token = (Path(agent.log).parent / "token").read_text().strip()
    again = start_agent(replicas.a.url, "web-1", token, state_dir=agent.state_dir, allow=(str(job),))
    connected_agent(replicas.a, again)
    result = final_status(replicas.a, command_id, "succeeded")
    assert result["output"] == "done\n"
    assert runs.read_text() == "run\n"


def final_status(server: TeleopsServer, command_id: int, status: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        current = command(server, command_id)
        return current if current["status"] == status else None

    return eventually(check, what=f"command {command_id} to be {status}")
