"""The chat side of step-up and approval: asking for a one-time code, `/otp`, replies to the code prompt,
Approve/Deny buttons, `/approve ID` and `/deny ID`, and posting approval outcomes back.

The decisions themselves are made elsewhere (commands/stepup.py, commands/approval.py, the dispatch step);
this module only talks. A code continues exactly the command it was asked for: the pending request is
bound to its id and the hash of (agent, argv, requester, id), and expires (default 5 min). For a person who
steps up with Duo, the command instead waits for the push on their phone (one at a time) and, once approved,
runs through the same path as after an accepted code; a Duo outage refuses it (fail closed).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

import structlog

from teleops.chat.base import EventKind, InboundEvent
from teleops.chat.reply import Replies
from teleops.commands.approval import ApprovalDesk, ApprovalNews, Vote
from teleops.commands.dispatch import CommandRequest
from teleops.commands.duo import DuoPushes, PendingPush, PushAlreadyPending
from teleops.commands.outcome import AwaitingApproval, NeedsCode, NotRun
from teleops.commands.stepup import CodeGate, PendingStepUp, PendingStepUps
from teleops.commands.submit import parse, resolve
from teleops.domain.command import CommandRecord, CommandStatus
from teleops.domain.message import Button, Message
from teleops.domain.stepup import Verdict
from teleops.store.agents import host_candidates
from teleops.store.approvals import ApprovalRules
from teleops.store.audit_checkpoints import CheckpointLog
from teleops.store.database import Database
from teleops.store.outbox import OutboxStore
from teleops.store.twofactor import NotEnrolled, TwoFactorKeyMissing, TwoFactorStore

__all__ = ["CODE_PROMPT", "AccessDialog", "CommandStarter", "approval_button"]

log = structlog.get_logger(__name__)

CODE_PROMPT = "Command needs a one-time code: reply to this message with the 6-digit code or send /otp CODE"


def _is_code_prompt(payload: Mapping[str, Any]) -> bool:
    """Whether an outbox row's payload is a code prompt (its message's body starts with CODE_PROMPT)."""
    message = payload.get("message")
    body = message.get("body") if isinstance(message, Mapping) else None
    return isinstance(body, str) and body.startswith(CODE_PROMPT)


_VOTE_BUTTON = re.compile(r"^(apv|dny):(\d{1,12}):([0-9a-f]{8,64})$")


def approval_button(vote: Vote, command_id: int, digest: str) -> str:
    """Button data for a vote, bound to the request's digest prefix (fits Telegram's 64 bytes)."""
    return f"{'apv' if vote is Vote.APPROVE else 'dny'}:{command_id}:{digest}"


class CommandStarter(Protocol):
    """What the dialog needs of the command runner (chat/commands.py `CommandRunner` implements it; declared here so
    that neither module imports the other): run a command once its code or push came, show one a vote started."""

    @property
    def db(self) -> Database: ...

    async def run(
        self,
        event: InboundEvent,
        user: str,
        role: str,
        host: str,
        text: str,
        *,
        incident_id: int | None,
        code: str | None = None,
    ) -> None: ...

    async def show(self, platform: str, chat_id: str, record: CommandRecord, *, reply_to: int | None) -> None: ...


class AccessDialog:
    def __init__(
        self,
        runner: CommandStarter,
        *,
        replies: Replies,
        outbox: OutboxStore,
        clock: Callable[[], datetime],
        stepup: TwoFactorStore,
        approvals: ApprovalDesk,
        checkpoints: CheckpointLog,
        pending: PendingStepUps | None = None,
        duo: DuoPushes | None = None,
    ) -> None:
        self._runner = runner
        self._replies = replies
        self._outbox = outbox
        self._clock = clock
        self._stepup = stepup
        self._approvals = approvals
        self.checkpoints = checkpoints
        self.pending = pending or PendingStepUps()
        self.duo = duo
        self._pushes: set[asyncio.Task[None]] = set()  # pushes waiting on phones (kept so they are not collected)
        approvals.listen(self._on_news)

    @property
    def approval_rules(self) -> ApprovalRules:
        return self._approvals.rules

    def gate(self, code: str | None, *, via: str) -> CodeGate:
        return CodeGate(self._stepup, code, via=via, push=self.duo)

    # -- step-up ------------------------------------------------------------------------------------

    async def ask_code(
        self, event: InboundEvent, request: CommandRequest, needs: NeedsCode, gate: CodeGate | None
    ) -> None:
        """The command needs a code: remember it and ask, or say why a code cannot help (not enrolled, locked).
        A Duo user gets a push instead."""
        if self.duo is not None and self.duo.applies_to(request.requester) and (gate is None or not gate.had_code):
            await self._ask_push(event, request, needs)
            return
        if gate is not None and gate.judgement is not None:  # a code came with it and did not count
            why = gate.refusal or gate.judgement.message
            locked = gate.judgement.verdict in (Verdict.LOCKED, Verdict.NOW_LOCKED)
            more = "" if locked else " The command is still waiting: send /otp with the next code."
            await self._replies.say(event, f"Code refused: {why}.{more}", request.incident_id)
            return
        if gate is None or gate.refusal is not None:
            why = gate.refusal if gate is not None and gate.refusal else "2FA is not available on this server"
            await self._replies.say(event, f"Command refused: {needs.reason}. {why}.", request.incident_id)
            return
        pending = self.pending.add(
            user=request.requester,
            role=request.role,
            host=request.host,
            text=request.command,
            agent=needs.agent,
            argv=list(needs.argv),
            platform=event.platform,
            chat_id=event.chat_id,
            incident_id=request.incident_id,
            now=self._clock(),
        )
        minutes = int(self.pending.ttl.total_seconds() // 60)
        text = f"{CODE_PROMPT} (within {minutes} min) to run `{needs.shown}` on {_on(request.host, needs.agent)}."
        row = await self._replies.say(event, text, request.incident_id)
        self.pending.set_prompt(pending, row)

    async def _ask_push(self, event: InboundEvent, request: CommandRequest, needs: NeedsCode) -> None:
        assert self.duo is not None
        try:
            push = await self.duo.reserve(request.requester, command=needs.shown, host=needs.agent)
        except PushAlreadyPending as refused:
            await self._replies.say(event, f"Command refused: {refused}.", request.incident_id)
            return
        await self._replies.say(
            event,
            f"Approve the Duo push on your phone (command `{request.command}` on host {needs.agent}); "
            f"it runs once you approve, within {int(self.duo.config.push_timeout_s)} s.",
            request.incident_id,
        )
        task = asyncio.create_task(self._after_push(event, request, needs, push), name=f"duo-push-{request.requester}")
        self._pushes.add(task)
        task.add_done_callback(self._pushes.discard)

    async def _after_push(
        self, event: InboundEvent, request: CommandRequest, needs: NeedsCode, push: PendingPush
    ) -> None:
        assert self.duo is not None
        try:
            result = await self.duo.push(push, via=f"{event.platform}:{event.user_id}")
            if not result.approved:
                await self._replies.say(event, f"Command refused: {result.message}. Not executed.", request.incident_id)
                return
            if not await self._resolves_to(request, needs):
                await self._replies.say(
                    event,
                    f"Not run: `{request.command}` no longer resolves to what the push was for; send it again.",
                    request.incident_id,
                )
                return
            await self._runner.run(
                event, request.requester, request.role, request.host, request.command, incident_id=request.incident_id
            )
        except Exception:  # a background task: log it, never lose it silently
            log.exception("duo.push_failed", user=request.requester)
            await self._replies.say(event, "Command not executed: the Duo step-up failed; send it again.")

    async def _resolves_to(self, request: CommandRequest, needs: NeedsCode) -> bool:
        agent = resolve(request.host, await host_candidates(self._runner.db, request.host))
        argv = parse(request.command)
        if isinstance(agent, NotRun) or isinstance(argv, NotRun):
            return False
        return agent.name == needs.agent and tuple(argv) == needs.argv

    async def answers_prompt(self, event: InboundEvent) -> bool:
        """True when `event` is a reply to one of our code prompts (then it is a code, never a command).

        Known from the prompt's own outbox row, not only from this process's memory: the reply may reach another
        replica (a webhook behind a load balancer) or this one after a restart, and a prompt about an incident's
        command must not have its code run as a command on that incident's host there."""
        if event.reply_to is None:
            return False
        row = await self._outbox.find_message(event.platform, event.chat_id, event.reply_to)
        return row is not None and (self.pending.is_prompt(row.id) or _is_code_prompt(row.payload))

    async def otp(self, event: InboundEvent, user: str, role: str, code: str) -> None:
        """`/otp CODE` or a reply to the prompt: continue the person's waiting command, or just elevate them."""
        code = code.strip()
        if not code:
            await self._replies.say(event, "Usage: /otp CODE — the 6 digits your authenticator app shows.")
            return
        now = self._clock()
        pending = self.pending.current(user, now=now)
        if pending is None:
            await self._elevate(event, user, code)
            return
        if not await self._still_same(pending):
            self.pending.drop(pending)
            vault = self._runner.db.argv_vault
            shown = vault.shown_line(pending.text) if vault is not None else pending.text  # secrets stay masked
            await self._replies.say(
                event, f"Not run: `{shown}` no longer resolves to what the code was asked for; send it again."
            )
            return
        ask = InboundEvent(
            platform=pending.platform,
            kind=EventKind.MESSAGE,
            chat_id=pending.chat_id,
            user_id=event.user_id,
            text=pending.text,
            sent_at=event.sent_at,
            update_id=event.update_id,
        )
        try:
            await self._runner.run(
                ask, user, role, pending.host, pending.text, incident_id=pending.incident_id, code=code
            )
        finally:
            state = await self._stepup.state(user)
            elevated = state is not None and state.elevated(self._clock())
            locked = state is not None and state.locked_at is not None
            if elevated or locked:
                self.pending.drop(pending)

    async def _elevate(self, event: InboundEvent, user: str, code: str) -> None:
        try:
            judgement = await self._stepup.verify(
                user, code, now=self._clock(), via=f"{event.platform}:{event.user_id}"
            )
        except (NotEnrolled, TwoFactorKeyMissing) as exc:
            await self._replies.say(event, f"Code not checked: {exc}.")
            return
        prefix = "" if judgement.verdict is Verdict.ACCEPTED else "Code refused: "
        await self._replies.say(event, f"{prefix}{judgement.message[:1].upper()}{judgement.message[1:]}.")

    async def _still_same(self, pending: PendingStepUp) -> bool:
        agent = resolve(pending.host, await host_candidates(self._runner.db, pending.host))
        argv = parse(pending.text)
        if isinstance(agent, NotRun) or isinstance(argv, NotRun):
            return False
        return pending.matches(agent.name, argv)

    # -- approval -----------------------------------------------------------------------------------

    async def ask_approval(self, event: InboundEvent, waiting: AwaitingApproval) -> None:
        record, approval = waiting.record, waiting.approval
        expires = f"{approval.expires_at:%H:%M} UTC"
        needed = "a second person" if approval.needed == 1 else f"{approval.needed} other people"
        body = (
            f"Approval needed: {record.requester} asks to run `{approval.command_text}` on "
            f"{_on(record.host, record.agent_name)} "
            f"(command {record.id}). It needs {needed} allowed to run it; the requester cannot approve. "
            f"Press Approve or Deny, or send /approve {record.id} or /deny {record.id}, before {expires}."
        )
        buttons = (
            Button("Approve", approval_button(Vote.APPROVE, record.id, approval.short_digest)),
            Button("Deny", approval_button(Vote.DENY, record.id, approval.short_digest)),
        )
        await self._replies.send(event, Message(body=body, buttons=buttons, command_id=record.id), record.incident_id)

    async def vote_command(self, event: InboundEvent, user: str, verb: str, args: str) -> None:
        """`/approve ID` or `/deny ID`."""
        words = args.split()
        if len(words) != 1 or not words[0].isdigit() or len(words[0]) > 12:
            await self._replies.say(event, f"Usage: /{verb} ID — the command number shown in the approval request.")
            return
        vote = Vote.APPROVE if verb == "approve" else Vote.DENY
        # Typed by number: whoever may not read that command is answered as for one that does not exist.
        await self._replies.say(event, await self._approvals.vote_by_number(int(words[0]), voter=user, vote=vote))

    async def button(self, event: InboundEvent, user: str) -> bool:
        """Handle an Approve/Deny press; False when the button is not one of these."""
        match = _VOTE_BUTTON.match(event.button_data or "")
        if match is None:
            return False
        vote = Vote.APPROVE if match.group(1) == "apv" else Vote.DENY
        text = await self._approvals.vote(int(match.group(2)), voter=user, vote=vote, digest=match.group(3))
        await self._answer(event, text[:190])
        if text.startswith("Not counted"):
            await self._replies.say(event, f"{user}: {text}")
        return True

    async def _answer(self, event: InboundEvent, text: str) -> None:
        await self._replies.answer_button(event, text)

    async def _on_news(self, news: ApprovalNews) -> None:
        approval, record = news.approval, news.record
        if approval.platform is None or approval.chat_id is None:
            return
        await self._replies.post(
            approval.platform,
            approval.chat_id,
            Message(body=news.text, command_id=record.id),
            incident_id=record.incident_id,
        )
        if record.status == CommandStatus.RUNNING:
            await self._runner.show(approval.platform, approval.chat_id, record, reply_to=None)
        log.info("approval.told", command_id=record.id, status=approval.status.value)


def _on(host: str, agent: str) -> str:
    """Where a command runs, as a confirmation shows it: the canonical agent (who the token says it is), and the
    name that was asked for when it differs (docs/threat-model.md T32)."""
    return agent if host.strip().lower() == agent.lower() else f"{host} (agent {agent})"
