"""TOTP step-up rules (pure): replay, skew, throttling, lockout, elevation window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from teleops.domain.stepup import StepUpRules, TwoFactorState, Verdict, candidate_steps, judge, step_of

NOW = datetime(2026, 11, 25, 9, 0, 10, tzinfo=UTC)
RULES = StepUpRules()
STEP = step_of(NOW)


def test_a_code_of_the_current_step_is_accepted_and_elevates_for_ten_minutes() -> None:
    result = judge(TwoFactorState(), [STEP], well_formed=True, now=NOW, rules=RULES)
    assert result.verdict is Verdict.ACCEPTED
    assert result.state.last_step == STEP
    assert result.state.elevated(NOW + timedelta(minutes=9, seconds=59))
    assert not result.state.elevated(NOW + timedelta(minutes=10))


def test_candidate_steps_are_one_either_side() -> None:
    assert candidate_steps(NOW, RULES) == [STEP - 1, STEP, STEP + 1]


def test_the_same_step_again_is_a_replay() -> None:
    state = TwoFactorState(last_step=STEP)
    result = judge(state, [STEP], well_formed=True, now=NOW, rules=RULES)
    assert result.verdict is Verdict.REPLAYED
    assert result.state.failures == 1
    assert not result.state.elevated(NOW)


def test_an_earlier_step_after_a_later_one_is_a_replay() -> None:
    state = TwoFactorState(last_step=STEP)
    assert judge(state, [STEP - 1], well_formed=True, now=NOW, rules=RULES).verdict is Verdict.REPLAYED


def test_failures_throttle_then_lock_and_only_success_resets() -> None:
    state, now = TwoFactorState(), NOW
    verdicts = []
    for _ in range(5):
        result = judge(state, [], well_formed=True, now=now, rules=RULES)
        verdicts.append(result.verdict)
        state = result.state
        now += timedelta(seconds=61)  # past any throttle
    assert verdicts == [Verdict.WRONG] * 4 + [Verdict.NOW_LOCKED]
    locked = judge(state, [step_of(now)], well_formed=True, now=now, rules=RULES)
    assert locked.verdict is Verdict.LOCKED  # even the right code
    assert "2fa-unlock" in locked.message
    assert locked.state.failures == 6


def test_an_attempt_inside_the_throttle_is_refused_unchecked_and_counts() -> None:
    first = judge(TwoFactorState(), [], well_formed=True, now=NOW, rules=RULES)
    fast = judge(first.state, [STEP], well_formed=True, now=NOW + timedelta(milliseconds=500), rules=RULES)
    assert fast.verdict is Verdict.THROTTLED
    assert fast.state.failures == 2
    assert "wait 1 s" in fast.message


def test_success_resets_the_failure_count() -> None:
    state = TwoFactorState(failures=3)
    result = judge(state, [STEP], well_formed=True, now=NOW, rules=RULES)
    assert result.state.failures == 0


def test_a_malformed_code_is_a_failure_even_if_it_would_match() -> None:
    result = judge(TwoFactorState(), [STEP], well_formed=False, now=NOW, rules=RULES)
    assert result.verdict is Verdict.WRONG
    assert "6 digits" in result.message
