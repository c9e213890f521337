"""Settings for tests, from plain dicts per section (as a YAML file would give them), validated the same way."""

from __future__ import annotations

from typing import Any

from teleops.config.settings import Settings

__all__ = ["settings_with"]


def settings_with(**sections: Any) -> Settings:
    """`Settings(database={"url": …}, local_agent={"enabled": False}, …)` without a cast per section."""
    return Settings(**sections)
