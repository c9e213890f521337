"""A CPU budget for one process we started: a cgroup with a CFS quota (cgroup v1 `cpu` or cgroup v2), by PID.

B14 gives each controller replica the same budget, as replicas on their own hosts each have their own CPU,
so the row shows whether two replicas on one database hold each other back, not how two processes share a core.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.process import BenchError

__all__ = ["Budget", "cpu_budget"]

_PERIOD_US = 100_000
_SERIAL = itertools.count()
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


def _cgroup_of(pid: int, root: Path) -> Path:
    """The cgroup `pid` is in now, in the hierarchy at `root` (v1: the `cpu` line of /proc/PID/cgroup; v2: `0::`)."""
    v1 = root.name == "cpu"
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if (v1 and "cpu" in controllers.split(",")) or (not v1 and controllers == ""):
            return root / path.lstrip("/")
    raise BenchError(f"process {pid} is in no cgroup of {root}")


@dataclass
class Budget:
    """What the budget did, read when the body ends: CFS periods in which the process ran, and in how many of them
    it used up its quota (so the budget, not something else, limited it)."""

    periods: int = 0
    throttled: int = 0

    @property
    def throttled_share(self) -> float:
        return self.throttled / self.periods if self.periods else 0.0


@contextlib.contextmanager
def cpu_budget(pid: int, name: str, cores: float) -> Iterator[Budget]:
    """Hold process `pid` (all its threads) to `cores` CPUs while the body runs; afterwards it is back in the cgroup
    it came from and the budget's cgroup is removed. Raises BenchError when that cannot be done (a number measured
    under a budget left in place would mean nothing)."""
    root = _root()
    home = _cgroup_of(pid, root)
    group = root / f"teleops-bench-{name}-{os.getpid()}-{next(_SERIAL)}"
    group.mkdir()
    try:
        quota = int(cores * _PERIOD_US)
        if (group / "cpu.cfs_quota_us").exists():
            (group / "cpu.cfs_period_us").write_text(str(_PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            (group / "cpu.max").write_text(f"{quota} {_PERIOD_US}")
        (group / "cgroup.procs").write_text(str(pid))
        budget = Budget()
        yield budget
        stat = dict(line.split() for line in (group / "cpu.stat").read_text().splitlines())
        budget.periods, budget.throttled = int(stat.get("nr_periods", 0)), int(stat.get("nr_throttled", 0))
    finally:
        try:
            (home / "cgroup.procs").write_text(str(pid))
        except ProcessLookupError:
            pass  # it has exited: nothing to move back
        except OSError as exc:
            raise BenchError(f"could not move process {pid} back to {home}: {exc}") from exc
        group.rmdir()
