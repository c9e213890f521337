"""Every command's process count is bounded, also as root (docs/threat-model.md F08/F11): cgroup v2 pids, else the cgroup v1
pids hierarchy, else RLIMIT_NPROC for an unprivileged command; otherwise the runner refuses to run it.

Real processes: a command that tries to start 600 children may have at most ``nproc`` alive at once. Which
mechanism holds depends on the machine; the test asserts the one it offers (and says which).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from teleops.agent.cgroup import (
    PIDS_NONE,
    CommandCgroup,
    cgroup_parent,
    decide_pids_bound,
    missing_pids_notes,
    pids_v1_parent,
    runs_privileged,
)
from teleops.agent.rlimits import ResourceLimits
from teleops.agent.runner import RunSpec, finish_disposals, run

NPROC = 50
CHILDREN = 600


@pytest.fixture(autouse=True)
async def _cgroups_removed() -> AsyncIterator[None]:
    yield
    await finish_disposals()


def _mechanism(*, isolate: bool = True) -> str:
    """How a command started by this process is bounded here (a probe group, made and removed)."""
    probe = CommandCgroup.create(f"probe-{uuid.uuid4().hex}", pids_max=NPROC, isolate=isolate)
    mechanism = probe.pids_mechanism if probe is not None else None
    if probe is not None:
        probe.remove()
    return decide_pids_bound(
        v2=mechanism == "cgroup-v2", v1=mechanism == "cgroup-v1", privileged=runs_privileged(None)
    ).mechanism


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


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


@pytest.mark.parametrize("use_cgroup", [True, False], ids=["cgroup", "process-group-fallback"])
async def test_a_command_forking_600_children_has_at_most_nproc_alive(use_cgroup: bool) -> None:
    mechanism = _mechanism(isolate=use_cgroup)
    marker = f"{5 + int(uuid.uuid4().int % 10**6) / 10**6:.6f}"  # a sleep only this test runs
    script = f"for i in $(seq {CHILDREN}); do sleep {marker} & done; wait"
    spec = RunSpec(
        ["sh", "-c", script],
        timeout_s=3.0,
        kill_grace_s=0.5,
        limits=ResourceLimits(nproc=NPROC),
        use_cgroup=use_cgroup,
    )
    task = asyncio.create_task(run(spec))
    peak = 0
    try:
        while not task.done():
            peak = max(peak, len(_pids_with_arg(marker)))
            await asyncio.sleep(0.01)
        result = await task
    finally:
        left = _pids_with_arg(marker)
        _kill(left)
    if mechanism == PIDS_NONE:  # root without any cgroup pids controller: refused, nothing ran
        assert result.exit_code == 126
        assert result.error is not None
        assert "no process limit available" in result.error
        assert peak == 0
        return
    output = result.output.decode(errors="replace")
    # The shell itself is one of the NPROC; every fork past the bound failed.
    assert peak <= NPROC, f"{peak} children alive at once under {mechanism} (bound {NPROC})"
    assert peak >= NPROC // 2, f"only {peak} children started: the test did not exercise the bound"
    assert "Cannot fork" in output or "Resource temporarily unavailable" in output, output[-500:]


async def test_refusal_when_nothing_bounds_a_root_command_names_the_reason() -> None:
    """The refusal text, as the runner builds it from this machine's state (whatever state that is)."""
    v2_note, v1_note = missing_pids_notes()
    decision = decide_pids_bound(v2=False, v1=False, privileged=True, v2_note=v2_note, v1_note=v1_note)
    assert decision.refusal is not None
    assert v2_note in decision.refusal
    assert v1_note in decision.refusal
    assert "RLIMIT_NPROC does not apply" in decision.refusal


async def test_the_command_groups_are_removed_after_the_command() -> None:
    command_id = f"pb-{uuid.uuid4().hex}"
    result = await run(RunSpec(["sh", "-c", "sleep 30 & echo ok"], timeout_s=5.0, command_id=command_id))
    assert result.output == b"ok\n"
    assert result.duration_s < 5.0  # the background sleep was killed with the command, not waited for
    await finish_disposals()
    parents = [p for p in (cgroup_parent(), pids_v1_parent()) if p is not None]
    assert [g for parent in parents for g in parent.glob(f"teleops-cmd-{command_id}*")] == []
