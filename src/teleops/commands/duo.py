"""Duo push step-up through Duo's Auth API (docs/threat-model.md T20, T21, F15). The only module that imports
duo_client.

For a person whose step-up method is Duo, a command whose rule needs 2FA sends one push to their phone:

1. `preauth`: the person must be known to Duo and allowed to authenticate (`auth`, or `allow` when a Duo
   policy bypasses them); `enroll` / `deny` are refused with what to do next.
2. `auth` with `factor=push`, `device=auto`, `async=1` and `pushinfo` = the command, the host it runs on and
   who asked (form-urlencoded, as Duo shows key/value pairs on the phone), then `auth_status` polling until
   the person answers or `push_timeout` passes.

Blocking duo_client calls run in worker threads; the event loop never waits on Duo. At most one push per
person is waiting at a time (T20: a second request is refused, so nobody can be pushed into tapping
"approve"). **Fail closed** (T21, F15): Duo unreachable, slow, a 5xx, a refused signature, or any answer we
do not understand refuses the command with "MFA provider unreachable — not executed" and audits
`mfa_unavailable`. An approved push elevates the person like an accepted TOTP code (`elevation`). The waiting
push and the elevation are rows every replica shares (store/duo_pushes.py): a second command through another
replica while a push waits is refused like one through this replica, and an approval on one replica elevates the
person on all of them.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import structlog

from teleops.store.audit import AuditUnavailable, record
from teleops.store.database import Database, StorageUnavailable
from teleops.store.duo_pushes import DuoPushStore, WaitingPush

__all__ = [
    "UNREACHABLE",
    "DuoClientMissing",
    "DuoConfig",
    "DuoPushes",
    "PendingPush",
    "PushAlreadyPending",
    "PushOutcome",
    "PushResult",
    "pushinfo",
]

log = structlog.get_logger(__name__)

UNREACHABLE = "MFA provider unreachable — not executed"
_PUSHINFO_COMMAND_MAX = 1000


class DuoClientMissing(RuntimeError):
    """Duo is configured but the duo_client package is not installed."""


class PushAlreadyPending(Exception):
    """A push for this person is still waiting on their phone; no second one is sent (T20)."""


class _Unreachable(Exception):
    """Duo did not give a usable answer (network, timeout, 5xx, signature refused, malformed reply)."""


class PushOutcome(enum.StrEnum):
    APPROVED = "approved"
    DENIED = "denied"
    TIMED_OUT = "timed_out"
    NOT_ENROLLED = "not_enrolled"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class PushResult:
    outcome: PushOutcome
    message: str  # for the person: what happened and what to do next

    @property
    def approved(self) -> bool:
        return self.outcome is PushOutcome.APPROVED


@dataclass(frozen=True, slots=True)
class DuoConfig:
    ikey: str
    skey: str
    api_host: str  # HOST or HOST:PORT
    timeout_s: float = 10.0
    push_timeout_s: float = 60.0
    ca_certs: Path | None = None
    elevation: timedelta = timedelta(minutes=10)
    poll_interval_s: float = 1.0

    @property
    def host(self) -> str:
        return self.api_host.rpartition(":")[0] if ":" in self.api_host else self.api_host

    @property
    def port(self) -> int | None:
        return int(self.api_host.rpartition(":")[2]) if ":" in self.api_host else None


@dataclass(frozen=True, slots=True)
class PendingPush:
    user: str
    command: str
    host: str
    started_at: datetime


def _waiting(pending: PendingPush) -> WaitingPush:
    return WaitingPush(pending.user, pending.command, pending.host, pending.started_at)


def pushinfo(*, command: str, host: str, requester: str) -> str:
    """What the phone shows with the push: form-urlencoded key/value pairs (Duo's `pushinfo` format)."""
    if len(command) > _PUSHINFO_COMMAND_MAX:
        command = command[: _PUSHINFO_COMMAND_MAX - 1] + "…"
    return urlencode([("command", command), ("host", host), ("requester", requester)])


class DuoPushes:
    """Sends pushes, keeps at most one waiting per person, and remembers who is elevated by an approved push."""

    def __init__(
        self,
        config: DuoConfig,
        *,
        db: Database,
        clock: Callable[[], datetime],
        uses_duo: Callable[[str], bool],
    ) -> None:
        """Raises DuoClientMissing when duo_client is not installed (`pip install 'teleops[duo]'`)."""
        try:
            from duo_client.auth import Auth  # the optional `duo` extra
        except ImportError as exc:
            raise DuoClientMissing(
                "twofactor.duo is configured but the duo_client package is missing; install it with "
                "`pip install 'teleops[duo]'` or remove twofactor.duo"
            ) from exc
        self._auth_class: Any = Auth
        self.config = config
        self._db = db
        self._clock = clock
        self._uses_duo = uses_duo
        self._state = DuoPushStore(db)

    def applies_to(self, user: str) -> bool:
        """True when `user` steps up with Duo push (their `users[].twofactor`, else `twofactor.method`)."""
        return self._uses_duo(user)

    @property
    def slot_hold(self) -> timedelta:
        """How long a push slot stays taken at most: longer than a push can take (preauth, auth, then polling up
        to `push_timeout` with a long-poll of its own), so only a replica that died mid-push leaves it that long."""
        config = self.config
        return timedelta(seconds=2 * config.push_timeout_s + 3 * (config.timeout_s + 5) + 15)

    async def elevated(self, user: str, *, now: datetime) -> bool:
        """True while an approved push covers commands needing 2FA (the elevation window, or once right after).
        Raises StorageUnavailable (no elevation without the database)."""
        return await self._state.elevated(user, now=now)

    async def waiting(self, user: str) -> PendingPush | None:
        """The push waiting on `user`'s phone, through whichever replica. Raises StorageUnavailable."""
        found = await self._state.waiting(user, now=self._clock())
        return None if found is None else PendingPush(found.user, found.command, found.host, found.started_at)

    async def reserve(self, user: str, *, command: str, host: str) -> PendingPush:
        """Claim the person's one push slot, shared by every replica. Raises PushAlreadyPending (with the message
        for them) when taken, StorageUnavailable when the database does not answer (then nothing is pushed)."""
        now = self._clock()
        holder, won = await self._state.take_slot(user, command=command, host=host, now=now, until=now + self.slot_hold)
        if not won:
            raise PushAlreadyPending(
                f"a Duo push is already waiting on your phone for `{holder.command}` on {holder.host}; approve or "
                "deny it first, then send this command again"
            )
        return PendingPush(user=user, command=command, host=host, started_at=holder.started_at)

    async def push(self, pending: PendingPush, *, via: str) -> PushResult:
        """Ask `pending.user` on their phone; frees their push slot when done. Never raises for Duo trouble: an
        unreachable or misbehaving Duo is a refusal (fail closed), audited `mfa_unavailable`."""
        try:
            result = await self._ask(pending)
        finally:
            try:
                await self._state.release(_waiting(pending))
            except StorageUnavailable as exc:  # the slot frees itself at its hold time
                log.warning("duo.slot_not_released", user=pending.user, error=str(exc))
        return await self._settle(pending, result, via=via)

    async def _ask(self, pending: PendingPush) -> PushResult | _Unreachable:
        user = pending.user
        try:
            pre = await self._call(lambda auth: auth.preauth(username=user))
            verdict = str(pre.get("result", ""))
            status_msg = str(pre.get("status_msg", ""))
            if verdict == "enroll":
                return PushResult(
                    PushOutcome.NOT_ENROLLED,
                    f"{user} is not enrolled in Duo ({status_msg}); ask your Duo administrator to enroll your phone",
                )
            if verdict == "deny":
                return PushResult(PushOutcome.DENIED, f"Duo refuses {user} ({status_msg}); ask your Duo administrator")
            if verdict not in ("auth", "allow"):
                raise _Unreachable(f"unexpected preauth result {verdict!r}")
            info = pushinfo(command=pending.command, host=pending.host, requester=user)
            started = await self._call(
                lambda auth: auth.auth(
                    "push",
                    username=user,
                    device="auto",
                    async_txn=True,
                    pushinfo=info,
                    type="TeleOps command",
                    display_username=user,
                )
            )
            txid = str(started.get("txid", ""))
            if not txid:
                raise _Unreachable("auth answered without a transaction id")
            return await self._await_answer(txid)
        except _Unreachable as exc:
            return exc

    async def _await_answer(self, txid: str) -> PushResult:
        deadline = time.monotonic() + self.config.push_timeout_s
        wait = self.config.push_timeout_s + self.config.timeout_s  # auth_status long-polls
        while True:
            status = await self._call(lambda auth: auth.auth_status(txid), timeout_s=wait)
            if status.get("success"):
                return PushResult(PushOutcome.APPROVED, "Duo push approved")
            state, text = str(status.get("status", "")), str(status.get("status_msg", ""))
            if not status.get("waiting"):
                if state == "timeout":
                    return PushResult(PushOutcome.TIMED_OUT, f"the Duo push was not answered in time ({text})")
                return PushResult(PushOutcome.DENIED, f"the Duo push was denied ({text or state})")
            if time.monotonic() >= deadline:
                seconds = int(self.config.push_timeout_s)
                return PushResult(PushOutcome.TIMED_OUT, f"the Duo push was not answered within {seconds} s")
            await asyncio.sleep(self.config.poll_interval_s)  # between polls, so a fast "waiting" is not a busy loop

    async def _call(self, request: Callable[[Any], Any], *, timeout_s: float | None = None) -> Mapping[str, Any]:
        """One duo_client call in a worker thread; any failure is _Unreachable (fail closed)."""
        config = self.config
        seconds = timeout_s or config.timeout_s
        extra: dict[str, Any] = {"ca_certs": str(config.ca_certs)} if config.ca_certs is not None else {}

        def call() -> Any:
            auth = self._auth_class(config.ikey, config.skey, config.host, timeout=seconds, port=config.port, **extra)
            return request(auth)

        try:
            # The thread's socket timeout bounds each call; wait_for is the backstop for a stuck TLS handshake.
            answer = await asyncio.wait_for(asyncio.to_thread(call), timeout=seconds + 5)
        except Exception as exc:  # network, TLS, timeout, HTTP 4xx/5xx, bad signature, bad JSON: all fail closed
            status = getattr(exc, "status", None)
            what = f"HTTP {status}: {exc}" if status is not None else f"{type(exc).__name__}: {exc}"
            raise _Unreachable(what) from exc
        if not isinstance(answer, Mapping):
            raise _Unreachable(f"unexpected answer {type(answer).__name__}")
        return answer

    async def _settle(self, pending: PendingPush, result: PushResult | _Unreachable, *, via: str) -> PushResult:
        now = self._clock()
        user = pending.user
        facts: dict[str, Any] = {"method": "duo", "via": via, "host": pending.host, "command": pending.command}
        if isinstance(result, _Unreachable):
            log.error("duo.unreachable", user=user, error=str(result))
            await self._audit(now, user, "mfa_unavailable", {**facts, "provider": "duo", "error": str(result)[:500]})
            return PushResult(
                PushOutcome.UNAVAILABLE,
                f"{UNREACHABLE} (Duo: {str(result)[:200]}). Try again in a few minutes; if Duo stays unreachable, "
                "tell an admin",
            )
        if not result.approved:
            await self._audit(now, user, "2fa.rejected", {**facts, "verdict": result.outcome.value})
            return result
        try:
            await record(self._db, at=now, actor=user, action="2fa.accepted", subject=f"user:{user}", data=facts)
        except (AuditUnavailable, StorageUnavailable) as exc:
            # No audit, no elevation: the approval cannot be recorded, so it does not count.
            log.error("duo.audit_failed", user=user, error=str(exc))
            return PushResult(PushOutcome.UNAVAILABLE, "not executed: audit unavailable; try again later")
        try:
            await self._state.elevate(user, until=now + self.config.elevation)
        except StorageUnavailable as exc:
            log.error("duo.elevation_not_stored", user=user, error=str(exc))
            return PushResult(PushOutcome.UNAVAILABLE, "not executed: the database is unavailable; try again later")
        return result

    async def _audit(self, now: datetime, user: str, action: str, data: Mapping[str, Any]) -> None:
        try:
            await record(self._db, at=now, actor=user, action=action, subject=f"user:{user}", data=data)
        except (AuditUnavailable, StorageUnavailable) as exc:  # the refusal stands without its record
            log.error("duo.audit_failed", user=user, action=action, error=str(exc))
