"""The agent-local allowlist: the host admin's last word on what runs here, whatever the controller asks.

The policy file is YAML::

    allow: ["uptime", "df *", "systemctl status *"]
    deny: ["systemctl status --all *"]     # optional; deny wins over allow
    redact: ["(?i)db_pass=(?P<secret>\\S+)"]  # optional; regexes masked in output, on top of the built-ins

Patterns follow ``teleops.domain.patterns`` (token by token over the argv; a trailing ``*`` matches the rest).
A command no rule allows is refused. ``allow_all: true`` is accepted only for the embedded local mode, where
controller and agent are the same machine and the same admin.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from teleops.domain.patterns import InvalidPattern, argv_matches, parse_pattern, pattern_text
from teleops.domain.redaction import SecretRules

__all__ = ["Allowlist", "Decision", "PolicyFileError"]

_KEYS = frozenset({"allow", "deny", "allow_all", "redact"})


class PolicyFileError(Exception):
    """The policy file is missing, unreadable or invalid; the agent must not start with it."""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    rule: str | None  # canonical text of the rule that decided, None when no rule matched
    reason: str


@dataclass(frozen=True, slots=True)
class _Rule:
    tokens: tuple[str, ...]

    @property
    def text(self) -> str:
        return pattern_text(self.tokens)


class Allowlist:
    """Allow and deny rules over argv. Build with ``load``, ``from_mapping``, ``deny_all`` or ``local_allow_all``."""

    def __init__(
        self,
        allow: Sequence[Sequence[str]],
        deny: Sequence[Sequence[str]],
        *,
        allow_all: bool,
        redact: Sequence[str] = (),
    ) -> None:
        self._allow = tuple(_Rule(tuple(t)) for t in allow)
        self._deny = tuple(_Rule(tuple(t)) for t in deny)
        self._allow_all = allow_all
        # Output of every command is masked with the built-in secret shapes plus these patterns (THREATS T24).
        self.redaction = SecretRules.build(redact)

    @classmethod
    def deny_all(cls) -> Allowlist:
        """What an agent without a policy file enforces: every command is refused."""
        return cls((), (), allow_all=False)

    @classmethod
    def local_allow_all(cls) -> Allowlist:
        """Everything allowed (deny rules none): only for the embedded local agent."""
        return cls((), (), allow_all=True)

    @classmethod
    def load(cls, path: Path, *, embedded: bool = False) -> Allowlist:
        """Read and validate a policy file.

        Raises PolicyFileError naming the file and the problem (unreadable, not YAML, unknown key, a pattern
        that does not split, ``allow_all`` outside the embedded mode). Nothing is partially loaded.
        """
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyFileError(f"cannot read policy file {path}: {exc}; check the path and its permissions") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PolicyFileError(f"policy file {path} is not valid YAML: {exc}") from exc
        try:
            return cls.from_mapping(data, embedded=embedded)
        except PolicyFileError as exc:
            raise PolicyFileError(f"policy file {path}: {exc}") from exc

    @classmethod
    def from_mapping(cls, data: object, *, embedded: bool = False) -> Allowlist:
        """Validate parsed policy data (see ``load``); raises PolicyFileError naming the key and entry at fault."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise PolicyFileError(f"expected a mapping with 'allow' (and optionally 'deny'), got {type(data).__name__}")
        unknown = sorted(str(k) for k in data if k not in _KEYS)
        if unknown:
            raise PolicyFileError(f"unknown key(s) {', '.join(unknown)}; allowed keys are allow, deny, allow_all")
        allow_all = data.get("allow_all", False)
        if not isinstance(allow_all, bool):
            raise PolicyFileError(f"'allow_all' must be true or false, got {allow_all!r}")
        if allow_all and not embedded:
            raise PolicyFileError(
                "'allow_all: true' is only accepted for the embedded local agent; "
                "list the allowed commands under 'allow'"
            )
        return cls(_patterns(data, "allow"), _patterns(data, "deny"), allow_all=allow_all, redact=_redactions(data))

    def check(self, argv: Sequence[str]) -> Decision:
        """Decide whether argv may run here. Deny rules win; with no matching allow rule the answer is no."""
        if not argv:
            return Decision(False, None, "empty command: nothing to run")
        for rule in self._deny:
            if argv_matches(rule.tokens, argv):
                return Decision(False, rule.text, f"refused by this host's allowlist (deny rule {rule.text!r})")
        if self._allow_all:
            return Decision(True, "allow_all", "allowed: this embedded local agent allows every command")
        for rule in self._allow:
            if argv_matches(rule.tokens, argv):
                return Decision(True, rule.text, f"allowed by rule {rule.text!r}")
        return Decision(
            False,
            None,
            "refused by this host's allowlist: no rule allows it; ask the host's admin to add it to the agent policy",
        )

    def digest(self) -> str:
        """SHA-256 (hex) of the normalised rules: the same for files that differ only in spacing, quoting or order."""
        canonical = {
            "allow": sorted({pattern_text(r.tokens) for r in self._allow}),
            "deny": sorted({pattern_text(r.tokens) for r in self._deny}),
            "allow_all": self._allow_all,
        }
        blob = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _redactions(data: Mapping[object, object]) -> list[str]:
    raw = data.get("redact", [])
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise PolicyFileError("'redact' must be a list of regular expressions (strings)")
    try:
        SecretRules.build(raw)
    except (re.error, ValueError) as exc:
        raise PolicyFileError(f"'redact': {exc}; fix the regular expression") from exc
    return list(raw)


def _patterns(data: Mapping[object, object], key: str) -> list[tuple[str, ...]]:
    raw = data.get(key, [])
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise PolicyFileError(f"'{key}' must be a list of command patterns, got {type(raw).__name__}")
    out: list[tuple[str, ...]] = []
    for index, item in enumerate(raw):
        if not isinstance(item, str):
            raise PolicyFileError(f"{key}[{index}] must be a string like 'df *', got {item!r}")
        try:
            out.append(parse_pattern(item))
        except InvalidPattern as exc:
            raise PolicyFileError(f"{key}[{index}]: {exc}") from exc
    return out
