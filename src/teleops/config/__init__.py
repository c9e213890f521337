"""Typed settings: YAML file plus TELEOPS_* environment (environment wins)."""

from teleops.config.settings import ConfigError, Settings, find_config_file, load_settings

__all__ = ["ConfigError", "Settings", "find_config_file", "load_settings"]
