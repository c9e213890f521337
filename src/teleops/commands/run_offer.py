"""Whether to offer someone a "run a command on this host" form at all (the web UI's incident page).

Only an offer: whatever they type still goes through the whole pipeline (policy, step-up, approval), which may
refuse it. The form is offered when some allow rule of the person's role covers the host (the canonical agent
name, as `authorize` matches it) — the same hosts whose commands the read rule lets them read — so nobody is
shown a form that can only ever answer "refused".
"""

from __future__ import annotations

from teleops.commands.authorize import current_policy
from teleops.domain.policy import Effect, Policy

__all__ = ["offers_commands_on"]


def offers_commands_on(role: str | None, host: str, *, policy: Policy | None = None) -> bool:
    """True when an allow rule of `role` covers `host` (None or an unknown role: False). `policy` defaults to the
    installed one. Never raises."""
    if not role or not host:
        return False
    rules = (policy or current_policy()).roles.get(role, ())
    return any(rule.effect is Effect.ALLOW and rule.matches_host(host) for rule in rules)
