"""Which Python packages the configured features need, and which of them this installation lacks.

Telegram, Slack and SSH are in the base install; Duo is the optional `duo` extra. Each SDK is imported only by
the module that uses it, when its feature is configured; this check runs first (`teleops config check`,
`teleops serve`) so that a missing package is one line naming the section and the exact install command,
never a traceback from deep inside start-up.
"""

from __future__ import annotations

import importlib.util
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass

from teleops.config.settings import Settings

__all__ = ["FEATURE_PACKAGES", "FeaturePackage", "missing_packages"]


@dataclass(frozen=True, slots=True)
class FeaturePackage:
    section: str  # the configuration key that turns the feature on
    module: str  # what the feature imports
    requirement: str  # what pip installs (the range pyproject.toml declares)
    extra: str | None  # the `teleops[...]` extra that carries it, when it is optional
    configured: Callable[[Settings], bool]


FEATURE_PACKAGES: tuple[FeaturePackage, ...] = (
    FeaturePackage(
        "telegram.token", "telegram", "python-telegram-bot>=22.0", None, lambda s: s.telegram.token is not None
    ),
    FeaturePackage("slack.bot_token", "slack_bolt", "slack-bolt>=1.18", None, lambda s: s.slack.bot_token is not None),
    FeaturePackage("slack.bot_token", "slack_sdk", "slack-sdk>=3.27", None, lambda s: s.slack.bot_token is not None),
    FeaturePackage("hosts[].ssh", "asyncssh", "asyncssh>=2.14", None, lambda s: bool(s.hosts)),
    FeaturePackage("twofactor.duo", "duo_client", "duo_client>=5.3", "duo", lambda s: s.twofactor.duo is not None),
    FeaturePackage("database.url", "asyncpg", "asyncpg>=0.29", None, lambda s: s.database.url.startswith("postgresql")),
)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_packages(settings: Settings) -> list[str]:
    """One line per configured feature whose package is not importable here, with the command that installs it
    into the Python running TeleOps (the same command works for a checkout's .venv/ and a wheel install)."""
    pip = f"{shlex.quote(sys.executable)} -m pip install"
    lines: list[str] = []
    for need in FEATURE_PACKAGES:
        if not need.configured(settings) or _installed(need.module):
            continue
        via = (
            f" (the `teleops[{need.extra}]` extra)"
            if need.extra
            else " (part of the base install, which is incomplete)"
        )
        lines.append(
            f"{need.section} is configured but the {need.module} package is not installed{via}; "
            f"install it with: {pip} {shlex.quote(need.requirement)} — or remove {need.section}"
        )
    return lines
