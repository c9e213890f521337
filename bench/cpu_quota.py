"""A CPU budget for one process we started: a cgroup with a CFS quota (cgroup v1 `cpu` or cgroup v2), by PID.

B14 gives each controller replica the same budget, as replicas on their own hosts each have their own CPU,
so the row shows whether two replicas on one database hold each other back, not how two processes share a core.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from bench.process import BenchError

__all__ = ["cpu_budget"]

_PERIOD_US = 100_000
_ROOTS = (Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup"))


def _root() -> Path:
    """The cgroup hierarchy with the cpu controller that we may write to."""
    for root in _ROOTS:
        v1 = (root / "cpu.cfs_quota_us").exists() or (root / "cpu.shares").exists()
        v2 = (
            "cpu" in (root / "cgroup.subtree_control").read_text().split()
            if (root / "cgroup.subtree_control").exists()
            else False
        )
        if (v1 or v2) and os.access(root, os.W_OK):
            return root
    raise BenchError("no writable cgroup with the cpu controller (run as root on a host with cgroups)")


@contextlib.contextmanager
def cpu_budget(pid: int, name: str, cores: float) -> Iterator[None]:
    """Hold process `pid` (all its threads) to `cores` CPUs while the body runs; the cgroup is removed after."""
    root = _root()
    group = root / f"teleops-bench-{name}-{os.getpid()}"
    group.mkdir()
    try:
        quota = int(cores * _PERIOD_US)
        if (group / "cpu.cfs_quota_us").exists():
            (group / "cpu.cfs_period_us").write_text(str(_PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            (group / "cpu.max").write_text(f"{quota} {_PERIOD_US}")
        (group / "cgroup.procs").write_text(str(pid))
        yield
    finally:
        # Back to the root group (if it still runs), then the empty group can go.
        with contextlib.suppress(OSError):
            (root / "cgroup.procs").write_text(str(pid))
        with contextlib.suppress(OSError):
            group.rmdir()
