"""TOTP step-up rules: which code is accepted, replay, throttling, lockout, the elevation window. Pure.

The TOTP arithmetic itself (which 30 s steps a code belongs to) happens in the store with pyotp; these rules
get the matching steps and the person's state and say what happens (docs/threat-model.md T18, T19):

- a code is accepted for a step within ±1 of now, once: a step at or before the last accepted one is a replay;
- every wrong, replayed or malformed code counts as a failure; after a failure the next attempt must wait
  (1 s, 2 s, 4 s … at most 60 s) and an attempt during that wait is refused unchecked and counts as a failure
  too; after `lockout_after` failures in a row the person is locked until an admin unlocks them; only a
  success resets the count (attempts while locked still count);
- a success elevates the person for `elevation` (default 10 min): commands needing 2FA run without a new code.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

__all__ = ["Judgement", "StepUpRules", "TwoFactorState", "Verdict", "candidate_steps", "judge", "step_of"]

STEP_SECONDS = 30
MAX_THROTTLE = timedelta(seconds=60)


class Verdict(enum.StrEnum):
    ACCEPTED = "accepted"
    WRONG = "wrong"
    REPLAYED = "replayed"
    THROTTLED = "throttled"
    LOCKED = "locked"  # was locked already
    NOW_LOCKED = "now_locked"  # this failure locked the person


@dataclass(frozen=True, slots=True)
class StepUpRules:
    lockout_after: int = 5
    elevation: timedelta = timedelta(minutes=10)
    skew_steps: int = 1


@dataclass(frozen=True, slots=True)
class TwoFactorState:
    last_step: int | None = None
    failures: int = 0
    throttled_until: datetime | None = None
    locked_at: datetime | None = None
    elevated_until: datetime | None = None

    def elevated(self, now: datetime) -> bool:
        """True while a recent code still covers commands that need 2FA (never while locked)."""
        return self.locked_at is None and self.elevated_until is not None and now < self.elevated_until


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    state: TwoFactorState
    message: str  # for the person: what happened and what to do next

    @property
    def accepted(self) -> bool:
        return self.verdict is Verdict.ACCEPTED


def step_of(now: datetime) -> int:
    return int(now.timestamp()) // STEP_SECONDS


def candidate_steps(now: datetime, rules: StepUpRules) -> list[int]:
    """The steps a code may belong to right now (now ± skew)."""
    step = step_of(now)
    return list(range(step - rules.skew_steps, step + rules.skew_steps + 1))


def judge(
    state: TwoFactorState, matched_steps: Iterable[int], *, well_formed: bool, now: datetime, rules: StepUpRules
) -> Judgement:
    """What one submitted code does. `matched_steps`: the candidate steps whose code equals the submitted one."""
    if state.locked_at is not None:
        return Judgement(
            Verdict.LOCKED,
            replace(state, failures=state.failures + 1),
            f"2FA is locked after {rules.lockout_after} wrong codes; no code is accepted until an admin runs "
            "`teleops user 2fa-unlock USER`",
        )
    throttled = state.throttled_until is not None and now < state.throttled_until
    matched = sorted(set(matched_steps)) if well_formed and not throttled else []
    fresh = [s for s in matched if state.last_step is None or s > state.last_step]
    if fresh:
        return Judgement(
            Verdict.ACCEPTED,
            TwoFactorState(
                last_step=max(fresh),
                failures=0,
                throttled_until=None,
                locked_at=None,
                elevated_until=now + rules.elevation,
            ),
            f"code accepted; commands needing 2FA run without a new code for {_minutes(rules.elevation)}",
        )
    failures = state.failures + 1
    if failures >= rules.lockout_after:
        return Judgement(
            Verdict.NOW_LOCKED,
            replace(state, failures=failures, locked_at=now, elevated_until=None, throttled_until=None),
            f"code refused; 2FA is now locked after {failures} failed attempts in a row. Ask an admin to run "
            "`teleops user 2fa-unlock USER`",
        )
    left = rules.lockout_after - failures
    warning = f"{left} more failed attempt{'s' if left != 1 else ''} lock 2FA"
    if throttled:
        assert state.throttled_until is not None
        wait = max(1, int((state.throttled_until - now).total_seconds() + 0.999))
        return Judgement(
            Verdict.THROTTLED,
            replace(state, failures=failures),
            f"too many attempts: wait {wait} s, then send a fresh code; {warning}",
        )
    delay = min(MAX_THROTTLE, timedelta(seconds=2 ** (failures - 1)))
    if not well_formed:
        what = "a code is the 6 digits your authenticator app shows"
    elif matched:
        what = "that code was already used; wait for the next one"
    else:
        what = "wrong code"
    return Judgement(
        Verdict.REPLAYED if matched else Verdict.WRONG,
        replace(state, failures=failures, throttled_until=now + delay),
        f"{what}; {warning}",
    )


def _minutes(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes} min" if minutes else f"{int(delta.total_seconds())} s"
