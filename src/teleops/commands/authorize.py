"""The one authorize step: may this person run this argv on this host? (teleops.domain.policy decides.)

The controller installs the configured policy once at startup (`use_policy`); until then, and in tools that
never install one, the built-in default applies (operators: read-only diagnostics; admins: anything but a
shell). Decisions are always for the human who asked, given their role; never for a bot account (T08).
"""

from __future__ import annotations

from collections.abc import Sequence

from teleops.domain.policy import Decision, Policy, compile_policy

__all__ = ["Decision", "authorize", "current_policy", "use_policy"]


def _default_policy() -> Policy:
    # No `policy:` section = DEFAULT_ROLES; max_timeout never appears there, so no duration parser is needed.
    return compile_policy(None, parse_duration=float)


_installed: Policy = _default_policy()


def use_policy(policy: Policy) -> None:
    """Make `policy` the one `authorize` applies (called at controller startup with the loaded config)."""
    global _installed
    _installed = policy


def current_policy() -> Policy:
    return _installed


def authorize(
    user: str,
    role: str | None,
    host: str,
    argv: Sequence[str],
    *,
    text: str | None = None,
    policy: Policy | None = None,
) -> Decision:
    """Decide for a person (never a bot account). Default deny; the reason says what to do next.

    `text` is the command as typed (its shell syntax is refused without a shell grant); `policy` overrides the
    installed one. Never raises.
    """
    return (policy or _installed).decide(user=user, role=role, host=host, argv=argv, text=text)
