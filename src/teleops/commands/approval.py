"""The approval step: a second person decides on a command whose rule has `require_approval`
(docs/threat-model.md T22, T23).

Who may vote: any TeleOps user other than the requester whose own role's policy would allow the same argv on
the same host. Identity is the user name, so two chat accounts (or an API token) of one person are one voter.
A vote names the command id and, from a button, the first characters of the request's digest, so a stale
button for another request approves nothing. One deny wins; `needed` distinct approvals (default 1) complete
it; the request expires after `ttl` (default 15 min). When complete, the command is dispatched at once with
the policy and the requester's 2FA lock re-checked at that moment (`dispatch_approved`). Voters see the command
with its secrets masked (store/sealed_argv.py); eligibility and the digest are judged on the original.

Listeners (the chat side) hear every outcome, so the requesting chat is told and shows the output.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import structlog

from teleops.commands.authorize import authorize
from teleops.commands.dispatch import CommandSender, dispatch_approved, record_audit
from teleops.commands.read_access import ReadAccess, reader_named
from teleops.domain.command import CommandNotFound, CommandRecord, CommandStatus, Finish
from teleops.store.approvals import (
    ApprovalRecord,
    ApprovalRules,
    ApprovalStatus,
    Vote,
    cast_vote,
    due_approvals,
    expire_approval,
    get_approval,
)
from teleops.store.audit_checkpoints import CheckpointLog
from teleops.store.commands import finish_command, get_command
from teleops.store.database import Database
from teleops.store.sealed_argv import SealUnreadable, original_command
from teleops.store.twofactor import TwoFactorStore
from teleops.store.users import UserStore

__all__ = ["ApprovalDesk", "ApprovalNews", "Vote", "not_waiting"]

log = structlog.get_logger(__name__)


def not_waiting(command_id: int) -> str:
    """The answer to a vote on a command that is not waiting for approval, or that the voter may not read."""
    return f"Command {command_id} is not waiting for approval; check the number."


@dataclass(frozen=True, slots=True)
class ApprovalNews:
    """An outcome to tell people about. `record` is the command after it (running once dispatched)."""

    approval: ApprovalRecord
    record: CommandRecord
    text: str
    final: bool  # no more votes will change anything


Listener = Callable[[ApprovalNews], Awaitable[None]]


class ApprovalDesk:
    """Votes, expiry and dispatch of approved commands. One per controller process."""

    def __init__(
        self,
        *,
        db: Database,
        users: UserStore,
        sender: CommandSender,
        clock: Callable[[], datetime],
        rules: ApprovalRules,
        output_cap_bytes: int,
        stepup: TwoFactorStore | None = None,
        checkpoints: CheckpointLog | None = None,
    ) -> None:
        self._db = db
        self._users = users
        self._sender = sender
        self._clock = clock
        self.rules = rules
        self._cap = output_cap_bytes
        self._stepup = stepup
        self._checkpoints = checkpoints
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def vote(self, command_id: int, *, voter: str, vote: Vote, digest: str | None = None) -> str:
        """Count `voter`'s vote and act on the outcome; returns what to tell the voter (refusals say why).

        Never raises for a bad vote (unknown id, own request, stale digest, not eligible, already decided,
        expired); raises StorageUnavailable.
        """
        now = self._clock()
        approval = await get_approval(self._db, command_id)
        try:
            record = await get_command(self._db, command_id)
        except CommandNotFound:
            approval = None
        if approval is None:
            return not_waiting(command_id)
        user = await self._users.get(voter)
        eligible: str | None = None
        try:  # eligibility is judged on the original argv (what would run), not the redacted one shown
            original = original_command(self._db.argv_vault, record.argv, record.sealed_argv, approval.command_text)
        except SealUnreadable:
            # It can never run (`dispatch_approved` refuses it, saying why): let the vote end it now rather than
            # leave it waiting for its expiry.
            original = None
        if original is not None:
            decision = authorize(
                voter, user.role if user else None, record.agent_name, original.argv, text=original.text
            )
            # Said without quoting the command or the rule: whoever may not run it may not read it either
            # (commands/read_access.py), and a vote by number must not reveal it.
            eligible = None if decision.allowed else "you may not decide on it: your own rules would not let you run it"
        result = await cast_vote(
            self._db, command_id, voter=voter, vote=vote, digest=digest, eligible=eligible, now=now
        )
        after = result.approval
        if after is None:
            return f"Not counted: {result.message}."
        if not result.counted:
            if after.status is ApprovalStatus.EXPIRED and after.decided_at == now:
                await self._end(after, "approval expired before anyone approved it; ask for the command again")
            return f"Not counted: {result.message}."
        log.info("approval.vote", command_id=command_id, voter=voter, vote=vote.value, status=after.status.value)
        if after.status is ApprovalStatus.DENIED:
            await self._end(after, f"denied by {voter}")
        elif after.status is ApprovalStatus.APPROVED:
            await self._run(after)
        else:
            await self._tell(
                ApprovalNews(after, record, f"{voter} approved command {command_id}; " + _left(after), False)
            )
        return result.message[:1].upper() + result.message[1:] + "."

    async def vote_by_number(self, command_id: int, *, voter: str, vote: Vote) -> str:
        """`vote` as typed in chat (`/approve ID`, `/deny ID`): counted or refused the same, but a refusal to a voter
        who may not read the command (commands/read_access.py) is the answer for a command that does not exist, as
        the REST vote answers 404: a refusal would say what became of it (denied by whom, ended how, the reason
        quoting its command line), and a number typed confirms nothing. Raises StorageUnavailable."""
        text = await self.vote(command_id, voter=voter, vote=vote)  # audited, counted or not
        if not text.startswith("Not counted"):
            return text  # counted: the voter is now one who voted on it, and may read it
        reader = await reader_named(self._users, voter)
        decision = (await ReadAccess(self._db, reader).decide_ids([command_id]))[command_id]
        return text if decision.allowed else not_waiting(command_id)

    async def expire_due(self) -> int:
        """Expire every pending request past its time (audited) and end its command `denied`. Returns how many."""
        now = self._clock()
        ended = 0
        for command_id in await due_approvals(self._db, now=now):
            if await expire_approval(self._db, command_id, now=now):
                approval = await get_approval(self._db, command_id)
                if approval is not None:
                    await self._end(approval, "approval expired before anyone approved it; ask for the command again")
                    ended += 1
        return ended

    async def _run(self, approval: ApprovalRecord) -> None:
        requester = await self._users.get(approval.requester)
        state = await self._stepup.state(approval.requester) if self._stepup is not None else None
        record = await dispatch_approved(
            self._db,
            self._sender,
            approval.command_id,
            role=requester.role if requester else None,
            locked=state is not None and state.locked_at is not None,
            now=self._clock(),
            output_cap_bytes=self._cap,
            checkpoints=self._checkpoints,
        )
        who = ", ".join(approval.approved_by)
        if record.status == CommandStatus.DENIED:
            text = f"Command {record.id} was approved by {who} but {record.reason}"
        else:
            text = f"Command {record.id} approved by {who}; running `{' '.join(record.argv)}` on {record.host}."
        await self._tell(ApprovalNews(approval, record, text, True))

    async def _end(self, approval: ApprovalRecord, why: str) -> None:
        now = self._clock()
        reason = f"not run: {why}"
        changed = await finish_command(
            self._db, approval.command_id, Finish(CommandStatus.DENIED, reason=reason), now=now
        )
        if changed is None:
            return
        await record_audit(
            self._db,
            now=now,
            actor=approval.decided_by or "system",
            action="command.denied",
            subject=f"command:{approval.command_id}",
            data={"reason": reason},
        )
        await self._tell(ApprovalNews(approval, changed, f"Command {approval.command_id} {reason}.", True))

    async def _tell(self, news: ApprovalNews) -> None:
        for listener in self._listeners:
            try:
                await listener(news)
            except Exception:  # telling people must never undo or block a decision
                log.exception("approval.listener_failed", command_id=news.record.id)


def _left(approval: ApprovalRecord) -> str:
    left = approval.needed - len(approval.approved_by)
    return f"{left} more approval{'s' if left != 1 else ''} needed"
