"""The agent-local allowlist: the host admin's last word on what runs here, whatever the controller asks.

The policy file is YAML::

    allow:
      - "uptime"
      - "df *"
      - {command: "systemctl restart nginx", run_as: root}   # root only where a rule says so
    deny: ["systemctl status --all *"]     # optional; deny wins over allow
    run_as: nobody                         # optional; who the other rules run as when the agent is root
    redact: ["(?i)db_pass=(?P<secret>\\S+)"]  # optional; regexes masked in output, on top of the built-ins
    env: [TERM]                            # optional; variable names the controller may set (default none)
    cwd: [/srv/app]                        # optional; directories besides / commands may run in

``env`` and ``cwd`` are parsed and checked by ``teleops.agent.environment.EnvPolicy`` (docs/threat-model.md T14).

Who a command runs as (docs/threat-model.md T33): an agent running as root runs a command as the ``run_as`` of the
rule that allowed it, else as the policy's ``run_as`` (default ``nobody``): read-only diagnostics are unprivileged
unless a rule says otherwise, and root is only ever named per rule — a top-level ``run_as: root`` is refused. An agent
that is not root runs everything as its own user and refuses, at start, a policy naming any other user
(``Allowlist.check_users``).

Patterns follow ``teleops.domain.patterns`` (token by token over the argv; a trailing ``*`` matches the rest).
A command no rule allows is refused. ``allow_all: true`` is accepted only for the embedded local mode, where
controller and agent are the same machine and the same admin.

An allow rule that fits still refuses (docs/threat-model.md T11, T12), with the reason, when
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

__all__ = ["DEFAULT_RUN_AS", "AllowRule", "Allowlist", "Decision", "PolicyFileError"]

_KEYS = frozenset({"allow", "deny", "allow_all", "redact", "env", "cwd", "run_as"})
_RULE_KEYS = frozenset({"command", "run_as"})
DEFAULT_RUN_AS = "nobody"  # who commands of a root agent run as unless a rule (or the policy's run_as) says otherwise
_USER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\$?")


class PolicyFileError(Exception):
    """The policy file is missing, unreadable or invalid; the agent must not start with it."""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    rule: str | None  # canonical text of the rule that decided, None when no rule matched
    reason: str
    run_as: str | None = None  # the deciding rule's run_as; None: the policy's default (see ``Allowlist.runs_as``)


@dataclass(frozen=True, slots=True)
class AllowRule:
    """One ``allow`` entry: its pattern and, when the rule names one, the user it runs as."""

    tokens: tuple[str, ...]
    run_as: str | None = None


@dataclass(frozen=True, slots=True)
class _Rule:
    tokens: tuple[str, ...]
    run_as: str | None = None

    @property
    def text(self) -> str:
        return pattern_text(self.tokens)


class Allowlist:
    """Allow and deny rules over argv. Build with ``load``, ``from_mapping``, ``deny_all`` or ``local_allow_all``."""

    def __init__(
        self,
        allow: Sequence[Sequence[str] | AllowRule],
        deny: Sequence[Sequence[str]],
        *,
        allow_all: bool,
        redact: Sequence[str] = (),
        env_policy: EnvPolicy | None = None,
        run_as: str = DEFAULT_RUN_AS,
    ) -> None:
        self._allow = tuple(_Rule(r.tokens, r.run_as) if isinstance(r, AllowRule) else _Rule(tuple(r)) for r in allow)
        # Who a root agent runs commands as when the deciding rule names nobody (never root: see the docstring).
        self.default_run_as = run_as
        self._deny = tuple(_Rule(tuple(t)) for t in deny)
        self._allow_all = allow_all
        # Output of every command is masked with the built-in secret shapes plus these patterns
        # (docs/threat-model.md T24).
        self._redact = tuple(redact)
        self.redaction = SecretRules.build(redact)
        # Which variables and directories the controller may choose (``env:``, ``cwd:``); default none and /.
        self.env_policy = env_policy if env_policy is not None else EnvPolicy()

    @classmethod
    def deny_all(cls) -> Allowlist:
        """What an agent without a policy file enforces: every command is refused."""
        return cls((), (), allow_all=False)

    @classmethod
    def local_allow_all(cls, run_as: str = DEFAULT_RUN_AS) -> Allowlist:
        """Everything allowed (deny rules none): only for the embedded local agent, whose commands run as
        ``run_as`` when it is root (the controller checks that user cannot reach its data directory)."""
        return cls((), (), allow_all=True, run_as=run_as)

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
            _allow_rules(data),
            _patterns(data, "deny"),
            allow_all=allow_all,
            redact=_redactions(data),
            env_policy=_env_policy(data),
            run_as=_default_run_as(data),
        )

    def add_redaction(self, patterns: Sequence[str], secrets: Sequence[str]) -> None:
        """Mask these too, in output and in the agent's log (the embedded agent gets the controller's configured
        secrets this way: ``--redact-file``). Raises PolicyFileError on a bad pattern."""
        try:
            self.redaction = SecretRules.build([*self._redact, *patterns], secrets)
        except (re.error, ValueError) as exc:
            raise PolicyFileError(f"redaction: {exc}") from exc
        self._redact = (*self._redact, *patterns)

    def runs_as(self, decision: Decision, *, agent_is_root: bool) -> str | None:
        """The user an allowed command runs as: the rule's ``run_as``, else (for a root agent) the policy's default.
        None: the agent's own user (an agent that is not root never switches)."""
        if decision.run_as is not None:
            return decision.run_as
        return self.default_run_as if agent_is_root else None

    def users(self) -> list[str]:
        """Every user this policy names (the default first), for the start-up check."""
        return list(dict.fromkeys([self.default_run_as, *(r.run_as for r in self._allow if r.run_as is not None)]))

    def check_users(self, *, euid: int) -> None:
        """Raise PolicyFileError unless every user the policy names exists and this agent (uid ``euid``) can run
        commands as it: a root agent can be anyone; any other agent only itself (the default ``run_as`` does not
        apply to it, so it need not exist)."""
        import pwd

        named = self.users() if euid == 0 else [r.run_as for r in self._allow if r.run_as is not None]
        for user in named:
            try:
                entry = pwd.getpwnam(user)
            except KeyError:
                raise PolicyFileError(
                    f"run_as {user!r}: no such user on this host; create it (useradd --system {user}) or change run_as"
                ) from None
            if euid != 0 and entry.pw_uid != euid:
                raise PolicyFileError(
                    f"run_as {user!r}: this agent runs as uid {euid}, not root, so it cannot run commands as another "
                    "user; run the agent as root (rules without run_as then run as "
                    f"{self.default_run_as!r}) or remove that run_as"
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
                return Decision(True, rule.text, f"allowed by rule {rule.text!r}", rule.run_as)
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
        canonical: dict[str, object] = {
            "allow": sorted({_rule_text(r) for r in self._allow}),
            "deny": sorted({pattern_text(r.tokens) for r in self._deny}),
            "allow_all": self._allow_all,
        }
        # Only when not the default, so the digest of a policy without run_as: is what it always was.
        if self.default_run_as != DEFAULT_RUN_AS:
            canonical["run_as"] = self.default_run_as
        # Only when set, so the digest of a policy without env:/cwd: is what it always was.
        if self.env_policy.env:
            canonical["env"] = sorted(self.env_policy.env)
        if self.env_policy.cwd != EnvPolicy().cwd:
            canonical["cwd"] = sorted(self.env_policy.cwd)
        blob = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _rule_text(rule: _Rule) -> str:
    text = pattern_text(rule.tokens)
    return text if rule.run_as is None else f"{text} (run_as {rule.run_as})"


def _user(raw: object, where: str) -> str:
    if not isinstance(raw, str) or not _USER_NAME.fullmatch(raw) or len(raw) > 32:
        raise PolicyFileError(f"{where} must be a user name like nobody or root, got {raw!r}")
    return raw


def _default_run_as(data: Mapping[object, object]) -> str:
    raw = data.get("run_as")
    if raw is None:
        return DEFAULT_RUN_AS
    user = _user(raw, "'run_as'")
    if user == "root":
        raise PolicyFileError(
            "'run_as: root' would run every command as root; name root only on the rules that need it: "
            "allow: [{command: 'systemctl restart nginx', run_as: root}]"
        )
    return user


def _allow_rules(data: Mapping[object, object]) -> list[AllowRule]:
    raw = data.get("allow", [])
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise PolicyFileError(f"'allow' must be a list of command patterns, got {type(raw).__name__}")
    rules: list[AllowRule] = []
    for index, item in enumerate(raw):
        run_as = None
        if isinstance(item, Mapping):
            unknown = sorted(str(k) for k in item if k not in _RULE_KEYS)
            if unknown:
                raise PolicyFileError(
                    f"allow[{index}]: unknown key(s) {', '.join(unknown)}; a rule has 'command' and optionally 'run_as'"
                )
            if "run_as" in item:
                run_as = _user(item["run_as"], f"allow[{index}].run_as")
            item = item.get("command")
            if not isinstance(item, str):
                raise PolicyFileError(f"allow[{index}].command must be a string like 'df *', got {item!r}")
        if not isinstance(item, str):
            raise PolicyFileError(
                f"allow[{index}] must be a string like 'df *' or {{command: 'df *', run_as: USER}}, got {item!r}"
            )
        try:
            rules.append(AllowRule(parse_pattern(item), run_as))
        except InvalidPattern as exc:
            raise PolicyFileError(f"allow[{index}]: {exc}") from exc
    return rules


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
