"""docs/threat-model.md T18 (TOTP replay) and T19 (brute force) against the real store: every outcome is audited and the
only state change of a refused code is the failure count (and the lock)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection

from teleops.domain.stepup import StepUpRules, Verdict
from teleops.store.audit import iter_events
from teleops.store.audit_checkpoints import CheckpointLog
from teleops.store.audit_verify import verify_audit
from teleops.store.database import Database
from teleops.store.twofactor import NotEnrolled, TwoFactorStore

NOW = datetime(2026, 11, 25, 9, 0, 5, tzinfo=UTC)


@pytest.fixture
async def store(db_url: str, tmp_path: Path) -> AsyncIterator[TwoFactorStore]:
    db = Database(db_url)
    await db.migrate()
    yield TwoFactorStore(db, tmp_path / "data", StepUpRules(lockout_after=5))
    await db.close()


async def enrolled(store: TwoFactorStore, user: str = "alice") -> pyotp.TOTP:
    uri = await store.enroll(user, now=NOW, by="admin")
    assert uri.startswith("otpauth://totp/TeleOps:alice?")
    return pyotp.TOTP(parse_qs(urlparse(uri).query)["secret"][0])


async def actions(store: TwoFactorStore) -> list[str]:
    def read(conn: Connection) -> list[str]:
        return [e.action for e in iter_events(conn)]

    return await store._db.run_in_transaction(read)


async def test_the_secret_is_not_stored_in_the_clear(store: TwoFactorStore, tmp_path: Path) -> None:
    totp = await enrolled(store)

    def raw(conn: Connection) -> str:
        return str(conn.execute(text("SELECT secret FROM two_factor")).scalar_one())

    assert totp.secret not in await store._db.run_in_transaction(raw)
    assert (tmp_path / "data" / "twofactor.key").stat().st_mode & 0o777 == 0o600


async def test_same_code_twice_second_rejected(store: TwoFactorStore) -> None:
    totp = await enrolled(store)
    code = totp.at(NOW)
    assert (await store.verify("alice", code, now=NOW)).verdict is Verdict.ACCEPTED
    second = await store.verify("alice", code, now=NOW + timedelta(seconds=2))
    assert second.verdict is Verdict.REPLAYED
    assert await actions(store) == ["2fa.enrolled", "2fa.accepted", "2fa.rejected"]


async def test_code_from_the_previous_step_after_the_current_one_is_rejected(store: TwoFactorStore) -> None:
    totp = await enrolled(store)
    assert (await store.verify("alice", totp.at(NOW), now=NOW)).accepted
    earlier = totp.at(NOW - timedelta(seconds=30))
    assert (await store.verify("alice", earlier, now=NOW + timedelta(seconds=3))).verdict is Verdict.REPLAYED


async def test_one_step_of_clock_skew_is_accepted_two_are_not(store: TwoFactorStore) -> None:
    totp = await enrolled(store)
    assert not (await store.verify("alice", totp.at(NOW - timedelta(seconds=60)), now=NOW)).accepted
    later = NOW + timedelta(seconds=70)
    assert (await store.verify("alice", totp.at(later - timedelta(seconds=30)), now=later)).accepted


async def test_twenty_wrong_codes_lock_with_a_clear_message_and_audit(store: TwoFactorStore, tmp_path: Path) -> None:
    totp = await enrolled(store)
    now = NOW
    verdicts = []
    for attempt in range(20):
        wrong = f"{(int(totp.at(now)) + 1 + attempt) % 1_000_000:06d}"
        verdicts.append((await store.verify("alice", wrong, now=now)).verdict)
        now += timedelta(seconds=1)
    assert Verdict.NOW_LOCKED in verdicts
    assert verdicts[-1] is Verdict.LOCKED
    right = await store.verify("alice", totp.at(now), now=now)
    assert right.verdict is Verdict.LOCKED
    assert "teleops user 2fa-unlock" in right.message
    state = await store.state("alice")
    assert state is not None
    assert state.failures == 21  # counted on, never reset by anything but a success
    assert not await store.elevated("alice", now=now)
    logged = await actions(store)
    assert logged.count("2fa.locked") == 1
    assert logged.count("2fa.rejected") == 20
    anchor = CheckpointLog(tmp_path / "data")
    await anchor.checkpoint(store._db)  # as the controller does every few seconds
    assert (await verify_audit(store._db, anchor)).ok


async def test_an_admin_unlock_lets_the_right_code_in_again(store: TwoFactorStore) -> None:
    totp = await enrolled(store)
    now = NOW
    for _ in range(5):
        await store.verify("alice", "000000" if totp.at(now) != "000000" else "111111", now=now)
        now += timedelta(seconds=61)
    assert await store.unlock("alice", now=now, by="admin")
    assert (await store.verify("alice", totp.at(now), now=now)).accepted
    assert await store.elevated("alice", now=now + timedelta(minutes=9))
    assert (await actions(store))[-2:] == ["2fa.unlocked", "2fa.accepted"]


async def test_no_enrolment_means_no_code_is_accepted(store: TwoFactorStore) -> None:
    await enrolled(store, "alice")
    with pytest.raises(NotEnrolled):
        await store.verify("bob", "123456", now=NOW)
    assert not await store.elevated("bob", now=NOW)
