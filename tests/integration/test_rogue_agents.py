"""A rogue agent — a real WebSocket client holding its own valid agent token — reports on a command that was
sent to another host's real `teleops agent`: started, output, exit with invented output, refused. Each report
is refused with `not_yours`, audited and counted; the command ends with the real agent's real result."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx
import websockets

from teleops.wire import Ack, Error, Exec, Exit, Hello, Output, Refused, Started, Welcome, decode, encode
from tests.integration.servers import TeleopsServer, agent_online, eventually, start_agent, stop_process


async def _forge(server: TeleopsServer, token: str, command_id: str) -> list[Error]:
    """As agent `rogue-1`: hello, then four reports about `command_id`; the controller's answers."""
    url = server.url.replace("http://", "ws://") + "/api/v1/agent/ws"
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as socket:
        await socket.send(encode(Hello(agent="rogue-1", hostname="rogue-1", version="0.1.0")))
        assert isinstance(decode(await socket.recv()), Welcome)
        for forged in (
            Started(command_id=command_id, pid=1),
            Output(command_id=command_id, seq=0, data="forged output\n"),
            Exit(command_id=command_id, exit_code=0, output="forged output\n", output_bytes=14, duration_s=0.1),
            Refused(command_id=command_id, reason="forged refusal"),
        ):
            await socket.send(encode(forged))
        # Four refusals, and an ack of the exit (it only lets a sender drop the file from its own spool).
        answers = [decode(await asyncio.wait_for(socket.recv(), 10)) for _ in range(5)]
    assert sum(isinstance(answer, Ack) for answer in answers) == 1, answers
    return [answer for answer in answers if isinstance(answer, Error)]


def test_a_rogue_agent_cannot_report_on_another_hosts_command(
    teleops_server: Callable[..., TeleopsServer], tmp_path: Path
) -> None:
    server = teleops_server()
    real = start_agent(server, "web-1", tmp_path / "web-1", allow=("echo *",))
    rogue_token = server.create_token("agent", "rogue-1")
    try:
        eventually(lambda: agent_online(server, "web-1", real), what="web-1 to connect")
        posted = httpx.post(
            f"{server.url}/api/v1/commands",
            json={"host": "web-1", "command": "echo real output", "timeout": 30},
            headers=server.api_headers,
            timeout=10,
        )
        assert posted.status_code == 202, posted.text
        command_id = posted.json()["id"]
        # A command of another host that was never dispatched: an id the rogue guesses ahead.
        errors = asyncio.run(_forge(server, rogue_token, str(command_id)))
        ahead = asyncio.run(_forge(server, rogue_token, str(command_id + 1000)))
        assert [error.code for error in [*errors, *ahead]] == ["not_yours"] * 8

        done = httpx.get(
            f"{server.url}/api/v1/commands/{command_id}", params={"wait": 30}, headers=server.api_headers, timeout=40
        ).json()
        assert (done["status"], done["output"], done["exit_code"]) == ("succeeded", "real output\n", 0)
        assert server.metric("teleops_agent_messages_rejected_total") == 8
        with sqlite3.connect(server.sqlite_path) as db:
            audited = db.execute(
                "SELECT actor, subject FROM audit_events WHERE action = 'agent.message_rejected' ORDER BY seq"
            ).fetchall()
        assert audited[:4] == [("agent:rogue-1", f"command:{command_id}")] * 4
        assert len(audited) == 8
    finally:
        stop_process(real)


async def _claim_and_listen(server: TeleopsServer, token: str, hostname: str, seconds: float) -> list[object]:
    """As agent `rogue-2`: announce web-1's host label as its hostname (a higher tier of host resolution) and
    web-1's hostname as its host label, then collect what the controller sends."""
    url = server.url.replace("http://", "ws://") + "/api/v1/agent/ws"
    received: list[object] = []
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as socket:
        hello = Hello(agent="rogue-2", hostname="frontend-1", version="0.1.0", labels={"host": hostname})
        await socket.send(encode(hello))
        assert isinstance(decode(await socket.recv()), Welcome)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    received.append(decode(await socket.recv()))
    return received


def test_a_rogue_agent_claiming_another_hosts_names_does_not_get_its_commands(
    teleops_server: Callable[..., TeleopsServer], tmp_path: Path
) -> None:
    server = teleops_server()
    real = start_agent(server, "web-1", tmp_path / "web-1", allow=("echo *",), labels=("host=frontend-1",))
    rogue_token = server.create_token("agent", "rogue-2")
    hostname = os.uname().nodename  # what web-1 announced, and was bound to at its first connection
    try:
        eventually(lambda: agent_online(server, "web-1", real), what="web-1 to connect")

        async def scenario() -> tuple[list[object], list[dict[str, object]]]:
            listening = asyncio.create_task(_claim_and_listen(server, rogue_token, hostname, seconds=6))
            await asyncio.sleep(1.5)  # the rogue is connected and has made its claims
            results = []
            async with httpx.AsyncClient(base_url=server.url, headers=server.api_headers, timeout=40) as client:
                for host in (hostname, "frontend-1"):  # before: "frontend-1" went to the rogue (hostname tier)
                    posted = await client.post("/api/v1/commands", json={"host": host, "command": "echo real"})
                    assert posted.status_code == 202, posted.text
                    done = await client.get(f"/api/v1/commands/{posted.json()['id']}", params={"wait": 30})
                    results.append(done.json())
            return await listening, results

        received, results = asyncio.run(scenario())
        assert not [message for message in received if isinstance(message, Exec)], received
        assert [(r["status"], r["output"]) for r in results] == [("succeeded", "real\n")] * 2
        agents = {
            a["name"]: a for a in httpx.get(f"{server.url}/api/v1/agents", headers=server.api_headers).json()["items"]
        }
        assert agents["web-1"]["bound_hostname"] == hostname
        assert agents["rogue-2"]["bound_hostname"] is None
        assert "which agent 'web-1' answers for" in agents["rogue-2"]["claim_conflict"]
        with sqlite3.connect(server.sqlite_path) as db:
            refused = db.execute("SELECT actor FROM audit_events WHERE action = 'agent.claim_refused'").fetchall()
        assert refused == [("agent:rogue-2",)]
    finally:
        stop_process(real)
