"""What became of a submitted command: one Outcome, which chat, REST, the web UI, batches and first response each
*present* (with a `match`) and none re-decides.

Each variant carries the sentence a person reads (`reason`) as the steps (commands/submit.py) wrote it; callers add
only their own framing ("Not run: …", an HTTP status). Real faults stay exceptions, because they are not an answer
about the command but about the controller: StorageUnavailable and AuditUnavailable when even the refusal or the
failed command cannot be written (the caller answers 503, nothing ran), and anything unexpected. A send that
fails (the agent went away between the check and the send) is not a fault of the request: it is `Dispatched`
with the command recorded `failed`, saying so.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from teleops.domain.command import CommandRecord
from teleops.store.approvals import ApprovalRecord

__all__ = ["AwaitingApproval", "Denied", "Dispatched", "NeedsCode", "NotRun", "NotRunWhy", "Outcome"]


@dataclass(frozen=True, slots=True)
class Dispatched:
    """Recorded, audited and sent; or recorded and ended `failed` because it could not be (its `reason` says)."""

    record: CommandRecord


@dataclass(frozen=True, slots=True)
class Denied:
    """The policy said no: recorded `denied`, audited, not sent."""

    reason: str
    record: CommandRecord


@dataclass(frozen=True, slots=True)
class NeedsCode:
    """The rule needs a fresh one-time code and the person is not elevated: nothing recorded or sent.

    `refusal`: why a code that came with the request did not count (wrong, replayed, locked …), if one did.
    `shown`: the command line to show people (secrets masked); `argv`: the original, kept in memory only.
    """

    reason: str
    agent: str
    argv: tuple[str, ...]
    shown: str
    refusal: str | None = None


@dataclass(frozen=True, slots=True)
class AwaitingApproval:
    """Recorded `queued` with an approval request; a second person decides. Nothing was sent."""

    reason: str
    record: CommandRecord
    approval: ApprovalRecord


class NotRunWhy(StrEnum):
    BAD_COMMAND_LINE = "bad_command_line"
    UNKNOWN_HOST = "unknown_host"
    AMBIGUOUS_HOST = "ambiguous_host"
    AGENT_OFFLINE = "agent_offline"
    UNKNOWN_INCIDENT = "unknown_incident"


@dataclass(frozen=True, slots=True)
class NotRun:
    """Nothing was recorded or run; `reason` says why and what to do next, `why` which kind of problem it is."""

    reason: str
    why: NotRunWhy


Outcome = Dispatched | Denied | NeedsCode | AwaitingApproval | NotRun
