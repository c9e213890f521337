"""Commands started on a warm trampoline (agent/warm.py) behave exactly like cold starts: the same argv, environment
and working directory reach the program, the same isolation holds, and whatever cannot start warm starts cold.
Real processes and, where this machine allows, real cgroups."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teleops.agent.cgroup import CommandCgroup
from teleops.agent.runner import ISOLATION_CGROUP, ISOLATION_PROCESS_GROUP, RunSpec, run
from teleops.agent.spawn import EXIT_CANNOT_EXECUTE
from teleops.agent.warm import (
    MAX_LINE_BYTES,
    POOL_SIZE,
    REFILL_AFTER_S,
    TAKE_WAIT_S,
    WarmTrampolines,
    gate_line,
    quote,
)

SHOW = "import json, os, sys; print(json.dumps([sys.argv[1:], dict(os.environ), os.getcwd()]))"


def _cgroups_available() -> bool:
    probe = CommandCgroup.create(None)
    if probe is None:
        return False
    probe.remove()
    return True


CGROUPS = _cgroups_available()


@pytest.fixture
async def trampolines() -> AsyncIterator[WarmTrampolines]:
    warm = WarmTrampolines()
    warm.start()
    await _until_warm(warm)
    yield warm
    await warm.close()


async def _until_warm(warm: WarmTrampolines, count: int = POOL_SIZE) -> None:
    for _ in range(500):
        if len(warm._ready) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no warm trampoline within 5 s")


async def _seen(spec: RunSpec, trampolines: WarmTrampolines | None) -> list[object]:
    result = await run(spec, trampolines=trampolines)
    assert result.error is None, result.error
    assert result.exit_code == 0, result.output
    return list(json.loads(result.output))


WORDS = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00")  # utf-8: no lone surrogates, max_size=40
) | st.sampled_from(
    ["", "'", "'\"$nl\"'", "$nl", "\n", "\r\n", "a'b", '"', "\\", "`id`", "$(id)", "${HOME}", "-", "--"]
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=st.lists(WORDS, max_size=6), value=WORDS)
async def test_argv_environment_and_directory_arrive_exactly_as_on_a_cold_start(
    args: list[str], value: str, tmp_path: Path
) -> None:
    warm = WarmTrampolines()
    warm.start()
    await _until_warm(warm)
    try:
        spec = RunSpec(argv=[sys.executable, "-c", SHOW, *args], cwd=str(tmp_path), env={"LANG": value})
        if gate_line(spec.argv, cwd=spec.cwd, env={"LANG": value}) is None:
            return  # too long for the warm path: covered by the fallback test
        warm_seen = await _seen(spec, warm)
        cold_seen = await _seen(spec, None)
    finally:
        await warm.close()
    assert warm_seen == cold_seen
    assert warm_seen[0] == args
    assert warm_seen[2] == str(tmp_path)
    environment = warm_seen[1]
    assert isinstance(environment, dict)
    assert environment["LANG"] == value


@given(word=WORDS)
@settings(max_examples=200, deadline=None)
def test_a_quoted_word_has_no_newline_and_the_shell_reads_it_back_unchanged(word: str) -> None:
    quoted = quote(word)
    assert "\n" not in quoted
    script = "nl='\n'; IFS= read -r line; eval \"set -- $line\"; printf '%s' \"$1\""
    shown = subprocess.run(["/bin/sh", "-c", script], input=os.fsencode(quoted + "\n"), capture_output=True, check=True)
    assert shown.stdout == os.fsencode(word)


async def test_injection_payloads_run_as_text_on_the_warm_path(trampolines: WarmTrampolines, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    argv = ["printf", "%s|", f"'; touch {canary}; '", f"$(touch {canary})", f"`touch {canary}`", f"a\ntouch {canary}"]
    result = await run(RunSpec(argv=argv, cwd=str(tmp_path)), trampolines=trampolines)
    assert result.output.decode() == "|".join(argv[2:]) + "|"
    assert not canary.exists()


async def test_a_warm_start_is_isolated_in_its_own_cgroup_and_setsid_escapees_die(
    trampolines: WarmTrampolines, tmp_path: Path
) -> None:
    marker = "301.123456"
    script = f"setsid sleep {marker} & cat /proc/self/cgroup; exit 0"
    result = await run(
        RunSpec(argv=["sh", "-c", script], cwd=str(tmp_path), command_id="warm1"), trampolines=trampolines
    )
    if not CGROUPS:  # only the process group holds it here; the escapee check needs a cgroup
        assert result.isolation == ISOLATION_PROCESS_GROUP
        return
    assert result.isolation == ISOLATION_CGROUP
    assert "/teleops-cmd-" in result.output.decode()
    assert not [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline_has(p, marker)]


def _cmdline_has(proc: Path, arg: str) -> bool:
    try:
        return arg.encode() in (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False


async def test_a_timeout_kills_a_warm_started_command(trampolines: WarmTrampolines) -> None:
    result = await run(RunSpec(argv=["sleep", "30"], timeout_s=0.3, kill_grace_s=0.2), trampolines=trampolines)
    assert result.timed_out
    assert result.exit_code == 124


async def test_what_cannot_start_warm_starts_cold(trampolines: WarmTrampolines, tmp_path: Path) -> None:
    long_arg = "x" * (MAX_LINE_BYTES + 1)
    assert gate_line(["echo", long_arg], cwd="/", env={}) is None
    result = await run(RunSpec(argv=["echo", long_arg], cwd=str(tmp_path)), trampolines=trampolines)
    assert result.output.decode() == long_arg + "\n"
    assert len(trampolines._ready) == POOL_SIZE  # the warm ones were left for the next commands
    assert gate_line(["true"], cwd="/", env={"BAD-NAME": "1"}) is None


async def test_warm_trampolines_killed_from_outside_are_replaced_and_the_command_starts_cold(
    trampolines: WarmTrampolines,
) -> None:
    spares = list(trampolines._ready)
    assert len(spares) == POOL_SIZE
    for spare in spares:
        spare.process.kill()
        await spare.process.wait()
    result = await run(RunSpec(argv=["echo", "still fine"]), trampolines=trampolines)
    assert result.output == b"still fine\n"
    assert result.isolation in (ISOLATION_CGROUP, ISOLATION_PROCESS_GROUP)
    await _until_warm(trampolines)


async def test_the_next_trampoline_warms_after_the_command_that_took_one_not_while_it_starts(
    trampolines: WarmTrampolines,
) -> None:
    """Warming a trampoline (fork, exec, cgroup) on the agent's core while a short command starts made it ~1.7 ms
    slower; the next one starts on `refill` (the agent calls it when the controller acknowledged a result), or
    REFILL_AFTER_S after the take for a long command. The spare is there for a command right behind it."""
    taken = trampolines.take()
    assert taken is not None
    assert trampolines._starting is None or trampolines._starting.done()  # nothing warming during the start
    assert len(trampolines._ready) == POOL_SIZE - 1  # the spare
    trampolines.refill()
    await _until_warm(trampolines)

    long_one = asyncio.create_task(run(RunSpec(argv=["sleep", "1"]), trampolines=trampolines))
    await asyncio.sleep(REFILL_AFTER_S / 5)
    assert len(trampolines._ready) == POOL_SIZE - 1  # taken by the sleep, not refilled yet
    assert trampolines._starting is None or trampolines._starting.done()
    await asyncio.sleep(REFILL_AFTER_S * 2)
    await _until_warm(trampolines)  # a long command (or a missing acknowledgement) does not keep the next one cold
    assert not long_one.done()
    assert (await long_one).exit_code == 0
    for fd in (taken.gate_fd, taken.output_fd):
        os.close(fd)  # the unused trampoline reads EOF and exits
    await taken.process.wait()
    if taken.cgroup is not None:
        taken.cgroup.remove()


async def test_when_the_command_id_cannot_be_recorded_the_warm_command_never_runs(
    trampolines: WarmTrampolines, tmp_path: Path
) -> None:
    canary = tmp_path / "ran"
    failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    failed.set_exception(OSError(28, "No space left on device"))
    result = await run(RunSpec(argv=["touch", str(canary)]), trampolines=trampolines, ready=failed)
    assert result.exit_code == EXIT_CANNOT_EXECUTE
    assert "could not record the command id" in (result.error or "")
    await asyncio.sleep(0.1)
    assert not canary.exists()


async def test_close_leaves_no_process_and_no_cgroup() -> None:
    warm = WarmTrampolines()
    warm.start()
    await _until_warm(warm)
    spares = list(warm._ready)
    await warm.close()
    for spare in spares:
        assert spare.process.returncode is not None
        if spare.cgroup is not None:
            assert not spare.cgroup.path.exists()


async def test_start_removes_the_empty_warm_cgroups_of_agents_that_died_and_no_other() -> None:
    if not CGROUPS:
        WarmTrampolines().start()  # nothing to sweep without cgroups: it must not fail
        return
    dead_pid = subprocess.Popen(["true"])
    dead_pid.wait()
    dead = CommandCgroup.create(f"warm-{dead_pid.pid}-deadbeef0000")
    mine = CommandCgroup.create(f"warm-{os.getpid()}-live00000000")
    command = CommandCgroup.create(f"{dead_pid.pid}")  # a command's cgroup: never swept
    assert dead is not None
    assert mine is not None
    assert command is not None
    warm = WarmTrampolines()
    try:
        warm.start()
        assert not dead.path.exists()
        assert mine.path.exists()
        assert command.path.exists()
    finally:
        await warm.close()
        for group in (dead, mine, command):
            group.remove()


async def test_a_command_waits_for_a_trampoline_being_warmed_but_not_for_ever(
    trampolines: WarmTrampolines, monkeypatch: pytest.MonkeyPatch
) -> None:
    stuck = asyncio.Event()

    async def never_warms() -> bool:
        await stuck.wait()  # a cgroup move that never returns
        return False

    monkeypatch.setattr(trampolines, "_warm_one", never_warms)
    taken = [trampolines.take() for _ in range(POOL_SIZE)]  # empty the pool
    assert all(taken)
    assert trampolines.take() is None  # and the next one starts warming, for ever
    started = asyncio.get_running_loop().time()
    result = await run(RunSpec(argv=["echo", "cold"]), trampolines=trampolines)
    assert result.output == b"cold\n"
    assert asyncio.get_running_loop().time() - started >= TAKE_WAIT_S  # it did wait for the one warming
    stuck.set()
    for warm in taken:
        assert warm is not None
        for fd in (warm.gate_fd, warm.output_fd):
            os.close(fd)  # the unused trampoline reads EOF and exits
        await warm.process.wait()
        if warm.cgroup is not None:
            warm.cgroup.remove()
