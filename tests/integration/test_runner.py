"""The command runner against real processes: exit codes, timeouts that kill whole trees, capped output, limits.

Nothing is mocked: every case spawns real programs and inspects /proc afterwards. Where a case depends on the
agent's privileges (cgroup creation, switching to an unprivileged user), the test asserts the behaviour of the
mode this machine actually offers, and says which one it checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import subprocess
import time
import unicodedata
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from teleops.agent.cgroup import CommandCgroup
from teleops.agent.environment import FIXED_PATH
from teleops.agent.output import printable
from teleops.agent.rlimits import ResourceLimits
from teleops.agent.runner import (
    ISOLATION_CGROUP,
    ISOLATION_NONE,
    ISOLATION_PROCESS_GROUP,
    RunSpec,
    finish_disposals,
    run,
)

TEST_USER = "teleops-runner-test"


@pytest.fixture(autouse=True)
async def _cgroups_removed() -> AsyncIterator[None]:
    """A finished command's cgroup is removed in the background; wait for it as the agent does when it stops,
    or a test that ends right after its last command leaves the empty cgroup behind."""
    yield
    await finish_disposals()


def _cgroups_available() -> bool:
    probe = CommandCgroup.create(f"probe-{uuid.uuid4().hex}")
    if probe is None:
        return False
    probe.remove()
    return True


CGROUPS = _cgroups_available()
EXPECTED_ISOLATION = ISOLATION_CGROUP if CGROUPS else ISOLATION_PROCESS_GROUP


def _marker() -> str:
    """A sleep duration nobody else uses, so /proc can be searched for exactly our processes."""
    return f"{300 + int(uuid.uuid4().int % 10**6) / 10**6:.6f}"


def _pids_with_arg(arg: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if arg.encode() in argv:
            found.append(int(entry.name))
    return found


def _pids_of_uid(uid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            # Zombies count too: until reaped they still count against the user's RLIMIT_NPROC.
            if line.startswith("Uid:") and int(line.split()[1]) == uid:
                found.append(int(entry.name))
    return found


async def _eventually_none(find: object, deadline_s: float = 5.0) -> list[int]:
    """Poll until find() returns nothing (processes take a moment to be reaped); returns what is left."""
    assert callable(find)
    end = time.monotonic() + deadline_s
    left: list[int] = find()
    while left and time.monotonic() < end:
        await asyncio.sleep(0.02)
        left = find()
    return left


def _kill_leftovers(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


# -- exit codes ---------------------------------------------------------------------------------------------


async def test_echo_prints_and_exits_zero() -> None:
    result = await run(RunSpec(["echo", "hi"]))
    assert result.output == b"hi\n"
    assert result.exit_code == 0
    assert result.signal is None
    assert not result.timed_out
    assert not result.truncated
    assert not result.cancelled
    assert result.error is None
    assert result.isolation == EXPECTED_ISOLATION


async def test_false_exits_one() -> None:
    result = await run(RunSpec(["false"]))
    assert result.exit_code == 1
    assert result.output == b""


async def test_unknown_program_is_127_with_a_message() -> None:
    result = await run(RunSpec(["no-such-program-teleops"]))
    assert result.exit_code == 127
    assert result.isolation == ISOLATION_NONE
    assert result.error is not None
    assert "command not found" in result.error
    assert b"no-such-program-teleops" in result.output


async def test_file_without_exec_bit_is_126(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho never\n")
    script.chmod(0o644)
    result = await run(RunSpec([str(script)]))
    assert result.exit_code == 126
    assert result.error is not None
    assert "permission denied" in result.error
    assert b"never" not in result.output


async def test_killed_by_signal_is_128_plus_n() -> None:
    result = await run(RunSpec(["sh", "-c", "kill -9 $$"]))
    assert result.exit_code == 137
    assert result.signal == 9


async def test_stdout_and_stderr_are_interleaved_in_order() -> None:
    result = await run(RunSpec(["sh", "-c", "echo out1; echo err1 >&2; echo out2; echo err2 >&2"]))
    assert result.output == b"out1\nerr1\nout2\nerr2\n"


async def test_stdin_is_empty() -> None:
    result = await run(RunSpec(["cat"], timeout_s=5))
    assert result.exit_code == 0
    assert not result.timed_out
    assert result.output == b""


async def test_empty_argv_is_refused() -> None:
    result = await run(RunSpec([]))
    assert result.exit_code == 127
    assert result.error == "empty command: nothing to run"


# -- working directory and environment ----------------------------------------------------------------------


async def test_cwd_is_used(tmp_path: Path) -> None:
    result = await run(RunSpec(["pwd"], cwd=str(tmp_path)))
    assert result.output.decode().strip() == str(tmp_path)


async def test_missing_cwd_is_a_clear_error_not_an_exception(tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    result = await run(RunSpec(["pwd"], cwd=str(missing)))
    assert result.exit_code == 126
    assert result.error is not None
    assert str(missing) in result.error
    assert "does not exist" in result.error


async def test_environment_is_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEOPS_CANARY_SECRET", "canary-1234")
    monkeypatch.setenv("LD_PRELOAD", "/tmp/evil.so")
    result = await run(RunSpec(["env"], env={"APP_MODE": "check"}))
    lines = sorted(result.output.decode().splitlines())
    assert lines == sorted([f"PATH={FIXED_PATH}", "LANG=C.UTF-8", f"HOME={os.environ['HOME']}", "APP_MODE=check"])


@pytest.mark.parametrize("name", ["LD_PRELOAD", "LD_LIBRARY_PATH", "PATH", "BASH_ENV", "PYTHONPATH", "ld_audit", "A=B"])
async def test_dangerous_env_is_refused_and_nothing_runs(name: str, tmp_path: Path) -> None:
    canary = tmp_path / "ran"
    result = await run(RunSpec(["touch", str(canary)], env={name: "/tmp/x"}))
    assert result.exit_code == 126
    assert result.error is not None
    assert "environment variable" in result.error
    assert result.isolation == ISOLATION_NONE
    assert not canary.exists()


# -- timeouts, cancellation and leftovers -------------------------------------------------------------------


async def test_timeout_is_124_and_returns_promptly() -> None:
    spec = RunSpec(["sleep", "30"], timeout_s=1.0, kill_grace_s=1.0)
    deadline = time.monotonic() + spec.timeout_s + spec.kill_grace_s + 2.0
    result = await run(spec)
    assert time.monotonic() < deadline, "run() overran timeout + grace"
    assert result.exit_code == 124
    assert result.timed_out
    assert result.signal == 15  # sleep dies on SIGTERM


async def test_sigterm_ignored_then_sigkilled_after_grace() -> None:
    spec = RunSpec(["sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"], timeout_s=0.5, kill_grace_s=0.5)
    deadline = time.monotonic() + spec.timeout_s + spec.kill_grace_s + 2.0
    result = await run(spec)
    assert time.monotonic() < deadline
    assert result.exit_code == 124
    assert result.signal == 9


async def test_timeout_leaves_no_background_child() -> None:
    marker = _marker()
    result = await run(RunSpec(["sh", "-c", f"sleep {marker} & sleep {marker}"], timeout_s=2.0, kill_grace_s=1.0))
    assert result.timed_out
    left = await _eventually_none(lambda: _pids_with_arg(marker))
    _kill_leftovers(left)
    assert left == []


async def test_normal_exit_kills_what_the_command_left_running() -> None:
    marker = _marker()
    result = await run(RunSpec(["sh", "-c", f"sleep {marker} >/dev/null 2>&1 & echo started"], timeout_s=10.0))
    assert result.exit_code == 0
    assert result.output == b"started\n"
    left = await _eventually_none(lambda: _pids_with_arg(marker))
    _kill_leftovers(left)
    assert left == []


async def test_setsid_escapee_is_killed_with_cgroup_isolation() -> None:
    marker = _marker()
    spec = RunSpec(["sh", "-c", f"setsid sleep {marker} & sleep 300"], timeout_s=1.0, kill_grace_s=1.0)
    deadline = time.monotonic() + spec.timeout_s + spec.kill_grace_s + 2.0
    result = await run(spec)
    assert time.monotonic() < deadline
    assert result.timed_out
    left = await _eventually_none(lambda: _pids_with_arg(marker), deadline_s=2.0)
    _kill_leftovers(left)
    if CGROUPS:
        assert result.isolation == ISOLATION_CGROUP
        assert left == [], "cgroup isolation must kill a setsid escapee"
    else:
        # Documented fallback (docs/agent-runner.md): the process group cannot reach a setsid escapee.
        assert result.isolation == ISOLATION_PROCESS_GROUP


async def test_setsid_escapee_survives_only_in_process_group_fallback() -> None:
    """The documented limit of the fallback, checked for real by forcing it."""
    marker = _marker()
    spec = RunSpec(
        ["sh", "-c", f"setsid sleep {marker} & sleep 300"], timeout_s=0.5, kill_grace_s=0.5, use_cgroup=False
    )
    result = await run(spec)
    assert result.isolation == ISOLATION_PROCESS_GROUP
    assert result.timed_out
    escaped = _pids_with_arg(marker)
    _kill_leftovers(escaped)
    assert len(escaped) == 1


async def test_grandchild_holding_the_pipe_does_not_hang_the_runner() -> None:
    for use_cgroup in (True, False):
        name = f"teleops-ticker-{uuid.uuid4().hex}"
        # The escapee keeps stdout open and keeps writing; the command itself exits at once.
        script = f"setsid sh -c 'while :; do echo tick; sleep 0.1; done' {name} & echo parent-done"
        spec = RunSpec(["sh", "-c", script], timeout_s=5.0, kill_grace_s=1.0, use_cgroup=use_cgroup)
        deadline = time.monotonic() + 3.0
        result = await run(spec)
        assert time.monotonic() < deadline, f"runner hung on an open pipe (use_cgroup={use_cgroup})"
        assert result.exit_code == 0
        assert b"parent-done" in result.output
        left = await _eventually_none(lambda: _pids_with_arg(name), deadline_s=1.0)  # noqa: B023
        _kill_leftovers(left)
        if use_cgroup and CGROUPS:
            assert left == []


async def test_escapee_holding_the_pipe_past_timeout_does_not_hang_the_runner() -> None:
    marker = _marker()
    script = f"setsid sleep {marker} & sleep 300"
    spec = RunSpec(["sh", "-c", script], timeout_s=1.0, kill_grace_s=0.5, use_cgroup=False)
    deadline = time.monotonic() + spec.timeout_s + spec.kill_grace_s + 2.0
    result = await run(spec)
    assert time.monotonic() < deadline
    assert result.timed_out
    _kill_leftovers(_pids_with_arg(marker))


async def test_cancel_kills_the_group() -> None:
    marker = _marker()
    cancel = asyncio.Event()
    task = asyncio.create_task(
        run(RunSpec(["sh", "-c", f"sleep {marker} & sleep {marker}"], timeout_s=60.0, kill_grace_s=1.0), cancel=cancel)
    )
    end = time.monotonic() + 5.0
    while len(_pids_with_arg(marker)) < 2 and time.monotonic() < end:
        await asyncio.sleep(0.02)
    assert len(_pids_with_arg(marker)) == 2
    cancel.set()
    result = await asyncio.wait_for(task, timeout=5.0)
    assert result.cancelled
    assert not result.timed_out
    assert result.exit_code == 128 + 15
    left = await _eventually_none(lambda: _pids_with_arg(marker))
    _kill_leftovers(left)
    assert left == []


async def test_cancelling_the_run_task_kills_the_command() -> None:
    marker = _marker()
    task = asyncio.create_task(run(RunSpec(["sleep", marker], timeout_s=60.0)))
    end = time.monotonic() + 5.0
    while not _pids_with_arg(marker) and time.monotonic() < end:
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    left = await _eventually_none(lambda: _pids_with_arg(marker))
    _kill_leftovers(left)
    assert left == []


async def test_ten_concurrent_runs() -> None:
    results = await asyncio.gather(*(run(RunSpec(["sh", "-c", f"sleep 0.2; echo run-{i}"])) for i in range(10)))
    assert [r.output for r in results] == [f"run-{i}\n".encode() for i in range(10)]
    assert all(r.exit_code == 0 for r in results)


# -- output -------------------------------------------------------------------------------------------------


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


async def test_yes_is_capped_with_marker_and_bounded_memory() -> None:
    cap = 64 * 1024
    baseline = _rss_kib()
    peak = baseline
    streamed = 0

    async def sink(chunk: bytes) -> None:
        nonlocal streamed
        streamed += len(chunk)

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, _rss_kib())
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    try:
        result = await run(RunSpec(["yes"], timeout_s=1.0, kill_grace_s=1.0, output_cap_bytes=cap), sink)
    finally:
        sampler.cancel()
    assert result.timed_out
    assert result.exit_code == 124
    assert result.truncated
    assert result.output_bytes > 100 * cap
    assert cap <= len(result.output) <= cap + 100
    assert b"bytes truncated \xe2\x80\xa6]\n" in result.output
    dropped = int(result.output.split(b"[\xe2\x80\xa6 ")[1].split(b" ")[0])
    assert dropped == result.output_bytes - cap
    assert streamed == cap // 2  # streaming stops at the head
    # Generous bound: the runner holds about one cap plus one read chunk, whatever `yes` printed (GBs).
    assert peak - baseline < 32 * 1024, f"RSS grew by {peak - baseline} KiB"


async def test_urandom_is_capped_and_shown_safely() -> None:
    result = await run(RunSpec(["head", "-c", "200000", "/dev/urandom"], output_cap_bytes=4096))
    assert result.exit_code == 0
    assert result.output_bytes == 200000
    assert result.truncated
    shown = printable(result.output)
    assert "\x1b" not in shown
    hidden = {"Cc", "Cf", "Co", "Cn", "Zl", "Zp"}  # what a terminal or chat client could act on or hide
    assert not [ch for ch in shown if ch not in "\n\t" and unicodedata.category(ch) in hidden]
    assert "bytes truncated" in shown


async def test_output_below_cap_is_complete_and_streamed_in_order() -> None:
    chunks: list[bytes] = []

    async def sink(chunk: bytes) -> None:
        chunks.append(chunk)

    result = await run(RunSpec(["seq", "1", "5000"]), sink)
    expected = "".join(f"{i}\n" for i in range(1, 5001)).encode()
    assert result.output == expected
    assert b"".join(chunks) == expected
    assert not result.truncated


async def test_failing_sink_does_not_stop_the_command() -> None:
    async def sink(chunk: bytes) -> None:
        raise ConnectionError("websocket gone")

    result = await run(RunSpec(["sh", "-c", "echo one; sleep 0.1; echo two"]), sink)
    assert result.exit_code == 0
    assert result.output == b"one\ntwo\n"


# -- resource limits ----------------------------------------------------------------------------------------


async def test_file_size_limit_stops_a_big_write(tmp_path: Path) -> None:
    target = tmp_path / "big"
    limits = ResourceLimits(file_size_bytes=1024 * 1024)
    result = await run(RunSpec(["head", "-c", "5000000", "/dev/zero"], limits=limits, cwd=str(tmp_path)))
    assert result.exit_code == 0  # sanity: to the pipe, no file limit applies
    result = await run(RunSpec(["sh", "-c", f"head -c 5000000 /dev/zero > {target}"], limits=limits, cwd=str(tmp_path)))
    assert result.exit_code != 0
    assert target.stat().st_size <= 1024 * 1024


async def test_address_space_limit_stops_a_big_allocation() -> None:
    limits = ResourceLimits(address_space_bytes=256 * 1024 * 1024)
    result = await run(RunSpec(["python3", "-c", "b = bytearray(512 * 1024 * 1024)"], limits=limits))
    assert result.exit_code == 1
    assert b"MemoryError" in result.output


async def test_open_files_and_core_limits_are_applied() -> None:
    result = await run(RunSpec(["sh", "-c", "ulimit -n; ulimit -c"], limits=ResourceLimits(open_files=77)))
    assert result.output == b"77\n0\n"


def _ensure_test_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                TEST_USER,
            ],
            check=False,  # a parallel test worker may create it first (useradd then exits 9)
        )
        return pwd.getpwnam(TEST_USER)


@pytest.fixture
def unprivileged_user() -> Iterator[str | None]:
    """A user for whom RLIMIT_NPROC binds: a dedicated system user when we are root, else ourselves."""
    if os.geteuid() == 0:
        _ensure_test_user()
        yield TEST_USER
    else:
        yield None  # the agent itself is unprivileged: NPROC already binds


async def test_run_as_switches_user(unprivileged_user: str | None) -> None:
    result = await run(RunSpec(["id", "-u"], run_as=unprivileged_user))
    expected_uid = pwd.getpwnam(unprivileged_user).pw_uid if unprivileged_user else os.geteuid()
    assert result.output.decode().strip() == str(expected_uid)


async def test_unknown_run_as_is_refused() -> None:
    result = await run(RunSpec(["id"], run_as="no-such-user-teleops"))
    assert result.exit_code == 126
    assert result.error is not None
    assert "no such user" in result.error


async def test_fork_bomb_is_stopped_by_nproc(unprivileged_user: str | None) -> None:
    uid = pwd.getpwnam(unprivileged_user).pw_uid if unprivileged_user else os.geteuid()
    bomb = "bomb() { bomb | bomb & }; bomb; while :; do bomb; done"
    spec = RunSpec(
        ["bash", "-c", bomb],
        timeout_s=3.0,
        kill_grace_s=1.0,
        run_as=unprivileged_user,
        limits=ResourceLimits(nproc=64),
    )
    bomb_task = asyncio.create_task(run(spec))
    if unprivileged_user is not None:  # wait until the bomb is really going
        end = time.monotonic() + 3.0
        while len(_pids_of_uid(uid)) < 32 and time.monotonic() < end:
            await asyncio.sleep(0.02)
        assert len(_pids_of_uid(uid)) >= 32
    # The host stays responsive while the bomb runs: another command starts and finishes normally.
    alive = await run(RunSpec(["echo", "alive"], timeout_s=10.0))
    assert alive.output == b"alive\n"
    result = await bomb_task
    assert result.timed_out
    assert b"Resource temporarily unavailable" in result.output  # fork() failed: NPROC reached
    if unprivileged_user is not None:
        left = await _eventually_none(lambda: _pids_of_uid(uid), deadline_s=10.0)
        _kill_leftovers(left)
        assert left == []


async def test_run_as_user_gets_the_limits(unprivileged_user: str | None) -> None:
    limits = ResourceLimits(nproc=48, open_files=99)
    result = await run(RunSpec(["sh", "-c", "ulimit -n; ulimit -c; id -u"], run_as=unprivileged_user, limits=limits))
    expected_uid = pwd.getpwnam(unprivileged_user).pw_uid if unprivileged_user else os.geteuid()
    assert result.output.decode().split() == ["99", "0", str(expected_uid)]
    nproc = Path("/proc/self/limits")  # the command's own view, read by the command itself
    result = await run(RunSpec(["cat", str(nproc)], run_as=unprivileged_user, limits=limits))
    line = next(ln for ln in result.output.decode().splitlines() if ln.startswith("Max processes"))
    assert line.split()[2:4] == ["48", "48"]


@pytest.mark.parametrize("payload", ["$(touch {canary})", "`touch {canary}`", "; touch {canary}", "| touch {canary}"])
async def test_argv_is_never_parsed_by_a_shell(payload: str, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    arg = payload.format(canary=canary)
    result = await run(RunSpec(["echo", arg, "*", "$HOME"], cwd=str(tmp_path)))
    assert result.output == f"{arg} * $HOME\n".encode()
    assert not canary.exists()


async def test_relative_program_path_and_directory(tmp_path: Path) -> None:
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/sh\necho hello from script\n")
    script.chmod(0o755)
    result = await run(RunSpec(["./hello.sh"], cwd=str(tmp_path)))
    assert result.output == b"hello from script\n"
    result = await run(RunSpec([str(tmp_path)]))
    assert result.exit_code == 126
    result = await run(RunSpec(["./missing.sh"], cwd=str(tmp_path)))
    assert result.exit_code == 127


# -- the start gate waits for `ready` (the agent's durable "seen" record) -----------------------------------


async def test_the_command_starts_only_after_ready_completes(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    released = asyncio.Event()

    async def ready() -> None:
        await released.wait()

    gate = asyncio.ensure_future(ready())
    running = asyncio.create_task(run(RunSpec(["touch", str(marker)]), ready=gate))
    await asyncio.sleep(0.3)
    assert not marker.exists()  # forked and held at the gate
    released.set()
    result = await asyncio.wait_for(running, 10)
    assert result.exit_code == 0
    assert marker.exists()


async def test_a_failed_ready_means_the_command_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    async def ready() -> None:
        raise OSError(28, "No space left on device")

    result = await run(RunSpec(["touch", str(marker)]), ready=asyncio.ensure_future(ready()))
    assert result.exit_code == 126
    assert b"could not record the command id" in result.output
    assert not marker.exists()
