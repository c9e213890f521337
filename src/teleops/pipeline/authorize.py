"""The one authorize step: may this person run this argv on this host?

Placeholder policy until the access-control issue replaces this module (keep the signature): role
`admin` may run anything, `operator` a short list of read-only commands, everyone else nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["OPERATOR_READ_ONLY", "Decision", "authorize"]

# argv prefixes an operator may run anywhere; a prefix matches whole words only.
OPERATOR_READ_ONLY: tuple[tuple[str, ...], ...] = (
    ("uptime",),
    ("uname",),
    ("hostname",),
    ("date",),
    ("df",),
    ("free",),
    ("w",),
    ("who",),
    ("ps",),
    ("echo",),
    ("systemctl", "status"),
)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    rule: str
    reason: str


def authorize(user: str, role: str, host: str, argv: Sequence[str]) -> Decision:
    """Decide for a person (never a bot account). Default deny; the reason says what to do next."""
    if not argv:
        return Decision(False, "empty command", "nothing to run: the command is empty")
    if role == "admin":
        return Decision(True, "role admin: *", f"admin {user} may run anything")
    if role == "operator":
        for prefix in OPERATOR_READ_ONLY:
            if tuple(argv[: len(prefix)]) == prefix:
                return Decision(True, f"role operator: {' '.join(prefix)} *", "read-only command")
    return Decision(
        False,
        "default deny",
        f'role "{role}" may not run "{argv[0]}" on {host} (rule: default deny); ask an admin to run it',
    )
