"""TOTP step-up state per person: the secret (encrypted), last accepted step, failures, lock, elevation.

Secrets are encrypted with Fernet under `<data_dir>/twofactor.key` (created 0600 on first enrolment), so a
database dump alone does not give the codes away. Several replicas must share that key file: on PostgreSQL
`teleops serve` creates it at start and checks it against the other replicas' (store/server_keys.py).
Every verification, enrolment and unlock appends to the audit log in the same transaction as the state change.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import BigInteger, Column, Integer, String, Table, Text, delete, insert, select, update
from sqlalchemy.engine import Connection

from teleops.domain.stepup import (
    STEP_SECONDS,
    Judgement,
    StepUpRules,
    TwoFactorState,
    Verdict,
    candidate_steps,
    judge,
)
from teleops.store.audit import append
from teleops.store.database import Database
from teleops.store.schema import UTCDateTime, metadata

__all__ = ["NotEnrolled", "PendingEnrolment", "TwoFactorKeyMissing", "TwoFactorStore", "two_factor"]

KEY_FILE = "twofactor.key"
ISSUER = "TeleOps"

two_factor = Table(
    "two_factor",
    metadata,
    Column("user_name", String(64), primary_key=True),
    Column("secret", Text, nullable=False),  # Fernet token of the base32 secret
    Column("enrolled_at", UTCDateTime, nullable=False),
    Column("last_step", BigInteger),
    Column("failures", Integer, nullable=False, default=0),
    Column("throttled_until", UTCDateTime),
    Column("locked_at", UTCDateTime),
    Column("elevated_until", UTCDateTime),
)


class TwoFactorKeyMissing(Exception):
    """The key that decrypts TOTP secrets is gone; codes cannot be checked (fail closed)."""


@dataclass(frozen=True, slots=True)
class PendingEnrolment:
    """A secret offered for enrolment in the web UI and not confirmed yet: it is not stored anywhere but in
    `sealed` (encrypted under the 2FA key, bound to the person, expiring), so nothing changes until a code from
    it is confirmed (`TwoFactorStore.confirm_enrolment`)."""

    secret: str
    sealed: str
    uri: str


class NotEnrolled(LookupError):
    def __init__(self, user: str) -> None:
        super().__init__(f"{user} has no authenticator enrolled; an admin runs `teleops user 2fa-enroll {user}`")
        self.user = user


def _state(row: Any) -> TwoFactorState:
    return TwoFactorState(
        last_step=None if row.last_step is None else int(row.last_step),
        failures=int(row.failures),
        throttled_until=row.throttled_until,
        locked_at=row.locked_at,
        elevated_until=row.elevated_until,
    )


class TwoFactorStore:
    """Enrol, verify, unlock, and ask whether someone is elevated."""

    def __init__(self, db: Database, data_dir: Path, rules: StepUpRules | None = None) -> None:
        self._db = db
        self._key_path = data_dir / KEY_FILE
        self.rules = rules or StepUpRules()

    @property
    def key_path(self) -> Path:
        return self._key_path

    def ensure_key(self) -> None:
        """Create the key file now if it is missing (0600), as the first enrolment would: with several replicas
        each is started with the key it must share (docs/replicas.md, "Key files")."""
        self._fernet(create=True)

    def _fernet(self, *, create: bool) -> Fernet:
        try:
            return Fernet(self._key_path.read_bytes().strip())
        except FileNotFoundError:
            if not create:
                raise TwoFactorKeyMissing(
                    f"no 2FA key at {self._key_path}: codes cannot be checked. Restore the file from a backup (or "
                    "copy it from another replica), or enrol people again"
                ) from None
        self._key_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self._key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return self._fernet(create=False)
        key = Fernet.generate_key()
        with os.fdopen(fd, "wb") as handle:
            handle.write(key + b"\n")
        return Fernet(key)

    async def enroll(self, user: str, *, now: datetime, by: str) -> str:
        """A new secret for `user` (replacing any old one, clearing lock and failures); returns the otpauth URI.

        Audited as `2fa.enrolled`. Raises StorageUnavailable.
        """
        secret = pyotp.random_base32()
        sealed = self._fernet(create=True).encrypt(secret.encode("ascii")).decode("ascii")

        def apply(conn: Connection) -> None:
            conn.execute(delete(two_factor).where(two_factor.c.user_name == user))
            conn.execute(insert(two_factor).values(user_name=user, secret=sealed, enrolled_at=now, failures=0))
            append(conn, at=now, actor=by, action="2fa.enrolled", subject=f"user:{user}")

        await self._db.run_in_transaction(apply)
        return pyotp.TOTP(secret).provisioning_uri(name=user, issuer_name=ISSUER)

    def offer_enrolment(self, user: str, *, now: datetime) -> PendingEnrolment:
        """A fresh secret for `user` to scan, sealed for the confirm form; stores nothing (creates the key file
        on first use). Raises TwoFactorKeyMissing only if the key file cannot be created."""
        secret = pyotp.random_base32()
        payload = json.dumps({"u": user, "s": secret}).encode()
        sealed = self._fernet(create=True).encrypt_at_time(payload, int(now.timestamp())).decode("ascii")
        return PendingEnrolment(secret, sealed, pyotp.TOTP(secret).provisioning_uri(name=user, issuer_name=ISSUER))

    async def confirm_enrolment(
        self, user: str, sealed: str, code: str, *, now: datetime, by: str, via: str, ttl: timedelta
    ) -> bool:
        """Make the offered secret `user`'s (replacing any old one) when `code` is its current code; False when
        the offer is not this person's, older than `ttl`, or the code does not match (nothing changes then).

        The code's step counts as used, so it cannot sign in again. Audited as `2fa.enrolled` (with `via`) in
        the same transaction. Raises TwoFactorKeyMissing, StorageUnavailable.
        """
        fernet = self._fernet(create=False)
        try:
            payload = json.loads(
                fernet.decrypt_at_time(sealed.encode("ascii"), int(ttl.total_seconds()), int(now.timestamp()))
            )
            owner, secret = str(payload["u"]), str(payload["s"])
        except (InvalidToken, ValueError, KeyError, TypeError, UnicodeEncodeError):
            return False
        code = code.strip().replace(" ", "")
        if owner != user or len(code) != 6 or not code.isdigit():
            return False
        totp = pyotp.TOTP(secret)
        steps = [s for s in candidate_steps(now, self.rules) if hmac.compare_digest(totp.at(s * STEP_SECONDS), code)]
        if not steps:
            return False
        resealed = fernet.encrypt(secret.encode("ascii")).decode("ascii")

        def apply(conn: Connection) -> None:
            conn.execute(delete(two_factor).where(two_factor.c.user_name == user))
            conn.execute(
                insert(two_factor).values(
                    user_name=user, secret=resealed, enrolled_at=now, failures=0, last_step=max(steps)
                )
            )
            append(conn, at=now, actor=by, action="2fa.enrolled", subject=f"user:{user}", data={"via": via})

        await self._db.run_in_transaction(apply)
        return True

    async def verify(self, user: str, code: str, *, now: datetime, via: str = "") -> Judgement:
        """Judge one submitted code and store the outcome with its audit event, atomically.

        Concurrent submissions for one person are serialised (the row is locked first), so the same code can
        never be accepted twice. Raises NotEnrolled, TwoFactorKeyMissing, StorageUnavailable.
        """
        fernet = self._fernet(create=False)
        code = code.strip().replace(" ", "")
        well_formed = len(code) == 6 and code.isdigit()

        def apply(conn: Connection) -> Judgement:
            # A no-op UPDATE first: PostgreSQL row lock / SQLite write lock before we read the state.
            locked = conn.execute(
                update(two_factor)
                .where(two_factor.c.user_name == user)
                .values(failures=two_factor.c.failures)
                .returning(*two_factor.c)
            ).first()
            if locked is None:
                raise NotEnrolled(user)
            try:
                secret = fernet.decrypt(locked.secret.encode("ascii")).decode("ascii")
            except InvalidToken as exc:
                raise NotEnrolled(user) from exc
            totp = pyotp.TOTP(secret)
            matched = [
                step
                for step in candidate_steps(now, self.rules)
                if well_formed and hmac.compare_digest(totp.at(step * STEP_SECONDS), code)
            ]
            judgement = judge(_state(locked), matched, well_formed=well_formed, now=now, rules=self.rules)
            new = judgement.state
            conn.execute(
                update(two_factor)
                .where(two_factor.c.user_name == user)
                .values(
                    last_step=new.last_step,
                    failures=new.failures,
                    throttled_until=new.throttled_until,
                    locked_at=new.locked_at,
                    elevated_until=new.elevated_until,
                )
            )
            action = {
                Verdict.ACCEPTED: "2fa.accepted",
                Verdict.NOW_LOCKED: "2fa.locked",
            }.get(judgement.verdict, "2fa.rejected")
            # Never the code itself: a rejected code may be one digit off the real one.
            data = {"verdict": judgement.verdict.value, "failures": new.failures, "via": via}
            append(conn, at=now, actor=user, action=action, subject=f"user:{user}", data=data)
            return judgement

        return await self._db.run_in_transaction(apply)

    async def unlock(self, user: str, *, now: datetime, by: str) -> bool:
        """Clear the lock and the failure count. False when `user` has no enrolment. Audited as `2fa.unlocked`."""

        def apply(conn: Connection) -> bool:
            result = conn.execute(
                update(two_factor)
                .where(two_factor.c.user_name == user)
                .values(failures=0, locked_at=None, throttled_until=None)
            )
            if not result.rowcount:
                return False
            append(conn, at=now, actor=by, action="2fa.unlocked", subject=f"user:{user}")
            return True

        return await self._db.run_in_transaction(apply)

    async def reset(
        self, user: str, *, now: datetime, by: str, via: str, also: Callable[[Connection], object] = bool
    ) -> bool:
        """Forget `user`'s authenticator (secret, failures, lock), so they enrol a new one at their next web sign-in
        (/ui/account/2fa) or an admin runs `teleops user 2fa-enroll`. False when nothing was enrolled.

        Audited as `2fa.reset` (actor `by`, channel `via`) with `also(conn)` in the same transaction.
        Raises StorageUnavailable.
        """

        def apply(conn: Connection) -> bool:
            if not conn.execute(delete(two_factor).where(two_factor.c.user_name == user)).rowcount:
                return False
            append(conn, at=now, actor=by, action="2fa.reset", subject=f"user:{user}", data={"via": via})
            also(conn)
            return True

        return await self._db.run_in_transaction(apply)

    async def state(self, user: str) -> TwoFactorState | None:
        """The person's state, or None when not enrolled."""

        def apply(conn: Connection) -> TwoFactorState | None:
            row = conn.execute(select(two_factor).where(two_factor.c.user_name == user)).first()
            return None if row is None else _state(row)

        return await self._db.run_in_transaction(apply)

    async def elevated(self, user: str, *, now: datetime) -> bool:
        """True while a code accepted within the elevation window covers 2FA commands (False if not enrolled)."""
        current = await self.state(user)
        return current is not None and current.elevated(now)
