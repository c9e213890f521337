"""B6 command round trip: `true` via POST /api/v1/commands on a real agent, until `GET …?wait` reports it
done, vs the floor: one loopback WebSocket round trip to a peer that spawns `true` with bare asyncio before it
answers (`bench.floor_agent`, on the server core like the agent). Target ≤ 1.5× floor.

Second peer: `ssh localhost true` over a reused ControlMaster connection, against a temporary OpenSSH server
(Debian's sshd, loopback port, throwaway host and user keys, key auth only, root's account) — the tool people
would otherwise use. Target: TeleOps at least 3× faster (ratio ≤ 0.33).

Third side, reported against both (no target): `bench.minimum_commands`, the least any program can do under
TeleOps' obligations (dispatch and audit fsynced before the send, the agent's journal fdatasynced before the
spawn), so the part of the ratio to the floor that no implementation can avoid is visible.

Also reported (no target): both sides with the commands 100 ms apart, as a person types them, so each one
arrives on an idle machine (every command starts cold: docs/adr/0010-no-warm-spawn.md); and `true` sent as a
chat reply to an incident message on the fake Telegram, until its result message reaches the fake. Their p99
rows are the user-facing figure (issue #22: chat reply → output in chat, p99 under 1 s); in quick mode they
rest on a handful of samples, so they are close to the slowest one.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from bench.agent_setup import start_rig
from bench.chat_rig import calls, incident_chat, reply, until
from bench.context import Benchmark, Context
from bench.loadgen import KeepAlive, build_request, percentile
from bench.process import BenchError, Server, free_port, pin_load_generator, spawn, start_http
from bench.report import Row, at_most, info

__all__ = ["BENCHMARK"]

_ROOT = Path(__file__).resolve().parent.parent


SPACING_S = 0.1  # "a person typing": each command arrives on an idle machine
CHAT_SPACING_S = 1.2  # replies in one chat: Telegram takes about a message a second there


async def wait_port(server: Server, timeout: float) -> None:
    """Until `server` accepts TCP connections on its port (it must stay alive meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        except OSError:
            server.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"{server.name} did not start listening within {timeout:.0f} s") from None
            await asyncio.sleep(0.01)
        else:
            writer.close()
            return


async def _floor(ctx: Context, repeats: int, spaced: int) -> tuple[list[float], list[float]]:
    """(back-to-back samples, samples taken SPACING_S apart) of the floor."""
    port = free_port()
    peer = spawn(
        "floor agent",
        [sys.executable, "-m", "bench.floor_agent", str(port)],
        port=port,
        log_path=ctx.sub("b6") / "floor-agent.log",
        cwd=_ROOT,
    )
    try:
        await wait_port(peer, 20)
        websocket = await connect(f"ws://127.0.0.1:{port}")
        samples: list[float] = []
        apart: list[float] = []
        async with websocket:
            for i in range(repeats + spaced):
                if i >= repeats:
                    await asyncio.sleep(SPACING_S)
                started = time.perf_counter()
                await websocket.send('{"type":"exec","argv":["true"]}')
                await websocket.recv()  # answered once the peer's `true` has exited
                (samples if i < repeats else apart).append(time.perf_counter() - started)
        return samples, apart
    finally:
        peer.stop()


async def _minimum(ctx: Context, repeats: int) -> list[float]:
    """Seconds per `true` through bench.minimum_commands (POST, then GET ?wait on the same connection)."""
    workdir = ctx.sub("b6-minimum")
    agent_port = free_port()
    agent = spawn(
        "minimum agent",
        [sys.executable, "-m", "bench.floor_agent", str(agent_port), "--journal", str(workdir / "journal")],
        port=agent_port,
        log_path=workdir / "agent.log",
        cwd=_ROOT,
    )
    try:
        await wait_port(agent, 20)
        controller = await start_http(
            "durable minimum",
            lambda port: [
                *(sys.executable, "-m", "bench.minimum_commands", str(port), str(workdir / "minimum.db")),
                str(agent_port),
            ],
            log_path=workdir / "minimum.log",
        )
        port = controller.port
        try:
            connection = await KeepAlive.open("127.0.0.1", port)
            try:
                body = json.dumps({"host": "localhost", "command": "true"}).encode()
                post = build_request("POST", "127.0.0.1", port, "/api/v1/commands", body)
                samples = []
                for _ in range(repeats + 3):
                    started = time.perf_counter()
                    status, answer = await connection.request(post)
                    if status != 202:
                        raise BenchError(f"the durable minimum answered {status}: {answer[:200]!r}")
                    path = f"/api/v1/commands/{json.loads(answer)['id']}?wait=30"
                    status, answer = await connection.request(build_request("GET", "127.0.0.1", port, path))
                    if status != 200 or json.loads(answer)["status"] != "succeeded":
                        raise BenchError(f"the durable minimum's `true` did not succeed: {answer[:200]!r}")
                    samples.append(time.perf_counter() - started)
                return samples[3:]
            finally:
                connection.close()
        finally:
            controller.stop()
    finally:
        agent.stop()


async def _via_chat(ctx: Context, samples: int) -> list[float]:
    """Seconds from a linked person's reply `true` (to an incident message on the fake Telegram) to the message
    with its result reaching the fake. Replies are CHAT_SPACING_S apart: a chat takes about a message a second."""
    times = []
    async with incident_chat(ctx.sub("b6-chat"), rate_limited=False) as (fake, _teleops):
        for _ in range(samples):
            await asyncio.sleep(CHAT_SPACING_S)
            before = len(await calls(fake))
            replied = await reply(fake, "true")

            async def result(since: int = before) -> list[list[Any]]:
                return [c for c in (await calls(fake))[since:] if c[3] == 200 and c[4] and "exit 0" in c[4]]

            shown = await until(result, 30, "the result of `true` in the chat")
            times.append(shown[0][2] - replied)
    return times


async def run(ctx: Context) -> list[Row]:
    repeats = ctx.pick(5, 50, 200)
    spaced = ctx.pick(3, 15, 40)
    pin_load_generator()
    rig, _connected = await start_rig(ctx.sub("b6-rig"))
    try:
        connection = await KeepAlive.open("127.0.0.1", rig.teleops.port)
        try:
            for _ in range(ctx.pick(1, 5, 10)):
                await rig.run_command(connection, "true")
            ours: list[float] = []
            ours_apart: list[float] = []
            for i in range(repeats + spaced):
                if i >= repeats:
                    await asyncio.sleep(SPACING_S)
                started = time.perf_counter()
                record = await rig.run_command(connection, "true")
                (ours if i < repeats else ours_apart).append(time.perf_counter() - started)
                if record["status"] != "succeeded":
                    raise BenchError(f"`true` ended {record['status']}: {record}")
        finally:
            connection.close()
    finally:
        rig.stop()
    floor, floor_apart = await _floor(ctx, repeats, spaced)
    least = await _minimum(ctx, repeats)
    chat = await _via_chat(ctx, ctx.pick(2, 5, 10))
    ssh = await _ssh(ctx, repeats)
    name = "spawn + WS round trip"
    ssh_name = "ssh localhost true, ControlMaster"
    return [
        at_most(
            "B6",
            "`true` via API vs ssh, p50",
            "ms",
            statistics.median(ours) * 1e3,
            statistics.median(ssh) * 1e3,
            ssh_name,
            1 / 3,
        ),
        at_most(
            "B6", "`true` via API, p50", "ms", statistics.median(ours) * 1e3, statistics.median(floor) * 1e3, name, 1.5
        ),
        info("B6", "`true` via API, p99", "ms", percentile(ours, 99) * 1e3, percentile(floor, 99) * 1e3, name),
        info(
            "B6",
            "the durable minimum: `true` via its API, p50",
            "ms",
            statistics.median(least) * 1e3,
            statistics.median(floor) * 1e3,
            name,
        ),
        info(
            "B6",
            "`true` via API, p50, vs the durable minimum",
            "ms",
            statistics.median(ours) * 1e3,
            statistics.median(least) * 1e3,
            "durable minimum: fsynced dispatch + journaled agent",
        ),
        info(
            "B6",
            f"`true` via API, {SPACING_S * 1e3:.0f} ms apart, p50",
            "ms",
            statistics.median(ours_apart) * 1e3,
            statistics.median(floor_apart) * 1e3,
            f"{name}, {SPACING_S * 1e3:.0f} ms apart",
        ),
        info(
            "B6",
            f"`true` via API, {SPACING_S * 1e3:.0f} ms apart, p99",
            "ms",
            percentile(ours_apart, 99) * 1e3,
            percentile(floor_apart, 99) * 1e3,
            f"{name}, {SPACING_S * 1e3:.0f} ms apart",
        ),
        info(
            "B6",
            "`true` via a chat reply (fake Telegram), p50",
            "ms",
            statistics.median(chat) * 1e3,
            statistics.median(floor_apart) * 1e3,
            f"{name}, {SPACING_S * 1e3:.0f} ms apart",
        ),
        info(
            "B6",
            "`true` via a chat reply (fake Telegram), p99",
            "ms",
            percentile(chat, 99) * 1e3,
            percentile(floor_apart, 99) * 1e3,
            f"{name}, {SPACING_S * 1e3:.0f} ms apart",
        ),
    ]


async def _ssh(ctx: Context, repeats: int) -> list[float]:
    """Seconds per `ssh -S CONTROL -p PORT root@127.0.0.1 true` once a master connection is up."""
    workdir = ctx.sub("b6-ssh")
    for key in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(workdir / key)], check=True)
    (workdir / "authorized_keys").write_text((workdir / "user_key.pub").read_text())
    (workdir / "authorized_keys").chmod(0o600)
    port = free_port()
    config = workdir / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {workdir / 'host_key'}\nPidFile {workdir / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {workdir / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\nStrictModes no\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd started as root wants its privilege-separation dir
    sshd = spawn("sshd", ["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], port=port, log_path=workdir / "sshd.log")
    control = workdir / "control"
    base = [
        "ssh", "-p", str(port), "-i", str(workdir / "user_key"), "-o", "BatchMode=yes",
        "-o", f"UserKnownHostsFile={workdir / 'known_hosts'}", "-o", "StrictHostKeyChecking=accept-new",
        "-o", f"ControlPath={control}", "root@127.0.0.1",
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while subprocess.run([*base[:-1], "-o", "ControlMaster=no", base[-1], "true"], check=False,
                             capture_output=True).returncode != 0:  # fmt: skip
            sshd.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"ssh to the temporary sshd did not work:\n{sshd.log_tail()}")
            await asyncio.sleep(0.1)
        master = subprocess.Popen([*base[:-1], "-M", "-N", "-o", "ControlPersist=no", base[-1]])
        try:
            while not control.exists():
                await asyncio.sleep(0.01)
            samples = []
            for _ in range(repeats + 3):
                started = time.perf_counter()
                process = await asyncio.create_subprocess_exec(*base, "true")
                if await process.wait() != 0:
                    raise BenchError("ssh ... true failed over the master connection")
                samples.append(time.perf_counter() - started)
            return samples[3:]
        finally:
            subprocess.run([*base[:-1], "-O", "exit", base[-1]], check=False, capture_output=True, timeout=10)
            master.terminate()
            try:
                master.wait(timeout=5)
            except subprocess.TimeoutExpired:
                master.kill()
                master.wait(timeout=5)
    finally:
        sshd.stop()


BENCHMARK = Benchmark("B6", "command round trip", run)
