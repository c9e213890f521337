"""Resource limits (setrlimit) applied to every command: CPU, address space, processes, file size, files, cores."""

from __future__ import annotations

import math
import resource
from dataclasses import dataclass

__all__ = ["ResourceLimits", "RlimitSetting"]

GiB = 1024**3
MiB = 1024**2

# (resource, soft, hard) as passed to resource.setrlimit.
RlimitSetting = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class ResourceLimits:
    """Per-command limits. ``None`` leaves that limit as the agent has it; ``cpu_s=None`` means timeout + grace.

    RLIMIT_NPROC counts every process of the *user*, not of the command, and the kernel does not enforce it
    for root (CAP_SYS_RESOURCE / CAP_SYS_ADMIN): it only stops a fork bomb when the command runs as an
    unprivileged user (``RunSpec.run_as``, or an unprivileged agent). RLIMIT_CORE is always 0.
    """

    cpu_s: int | None = None
    address_space_bytes: int | None = 1 * GiB
    nproc: int | None = 256
    file_size_bytes: int | None = 64 * MiB
    open_files: int | None = 1024

    def settings(self, *, timeout_s: float, kill_grace_s: float) -> list[RlimitSetting]:
        """The setrlimit calls for one command, clamped to the agent's own hard limits (which it cannot raise)."""
        cpu = self.cpu_s if self.cpu_s is not None else max(1, math.ceil(timeout_s + kill_grace_s))
        wanted: list[tuple[int, int | None, int | None]] = [
            # Soft CPU limit sends SIGXCPU, the hard one a second later SIGKILL.
            (resource.RLIMIT_CPU, cpu, cpu + 1),
            (resource.RLIMIT_AS, self.address_space_bytes, self.address_space_bytes),
            (resource.RLIMIT_NPROC, self.nproc, self.nproc),
            (resource.RLIMIT_FSIZE, self.file_size_bytes, self.file_size_bytes),
            (resource.RLIMIT_NOFILE, self.open_files, self.open_files),
            (resource.RLIMIT_CORE, 0, 0),
        ]
        out: list[RlimitSetting] = []
        for res, soft, hard in wanted:
            if soft is None or hard is None:
                continue
            _, current_hard = resource.getrlimit(res)
            if current_hard != resource.RLIM_INFINITY:
                hard = min(hard, current_hard)
                soft = min(soft, hard)
            out.append((res, soft, hard))
        return out
