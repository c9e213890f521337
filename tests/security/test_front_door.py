"""The HTTP front door (server/front_door.py) against a real `teleops serve` on loopback, over raw sockets.

Issue #18 item 1: no unauthenticated request may cost the controller more than a few kilobytes. A 200 MB body
without credentials is answered before it is sent and the socket is closed (the controller's RSS, read from
/proc, stays flat); an oversize body with a valid token is 413; stalled bodies are answered 408 and closed
while the server keeps answering; a bad body without a token is 401, never 422. And the smaller cases of item 6
that need the real process: a revoked token stops working at once when another process revokes it, approving
a command its requester cancelled is 409, a storage failure on POST /api/v1/commands is 503 with Retry-After.
"""

from __future__ import annotations

import contextlib
import select
import socket
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.integration.servers import TeleopsServer, eventually, start_teleops, stop_process

MiB = 1024 * 1024
HUGE = 200 * MiB
BODY_TIMEOUT_S = 2
HEADER_TIMEOUT_S = 2
STALLED = 200
POLICY = {
    "roles": {
        "operator": [
            {"hosts": ["*"], "commands": ["uptime"], "require_approval": True},
            {"hosts": ["*"], "commands": ["echo *"]},
        ]
    }
}


@dataclass
class Rig:
    server: TeleopsServer
    port: int
    alice: str  # API tokens of two operators
    bob: str

    def headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """One controller for the module (its embedded agent on, two operators, a short body deadline)."""
    server = start_teleops(
        tmp_path_factory.mktemp("front-door"),
        local_agent=True,
        env={
            "TELEOPS_SERVER__BODY_TIMEOUT": f"{BODY_TIMEOUT_S}s",
            "TELEOPS_SERVER__HEADER_TIMEOUT": f"{HEADER_TIMEOUT_S}s",
            "TELEOPS_DATABASE__BUSY_TIMEOUT_MS": "300",
        },
        config={"users": [{"name": "alice", "role": "operator"}, {"name": "bob", "role": "operator"}],
                "policy": POLICY},
    )  # fmt: skip
    try:
        alice = server.create_token("api", "alice-cli", "--user", "alice")
        bob = server.create_token("api", "bob-cli", "--user", "bob")
        yield Rig(server, int(server.url.rsplit(":", 1)[1]), alice, bob)
    finally:
        stop_process(server.process)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def head(rig: Rig, method: str, path: str, headers: dict[str, str], length: int | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{rig.port}", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_answer(sock: socket.socket) -> bytes:
    """The response head and its whole body: up to Content-Length when the head gives one (the body may come in a
    later packet than the head), else whatever came with the head."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed without an answer: {answer!r}"
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
        None,
    )
    while length is not None and len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def send_until_closed(sock: socket.socket, total: int, *, chunked: bool = False) -> int:
    """Stream up to `total` bytes of body, stopping once the server answers or closes; returns the bytes sent."""
    piece = b"x" * (256 * 1024)
    data = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
    sent = 0
    with contextlib.suppress(BrokenPipeError, ConnectionResetError, TimeoutError):
        while sent < total and not select.select([sock], [], [], 0)[0]:
            sock.sendall(data)
            sent += len(piece)
    return sent


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed: EOF or a reset, after draining what it answered."""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


# Every route that takes a body, unauthenticated: what it answers to a declared 200 MB body (before the body), and
# to a chunked one (no length declared: refused at once, cut at the door's cap, or answered without reading it).
UNAUTHENTICATED = [
    ("/api/v1/commands", 401, 401),
    ("/api/v1/commands/batch", 401, 401),
    ("/api/v1/commands/1/approve", 401, 401),
    ("/api/v1/commands/1/cancel", 401, 401),
    ("/api/v1/incidents/1/snooze", 401, 401),
    ("/api/v1/alerts/alertmanager", 401, 401),
    # The token may be in the body: a declared body over server.max_body_bytes is 413 at once; a streamed one is read
    # for its first 4 KiB only, and holds no routing_key there (server/body_token.py).
    ("/api/v1/alerts/pagerduty", 413, 401),
    ("/api/v1/chat/telegram/webhook", 404, 404),  # not in webhook mode here
    ("/api/v1/chat/slack/events", 404, 404),  # not in Events API mode here
    ("/ui/login", 413, 403),  # 4 KiB at most before a login; a body that is not a form is never read
    ("/ui/logout", 303, 303),
    ("/ui/incidents/1/ack", 303, 303),
    ("/healthz", 413, 405),  # takes no body; POST is not a method it serves
    ("/no/such/path", 404, 404),
]


def test_a_200_mb_unauthenticated_body_is_refused_before_it_is_sent_and_memory_stays_flat(rig: Rig) -> None:
    for (
        path,
        _declared,
        _chunked,
    ) in UNAUTHENTICATED:  # warm every path up, so what is measured below is the bodies only
        httpx.post(f"{rig.server.url}{path}", content=b"{}", timeout=10)
    before = rss_bytes(rig.server.process.pid)
    report = []
    for path, declared, streamed in UNAUTHENTICATED:
        for chunked, expected in ((False, declared), (True, streamed)):
            with socket.create_connection(("127.0.0.1", rig.port), timeout=10) as sock:
                sock.sendall(head(rig, "POST", path, {}, None if chunked else HUGE))
                if chunked:  # no length declared: the body streams until the server answers (or cuts it)
                    sent = send_until_closed(sock, HUGE, chunked=True)
                    answer = read_answer(sock)
                else:  # declared: the answer comes before one byte of the body is sent
                    answer = read_answer(sock)
                    sent = send_until_closed(sock, HUGE)
                closed = closed_by_server(sock)
            report.append((path, chunked, status_of(answer), sent))
            assert status_of(answer) == expected, (path, chunked, answer[:300])
            assert b"connection: close" in answer.lower(), (path, answer[:300])
            assert closed, f"{path}: the server kept the connection open after refusing the body"
            assert sent < 32 * MiB, f"{path} (chunked={chunked}): the server took {sent} bytes of a refused body"
    after = rss_bytes(rig.server.process.pid)
    print(f"controller RSS before {before / MiB:.1f} MiB, after {len(report)} refused 200 MB bodies "
          f"{after / MiB:.1f} MiB")  # fmt: skip
    assert after - before < 8 * MiB, f"RSS grew from {before} to {after} bytes"
    assert httpx.get(f"{rig.server.url}/healthz", timeout=10).status_code == 200


def test_an_invalid_body_without_a_token_is_401_not_422(rig: Rig) -> None:
    url = f"{rig.server.url}/api/v1/commands"
    for headers in ({}, {"Authorization": "Bearer tlo_api_not-a-real-token"}, {"Authorization": "Basic !!"}):
        refused = httpx.post(url, content=b'{"host": 1, "nonsense', headers=headers, timeout=10)
        assert refused.status_code == 401, refused.text
        assert "teleops token create api" in refused.json()["detail"]
    # The same body with a valid token is judged on its content: so the 401 above was about the token.
    judged = httpx.post(url, content=b'{"host": 1, "nonsense', headers=rig.headers(rig.alice), timeout=10)
    assert judged.status_code == 422, judged.text


def test_an_oversize_body_with_a_valid_token_is_413_before_it_is_sent(rig: Rig) -> None:
    for path, token in (("/api/v1/commands", rig.alice), ("/api/v1/alerts/alertmanager", rig.server.ingest_token)):
        with socket.create_connection(("127.0.0.1", rig.port), timeout=10) as sock:
            sock.sendall(head(rig, "POST", path, rig.headers(token), HUGE))
            answer = read_answer(sock)
            assert status_of(answer) == 413, answer[:300]
            assert send_until_closed(sock, HUGE) < 32 * MiB
        # Chunked, no length declared: cut at the cap as it arrives.
        with socket.create_connection(("127.0.0.1", rig.port), timeout=10) as sock:
            sock.sendall(head(rig, "POST", path, rig.headers(token), None))
            sent = send_until_closed(sock, HUGE, chunked=True)
            answer = read_answer(sock)
            assert status_of(answer) == 413, answer[:300]
            assert sent < 32 * MiB, f"{path}: {sent} bytes of a chunked body over the cap were taken"


def test_stalled_bodies_are_answered_408_and_closed_while_the_server_keeps_answering(rig: Rig) -> None:
    path = "/api/v1/alerts/alertmanager"
    stalled = []
    try:
        for _ in range(STALLED):
            sock = socket.create_connection(("127.0.0.1", rig.port), timeout=30)
            stalled.append(sock)
            sock.sendall(head(rig, "POST", path, rig.server.ingest_headers, 1000) + b'{"alerts": [')
        assert httpx.get(f"{rig.server.url}/healthz", timeout=10).status_code == 200  # while they all hang
        answers = [read_answer(sock) for sock in stalled]
        assert {status_of(a) for a in answers} == {408}, {a[:100] for a in answers}
        assert b"server.body_timeout" in answers[0]
        assert all(closed_by_server(sock) for sock in stalled)
    finally:
        for sock in stalled:
            sock.close()
    # Stalled without credentials: refused at once, long before any deadline.
    for _ in range(STALLED):
        with socket.create_connection(("127.0.0.1", rig.port), timeout=30) as sock:
            sock.sendall(head(rig, "POST", path, {}, 1000) + b'{"alerts": [')
            assert status_of(read_answer(sock)) == 401
            assert closed_by_server(sock)
    assert rig.server.incidents() == []


def test_stalled_headers_are_answered_408_and_closed_while_the_server_keeps_answering(rig: Rig) -> None:
    stalled = []
    try:
        for i in range(STALLED):
            sock = socket.create_connection(("127.0.0.1", rig.port), timeout=30)
            stalled.append(sock)
            if i % 2:  # half send part of a request line and headers, half send nothing at all
                sock.sendall(b"POST /api/v1/alerts/alertmanager HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        assert httpx.get(f"{rig.server.url}/healthz", timeout=10).status_code == 200  # while they all hang
        answers = [read_answer(sock) for sock in stalled]
        assert {status_of(a) for a in answers} == {408}, {a[:100] for a in answers}
        assert b"server.header_timeout" in answers[0]
        assert all(closed_by_server(sock) for sock in stalled)
    finally:
        for sock in stalled:
            sock.close()
    # A kept-alive connection gets the same deadline for its next request.
    with socket.create_connection(("127.0.0.1", rig.port), timeout=30) as sock:
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{rig.port}\r\n\r\n".encode())
        assert status_of(read_answer(sock)) == 200
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line: the headers never end
        answer = b""
        while b"408" not in answer:
            chunk = sock.recv(65536)
            assert chunk, f"closed without a 408: {answer!r}"
            answer += chunk
        assert closed_by_server(sock)


def test_an_incident_id_beyond_64_bits_is_422_naming_the_field(rig: Rig) -> None:
    for path, body in (
        ("/api/v1/commands", {"host": "localhost", "command": "echo hi", "incident_id": 2**63}),
        ("/api/v1/commands/batch", {"hosts": ["localhost"], "command": "echo hi", "incident_id": 2**63}),
        ("/api/v1/commands", {"host": "localhost", "command": "echo hi", "incident_id": 0}),
    ):
        answer = httpx.post(f"{rig.server.url}{path}", json=body, headers=rig.headers(rig.alice), timeout=10)
        assert answer.status_code == 422, answer.text
        assert answer.json()["field"] == "body.incident_id"


def test_a_revoked_token_stops_working_at_once(rig: Rig) -> None:
    token = rig.server.create_token("api", "short-lived", "--user", "alice")
    url = f"{rig.server.url}/api/v1/incidents"
    assert httpx.get(url, headers=rig.headers(token), timeout=10).status_code == 200
    assert httpx.get(url, headers=rig.headers(token), timeout=10).status_code == 200
    rig.server.cli("token", "revoke", "api", "short-lived")  # another process: as another replica would
    refused = httpx.get(url, headers=rig.headers(token), timeout=10)
    assert refused.status_code == 401, refused.text


def _agent_online(rig: Rig) -> bool:
    agents = httpx.get(f"{rig.server.url}/api/v1/agents", headers=rig.server.api_headers, timeout=10).json()
    return any(a["name"] == "localhost" and a["online"] for a in agents["items"])


def test_approving_a_command_its_requester_cancelled_is_409_with_the_reason(rig: Rig) -> None:
    eventually(lambda: _agent_online(rig), what="the embedded agent online")
    base = f"{rig.server.url}/api/v1/commands"
    asked = httpx.post(
        base, json={"host": "localhost", "command": "uptime"}, headers=rig.headers(rig.alice), timeout=10
    )
    assert asked.status_code == 202, asked.text
    command_id = asked.json()["id"]
    assert asked.json()["status"] == "queued"
    assert asked.json()["approval"]["status"] == "pending"
    cancelled = httpx.post(f"{base}/{command_id}/cancel", headers=rig.headers(rig.alice), timeout=10)
    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json()["status"] == "killed"

    approved = httpx.post(f"{base}/{command_id}/approve", headers=rig.headers(rig.bob), timeout=10)
    assert approved.status_code == 409, approved.text
    assert "cancelled by alice" in approved.json()["detail"]
    final = httpx.get(f"{base}/{command_id}", headers=rig.headers(rig.alice), timeout=10).json()
    assert final["status"] == "killed", final
    assert final["started_at"] is None, final


def test_a_storage_failure_on_post_commands_is_503_with_retry_after(rig: Rig) -> None:
    eventually(lambda: _agent_online(rig), what="the embedded agent online")
    url = f"{rig.server.url}/api/v1/commands"
    holder = sqlite3.connect(rig.server.sqlite_path, isolation_level=None, timeout=30)
    try:
        holder.execute("BEGIN EXCLUSIVE")  # no write gets through: as with a full disk, the commit fails
        refused = httpx.post(url, json={"host": "localhost", "command": "echo hi"}, headers=rig.headers(rig.alice),
                             timeout=30)  # fmt: skip
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"]
    assert "not run" in refused.json()["detail"]
    ran = httpx.post(url, json={"host": "localhost", "command": "echo hi"}, headers=rig.headers(rig.alice), timeout=30)
    assert ran.status_code == 202, ran.text
