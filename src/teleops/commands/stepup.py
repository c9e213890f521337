"""The step-up step: a command whose rule needs 2FA runs only for a person elevated by a fresh TOTP code.

Two pieces the live callers share:

- `CodeGate` answers the dispatch step's "is this person elevated?" and, when the request carried a code
  (REST header `X-TeleOps-OTP`, chat `/otp CODE`), spends that code only if it is needed. A code is verified
  by the TwoFactorStore (once per step, throttled, locked after repeated failures, all audited).
- `PendingStepUps` remembers, per person, the command that is waiting for a code in chat: its id, the
  SHA-256 of (agent, argv, requester, id) and when it stops waiting (default 5 min). `/otp CODE` or a reply
  to the prompt continues exactly that command; a changed or expired one is not run.

Pending step-ups are held in this process's memory: after a restart (or on another replica) the person sends
the command again, which asks for a code again. Nothing runs by mistake; at worst they are asked twice. With
several replicas one replica reads each chat (Telegram polling and Slack Socket Mode are singletons), so a code
normally reaches the replica that asked (docs/replicas.md). The code's verdict and the elevation it gives are in
the database (store/twofactor.py), shared by every replica.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from teleops.domain.stepup import Judgement, TwoFactorState
from teleops.store.approvals import approval_digest
from teleops.store.twofactor import NotEnrolled, TwoFactorKeyMissing

__all__ = [
    "OTP_HEADER",
    "CodeGate",
    "PendingStepUp",
    "PendingStepUps",
    "PushElevation",
    "StepUpStore",
    "request_digest",
]

OTP_HEADER = "X-TeleOps-OTP"
PENDING_TTL = timedelta(minutes=5)


class StepUpStore(Protocol):
    """What CodeGate needs from the TwoFactorStore."""

    async def elevated(self, user: str, *, now: datetime) -> bool: ...

    async def verify(self, user: str, code: str, *, now: datetime, via: str = "") -> Judgement: ...

    async def state(self, user: str) -> TwoFactorState | None: ...


class PushElevation(Protocol):
    """Elevation by an approved Duo push (commands/duo.py's DuoPushes implements it, in the database)."""

    async def elevated(self, user: str, *, now: datetime) -> bool: ...


class CodeGate:
    """A StepUpCheck for one request. Elevated already → yes, no code spent. Else the request's code (if any)
    is verified; `refusal` then says, for the person, why no code counted (wrong, replayed, throttled, locked,
    not enrolled). An approved Duo push (`push`) elevates like a code. Never raises for a bad code;
    StorageUnavailable propagates."""

    def __init__(self, store: StepUpStore, code: str | None, *, via: str, push: PushElevation | None = None) -> None:
        self._store = store
        self._push = push
        self._code = code.strip() if code else None
        self._via = via
        self.judgement: Judgement | None = None
        self.refusal: str | None = None

    @property
    def had_code(self) -> bool:
        return self._code is not None

    async def elevated(self, user: str, *, now: datetime) -> bool:
        if self._push is not None and await self._push.elevated(user, now=now):
            return True
        if await self._store.elevated(user, now=now):
            return True
        if self._code is None:
            state = await self._store.state(user)
            if state is None:
                self.refusal = (
                    f"{user} has no authenticator enrolled, so commands needing a one-time code cannot run; "
                    f"an admin runs `teleops user 2fa-enroll {user}`"
                )
            elif state.locked_at is not None:
                self.refusal = "2FA is locked after repeated wrong codes; ask an admin to run `teleops user 2fa-unlock`"
            return False
        try:
            self.judgement = await self._store.verify(user, self._code, now=now, via=self._via)
        except NotEnrolled as exc:
            self.refusal = str(exc)
            return False
        except TwoFactorKeyMissing as exc:  # fail closed: without the key no code can be checked
            self.refusal = str(exc)
            return False
        self._code = None  # one code, one attempt, even if the pipeline asks twice
        if not self.judgement.accepted:
            self.refusal = self.judgement.message
        return self.judgement.accepted


def request_digest(*, agent: str, argv: Sequence[str], requester: str, request_id: int) -> str:
    """SHA-256 (hex) of the canonical (agent, argv, requester, request id): what a code continues (the same
    canonical form an approval is bound to)."""
    return approval_digest(agent=agent, argv=argv, requester=requester, command_id=request_id)


@dataclass(frozen=True, slots=True)
class PendingStepUp:
    id: int
    user: str
    role: str
    host: str
    text: str
    agent: str
    argv: tuple[str, ...]
    digest: str
    platform: str
    chat_id: str
    incident_id: int | None
    expires_at: datetime
    prompt_row: int | None = None  # the outbox row of the prompt, so a reply to it finds this request

    def matches(self, agent: str, argv: Sequence[str]) -> bool:
        """True when (agent, argv) is still exactly what the code was asked for."""
        digest = request_digest(agent=agent, argv=argv, requester=self.user, request_id=self.id)
        return digest == self.digest


class PendingStepUps:
    """At most one command waiting for a code per person (a newer request replaces the older one)."""

    def __init__(self, ttl: timedelta = PENDING_TTL) -> None:
        self.ttl = ttl
        self._by_user: dict[str, PendingStepUp] = {}
        self._ids = itertools.count(1)
        self._prompts: set[int] = set()  # outbox rows of every prompt sent, so replies to them are never commands

    def add(
        self,
        *,
        user: str,
        role: str,
        host: str,
        text: str,
        agent: str,
        argv: Sequence[str],
        platform: str,
        chat_id: str,
        incident_id: int | None,
        now: datetime,
    ) -> PendingStepUp:
        request_id = next(self._ids)
        pending = PendingStepUp(
            id=request_id,
            user=user,
            role=role,
            host=host,
            text=text,
            agent=agent,
            argv=tuple(argv),
            digest=request_digest(agent=agent, argv=argv, requester=user, request_id=request_id),
            platform=platform,
            chat_id=chat_id,
            incident_id=incident_id,
            expires_at=now + self.ttl,
        )
        self._by_user[user] = pending
        return pending

    def set_prompt(self, pending: PendingStepUp, row: int) -> None:
        self._prompts.add(row)
        current = self._by_user.get(pending.user)
        if current is not None and current.id == pending.id:
            self._by_user[pending.user] = replace(current, prompt_row=row)

    def current(self, user: str, *, now: datetime) -> PendingStepUp | None:
        """The person's waiting command, or None (an expired one is dropped)."""
        pending = self._by_user.get(user)
        if pending is not None and now >= pending.expires_at:
            del self._by_user[user]
            return None
        return pending

    def for_prompt(self, row: int) -> PendingStepUp | None:
        """The waiting command whose prompt is outbox row `row` (expired or not), or None."""
        return next((p for p in self._by_user.values() if p.prompt_row == row), None)

    def is_prompt(self, row: int) -> bool:
        return row in self._prompts

    def drop(self, pending: PendingStepUp) -> None:
        current = self._by_user.get(pending.user)
        if current is not None and current.id == pending.id:
            del self._by_user[pending.user]
