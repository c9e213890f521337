"""Whether each platform takes our messages at all: a rejected bot token is a health problem, not a retry loop.

The outbox worker reports a `TokenRejected` answer here; the first report of an episode tells the listeners once
(the controller logs it, sets `teleops_platform_token_rejected`, shows it in `/readyz` and tells admins through
their other channels), and the next message the platform accepts ends the episode.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

__all__ = ["DeliveryHealth", "HealthListener"]

log = structlog.get_logger(__name__)

# (platform, the problem, or None when the platform takes messages again)
HealthListener = Callable[[str, str | None], None]


class DeliveryHealth:
    def __init__(self) -> None:
        self._problems: dict[str, str] = {}
        self._listeners: list[HealthListener] = []

    def subscribe(self, listener: HealthListener) -> None:
        self._listeners.append(listener)

    def token_rejected(self, platform: str, reason: str) -> None:
        if platform in self._problems:
            return
        self._problems[platform] = reason
        log.error("delivery.token_rejected", platform=platform, reason=reason)
        self._tell(platform, reason)

    def delivered(self, platform: str) -> None:
        if self._problems.pop(platform, None) is not None:
            log.info("delivery.token_accepted", platform=platform)
            self._tell(platform, None)

    def problems(self) -> dict[str, str]:
        """Platform -> what is wrong with it, for those that reject every message now."""
        return dict(self._problems)

    def _tell(self, platform: str, problem: str | None) -> None:
        for listener in self._listeners:
            try:
                listener(platform, problem)
            except Exception:  # a listener's bug must not stop delivery
                log.exception("delivery.health_listener_failed", platform=platform)
