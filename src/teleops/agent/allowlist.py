"""The agent-local allowlist: the host admin's last word on what runs here, whatever the controller asks.

The policy file is YAML::

    allow: ["uptime", "df *", "systemctl status *"]
    deny: ["systemctl status --all *"]     # optional; deny wins over allow
    redact: ["(?i)db_pass=(?P<secret>\\S+)"]  # optional; regexes masked in output, on top of the built-ins
    env: [TERM]                            # optional; variable names the controller may set (default none)
    cwd: [/srv/app]                        # optional; directories besides / commands may run in

``env`` and ``cwd`` are parsed and checked by ``teleops.agent.environment.EnvPolicy`` (THREATS T14).

Patterns follow ``teleops.domain.patterns`` (token by token over the argv; a trailing ``*`` matches the rest).
A command no rule allows is refused. ``allow_all: true`` is accepted only for the embedded local mode, where
controller and agent are the same machine and the same admin.

An allow rule that fits still refuses (THREATS T11, T12), with the reason, when
- a wildcard supplied an argument that runs code or another program (``python3 -c``, ``find -exec``, ``env
  sh``: ``teleops.domain.arguments.EXECUTORS``) that the rule does not spell out;
- a path argument matched by a path word (``/var/log/*``) is not a plain path (``..``, ``//``, ``/proc/*/root``
  …) or, **resolved on this host** with realpath just before the command starts, lands outside the word
  (a symlink in /var/log pointing at /etc/shadow). TOCTOU: the check sees the file system as it is at that
  moment; whoever can rewrite links under the rule's directory between the check and the program's open()
  can still race it. Keep such directories writable by root only.
Deny rules also match the normalised and the resolved form of each path argument.
"""

from __future__ import annotations

import hashlib
import json
import os.path
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from teleops.agent.environment import EnvPolicy
from teleops.domain.arguments import judge, resolved_refusal
from teleops.domain.patterns import InvalidPattern, deny_matches, parse_pattern, pattern_text
from teleops.domain.redaction import SecretRules

__all__ = ["Allowlist", "Decision", "PolicyFileError"]

_KEYS = frozenset({"allow", "deny", "allow_all", "redact", "env", "cwd"})


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
        env_policy: EnvPolicy | None = None,
    ) -> None:
        self._allow = tuple(_Rule(tuple(t)) for t in allow)
        self._deny = tuple(_Rule(tuple(t)) for t in deny)
        self._allow_all = allow_all
        # Output of every command is masked with the built-in secret shapes plus these patterns (THREATS T24).
        self.redaction = SecretRules.build(redact)
        # Which variables and directories the controller may choose (``env:``, ``cwd:``); default none and /.
        self.env_policy = env_policy if env_policy is not None else EnvPolicy()

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
            raise PolicyFileError(f"unknown key(s) {', '.join(unknown)}; allowed keys are {', '.join(sorted(_KEYS))}")
        allow_all = data.get("allow_all", False)
        if not isinstance(allow_all, bool):
            raise PolicyFileError(f"'allow_all' must be true or false, got {allow_all!r}")
        if allow_all and not embedded:
            raise PolicyFileError(
                "'allow_all: true' is only accepted for the embedded local agent; "
                "list the allowed commands under 'allow'"
            )
        return cls(
            _patterns(data, "allow"),
            _patterns(data, "deny"),
            allow_all=allow_all,
            redact=_redactions(data),
            env_policy=_env_policy(data),
        )

    def check(self, argv: Sequence[str], *, cwd: str | None = None) -> Decision:
        """Decide whether argv may run here. Deny rules win; with no matching allow rule the answer is no.

        Path arguments are resolved on this host (see the module docstring); `cwd` is the directory the command
        will run in, needed only for relative path words (without it, such arguments are refused).
        """
        if not argv:
            return Decision(False, None, "empty command: nothing to run")

        def resolve(path: str) -> str:
            # For deny rules: every path-like argument, so keep it cheap on garbage (a hostile controller may send
            # 4096 arguments of 64 KiB): one syscall when the parent directory does not exist (nothing can be
            # opened or created there), none beyond PATH_MAX.
            full = posixpath.join(cwd or "/", path)
            if len(full) > 4096 or not os.path.lexists(posixpath.dirname(full)):
                return full
            return os.path.realpath(full)

        for rule in self._deny:
            if deny_matches(rule.tokens, argv, resolve=resolve):
                return Decision(False, rule.text, f"refused by this host's allowlist (deny rule {rule.text!r})")
        if self._allow_all:
            return Decision(True, "allow_all", "allowed: this embedded local agent allows every command")
        refused: tuple[str, str] | None = None
        for rule in self._allow:
            verdict = judge(rule.tokens, argv)
            if not verdict.fits or verdict.match is None:
                continue
            # Resolved now, just before the run: a symlink under the rule's directory may not lead out of it.
            why = verdict.refusal or resolved_refusal(argv, verdict.match, realpath=os.path.realpath, cwd=cwd)
            if why is None:
                return Decision(True, rule.text, f"allowed by rule {rule.text!r}")
            if refused is None:
                refused = (rule.text, why)
        if refused is not None:
            return Decision(
                False,
                refused[0],
                f"refused by this host's allowlist: rule {refused[0]!r} fits, but {refused[1]}",
            )
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
        # Only when set, so the digest of a policy without env:/cwd: is what it always was.
        if self.env_policy.env:
            canonical["env"] = sorted(self.env_policy.env)
        if self.env_policy.cwd != EnvPolicy().cwd:
            canonical["cwd"] = sorted(self.env_policy.cwd)
        blob = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _env_policy(data: Mapping[object, object]) -> EnvPolicy:
    try:
        return EnvPolicy.parse(data.get("env"), data.get("cwd"))
    except ValueError as exc:
        raise PolicyFileError(str(exc)) from exc


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
