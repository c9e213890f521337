"""The agentless SSH executor against a real OpenSSH server on loopback (temp host key, temp user key)."""

from __future__ import annotations

import asyncio
import os
import pwd
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from teleops.commands.backend.ssh_executor import SshTarget, SshUnavailable, run_over_ssh
from tests.integration.servers import TeleopsServer, eventually, free_port, stop_process, wait_until

T = TypeVar("T")

SSHD = Path("/usr/sbin/sshd")


@dataclass
class SshServer:
    target: SshTarget
    process: subprocess.Popen[bytes]
    log: Path


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _alive(proc: Path) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        return (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshServer]:
    assert SSHD.exists(), "install openssh-server (scripts/test does)"
    user = pwd.getpwuid(os.getuid()).pw_name
    _keygen(tmp_path / "host_key")
    _keygen(tmp_path / "user_key")
    (tmp_path / "authorized_keys").write_text((tmp_path / "user_key.pub").read_text())
    port = free_port()
    host_pub = (tmp_path / "host_key.pub").read_text().split()
    (tmp_path / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    config = tmp_path / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp_path / 'host_key'}\nPidFile {tmp_path / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nStrictModes no\nUsePAM no\n"
        "PermitRootLogin prohibit-password\nLogLevel VERBOSE\n"
    )
    if os.getuid() == 0:
        # sshd started as root insists on its privilege-separation dir (Debian's unit creates it the same way).
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = tmp_path / "sshd.log"
    with log.open("wb") as out:
        process = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _port_open(port), what="sshd", process=process, log=log)
        target = SshTarget(f"127.0.0.1:{port}", user, tmp_path / "user_key", tmp_path / "known_hosts")
        yield SshServer(target, process, log)
    finally:
        stop_process(process)


async def test_a_command_runs_over_ssh_with_its_output_and_exit_code(sshd: SshServer) -> None:
    result = await run_over_ssh(sshd.target, ["sh", "-c", "echo out; echo err >&2; exit 3"], timeout_s=10)
    assert result.exit_code == 3
    assert result.output == b"out\nerr\n"
    assert not result.timed_out


async def test_argv_is_quoted_so_metacharacters_stay_text(sshd: SshServer, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    result = await run_over_ssh(sshd.target, ["echo", f"$(touch {canary})", "; touch", str(canary)], timeout_s=10)
    assert result.exit_code == 0
    assert result.output == f"$(touch {canary}) ; touch {canary}\n".encode()
    assert not canary.exists()


async def test_a_missing_command_is_127(sshd: SshServer) -> None:
    result = await run_over_ssh(sshd.target, ["no-such-command-teleops"], timeout_s=10)
    assert result.exit_code == 127


async def test_timeout_kills_the_remote_group_and_reports_124(sshd: SshServer, tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    argv = ["sh", "-c", f"sleep 300 & echo $! > {pid_file}; sleep 300"]
    result = await run_over_ssh(sshd.target, argv, timeout_s=1, kill_grace_s=1)
    assert result.timed_out
    assert result.exit_code == 124
    grandchild = Path("/proc") / pid_file.read_text().strip()  # sshd runs on this machine: same pid space
    deadline = time.monotonic() + 10
    while _alive(grandchild):
        assert time.monotonic() < deadline, "the backgrounded grandchild survived the timeout"
        await asyncio.sleep(0.05)


async def test_output_is_capped_head_and_tail(sshd: SshServer) -> None:
    result = await run_over_ssh(sshd.target, ["seq", "1", "200000"], timeout_s=20, output_cap_bytes=4096)
    assert result.truncated
    assert result.output_bytes == len(b"".join(f"{i}\n".encode() for i in range(1, 200001)))
    assert result.output.startswith(b"1\n2\n3\n")
    assert result.output.endswith(b"199999\n200000\n")
    assert b"bytes truncated" in result.output
    assert len(result.output) < 4096 + 100


async def test_an_unknown_host_key_is_refused_never_accepted(sshd: SshServer, tmp_path: Path) -> None:
    _keygen(tmp_path / "other_host_key")
    other = (tmp_path / "other_host_key.pub").read_text().split()
    known = tmp_path / "wrong_known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.target.host_port[1]} {other[0]} {other[1]}\n")
    wrong = SshTarget(sshd.target.address, sshd.target.user, sshd.target.key_file, known)
    with pytest.raises(SshUnavailable, match="never accepted automatically"):
        await run_over_ssh(wrong, ["true"], timeout_s=5)
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(SshUnavailable, match="host key"):
        await run_over_ssh(
            SshTarget(sshd.target.address, sshd.target.user, sshd.target.key_file, empty), ["true"], timeout_s=5
        )


async def test_a_key_the_server_does_not_know_is_refused(sshd: SshServer, tmp_path: Path) -> None:
    _keygen(tmp_path / "stranger_key")
    stranger = SshTarget(sshd.target.address, sshd.target.user, tmp_path / "stranger_key", sshd.target.known_hosts)
    with pytest.raises(SshUnavailable, match="authorized_keys"):
        await run_over_ssh(stranger, ["true"], timeout_s=5)


def test_a_configured_ssh_host_runs_commands_through_the_api(
    sshd: SshServer, teleops_server: Callable[..., TeleopsServer]
) -> None:
    target = sshd.target
    ssh = {"address": target.address, "user": target.user, "key_file": str(target.key_file)}
    ssh["known_hosts"] = str(target.known_hosts)
    server = teleops_server(config={"hosts": [{"name": "db-1", "labels": {"env": "test"}, "ssh": ssh}]})
    headers = server.api_headers

    def listed() -> dict[str, Any] | None:
        items = httpx.get(f"{server.url}/api/v1/agents", headers=headers, timeout=10).json()["items"]
        return next((i for i in items if i["name"] == "db-1" and i["online"]), None)

    host = eventually(listed, what="the SSH host to be listed")
    assert (host["hostname"], host["version"], host["labels"]) == ("127.0.0.1", "ssh", {"env": "test"})

    def run(command: str, **extra: Any) -> dict[str, Any]:
        posted = httpx.post(
            f"{server.url}/api/v1/commands", json={"host": "db-1", "command": command, **extra}, headers=headers
        )
        assert posted.status_code == 202, posted.text
        url = f"{server.url}/api/v1/commands/{posted.json()['id']}"
        done = {"succeeded", "failed", "timed_out", "killed", "denied", "lost"}
        return eventually(
            lambda: c if (c := httpx.get(url, headers=headers, timeout=10).json())["status"] in done else None,
            what=f"{command} to finish",
        )

    ok = run("echo over ssh")
    assert (ok["status"], ok["exit_code"], ok["output"]) == ("succeeded", 0, "over ssh\n")
    slow = run("sleep 30", timeout=1)
    assert (slow["status"], slow["exit_code"]) == ("timed_out", 124)
