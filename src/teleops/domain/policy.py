"""Who may run what where: roles → ordered rules of host patterns × command patterns. Pure; stdlib only.

Semantics (docs/access-control.md has worked examples):

- **Default deny.** A role with no matching allow rule, an unknown role and an empty command are refused.
- **Deny wins.** Any matching ``effect: deny`` rule refuses, whatever allows also match.
- **Most restrictive requirements.** When several allow rules match, the decision takes every requirement
  any of them imposes (``require_2fa``, ``require_approval``) and the smallest ``max_timeout``. A broad rule
  added later can therefore never loosen a narrower rule's requirements (docs/threat-model.md T09).
- **A second factor before a change (step-up by default).** ``require_2fa: true`` asks for a code for every
  command the rule allows, ``require_2fa: false`` never does. A rule that leaves the key out asks for one before
  any command that can change the host: every command except those `teleops.domain.read_only` knows to be
  read-only (``df``, ``ps``, ``systemctl status``, …). A rule whose command patterns are all read-only (and
  that grants no shell) therefore asks for nothing; ``*`` asks for a code before ``systemctl restart`` but not
  before ``uptime``; a command that needs a shell is never read-only. `Policy.unguarded` lists the rules that
  can change a host yet say ``require_2fa: false`` (the loader warns about each: docs/access-control.md).
- **Shell is a grant.** An argv that starts a shell with ``-c`` (``sh -c …``, ``env bash -c …``,
  ``sudo sh -ec …``) and a command line with shell syntax outside quotes (``;``, ``&&``, ``||``, ``|``,
  backticks, ``$(``, redirections, a newline anywhere) are allowed only by a matching rule with
  ``shell: true``; other allow rules do not count for them. Without a shell, metacharacters inside argv
  tokens are plain text: TeleOps never runs a shell on its own.
- Commands match on the argv with ``teleops.domain.patterns`` (``*`` as the whole last token = any remaining
  tokens; a glob inside a token never matches a token starting with ``-`` unless the pattern token does, nor
  crosses ``/``; a path word such as ``/var/log/*`` only takes plain paths inside it). Deny rules match with
  `deny_matches` (broader: also the normalised form of each path).
  Hosts match the canonical agent name with ``fnmatch`` rules, case-insensitively (host names are).
- **A wildcard does not grant code** (``teleops.domain.arguments``): an allow rule whose pattern fits only
  because a wildcard supplied an executing argument (``python3 -c``, ``find -exec``, ``env sh``, ``git -c``;
  the table is `EXECUTORS`) does not allow the command, and the refusal names the argument. A rule that spells
  the argument out allows it. Rules with ``shell: true`` grant a shell, which can run anything: the check does
  not apply to them (path containment still does).

Decisions are made for the human who asked, given their role; nothing here knows about bot accounts (T08).
"""

from __future__ import annotations

import enum
import fnmatch
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from teleops.domain.arguments import judge
from teleops.domain.patterns import InvalidPattern, deny_matches, parse_pattern, pattern_text
from teleops.domain.read_only import argv_is_read_only, pattern_is_read_only

__all__ = [
    "DEFAULT_ROLES",
    "SHELLS",
    "Decision",
    "Effect",
    "Policy",
    "PolicyError",
    "Rule",
    "StepUp",
    "compile_policy",
    "shell_syntax",
    "starts_shell",
]

# Shell programs whose `-c` runs a whole script: an argv that starts one is a shell, whatever the rule says.
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish", "csh", "tcsh", "busybox"})

_RULE_KEYS = frozenset({"hosts", "commands", "effect", "require_2fa", "require_approval", "shell", "max_timeout"})

# The policy used when the config has no `policy:` section: operators get read-only diagnostics; admins get
# every program on the host with any arguments, but no code written into the command (`python3 -c`, `bash -c`,
# `env sh`, `find -exec`: teleops.domain.arguments) and no shell. `*` is still a root-level grant (it can write
# files); docs/access-control.md "What * grants". Neither sets require_2fa, so the step-up default applies:
# admins give a one-time code before any command that can change a host. Written in the same shape as the
# config, checked the same way.
DEFAULT_ROLES: Mapping[str, Sequence[Mapping[str, Any]]] = {
    "operator": [
        {
            "hosts": ["*"],
            "commands": [
                "uptime",
                "uname *",
                "hostname",
                "date",
                "df *",
                "free *",
                "w",
                "who",
                "ps *",
                "echo *",
                "systemctl status *",
            ],
        }
    ],
    "admin": [{"hosts": ["*"], "commands": ["*"]}],
}


class PolicyError(ValueError):
    """The policy cannot be used. `key` is the dotted config key at fault (e.g. ``policy.roles.ops.0.hosts``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


class Effect(enum.StrEnum):
    ALLOW = "allow"
    DENY = "deny"


class StepUp(enum.StrEnum):
    """When a rule asks for a second factor (its ``require_2fa``, or the default when the key is absent)."""

    ALWAYS = "always"  # require_2fa: true
    NEVER = "never"  # require_2fa: false, or absent on a read-only rule
    ON_CHANGE = "on_change"  # absent on a rule that can change a host: for every command not known read-only


@dataclass(frozen=True, slots=True)
class Rule:
    role: str
    number: int  # 1-based position within the role, as people count rules in the file
    hosts: tuple[str, ...]
    commands: tuple[tuple[str, ...], ...]
    texts: tuple[str, ...]  # the command patterns as written, for people
    effect: Effect = Effect.ALLOW
    step_up: StepUp = StepUp.NEVER
    require_approval: bool = False
    shell: bool = False
    max_timeout_s: float | None = None
    read_only: bool = False  # every command pattern is read-only (teleops.domain.read_only) and no shell granted

    @property
    def require_2fa(self) -> bool:
        """True when the rule asks for a code for some command (always, or before a change)."""
        return self.step_up is not StepUp.NEVER

    @property
    def unguarded(self) -> bool:
        """An allow rule that can change a host and says ``require_2fa: false``: no second factor, by choice."""
        return self.effect is Effect.ALLOW and not self.read_only and self.step_up is StepUp.NEVER

    def asks_code(self, *, read_only: bool) -> bool:
        """Whether this rule asks for a code for a command (`read_only`: that command cannot change the host)."""
        return self.step_up is StepUp.ALWAYS or (self.step_up is StepUp.ON_CHANGE and not read_only)

    def describe(self) -> str:
        """E.g. ``operator rule 2: hosts [web-*] commands [systemctl restart *]`` (deny rules say so)."""
        kind = " deny" if self.effect is Effect.DENY else ""
        commands = ", ".join(self.texts)
        return f"{self.role}{kind} rule {self.number}: hosts [{', '.join(self.hosts)}] commands [{commands}]"

    def matching_pattern(self, argv: Sequence[str]) -> str | None:
        """The first command pattern (as written) that allows argv, else the first that fits it."""
        fitting: str | None = None
        for pattern, text in zip(self.commands, self.texts, strict=True):
            verdict = judge(pattern, argv, code=not self.shell)
            if verdict.allowed:
                return text
            if verdict.fits and fitting is None:
                fitting = text
        return fitting

    def matches_host(self, host: str) -> bool:
        wanted = host.lower()
        return any(fnmatch.fnmatchcase(wanted, pattern.lower()) for pattern in self.hosts)

    def matches_argv(self, argv: Sequence[str]) -> bool:
        """True when some command pattern fits argv (for a deny rule: covers it, see `deny_matches`). An allow
        rule may fit and still not allow the command: see `refusal`."""
        if self.effect is Effect.DENY:
            return any(deny_matches(pattern, argv) for pattern in self.commands)
        return any(judge(pattern, argv, code=False).fits for pattern in self.commands)

    def refusal(self, argv: Sequence[str]) -> str | None:
        """Why this allow rule, which fits argv, still does not allow it (a path argument that is not a plain
        path inside the pattern, or an executing argument a wildcard supplied); None when it allows it."""
        first: str | None = None
        for pattern in self.commands:
            verdict = judge(pattern, argv, code=not self.shell)
            if verdict.allowed:
                return None
            if verdict.fits and first is None:
                first = verdict.refusal
        return first


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer for one (person, host, argv). `rule` names the deciding rule; `reason` is for the person."""

    allowed: bool
    rule: str
    reason: str
    require_2fa: bool = False
    require_approval: bool = False
    max_timeout_s: float | None = None


def starts_shell(argv: Sequence[str]) -> bool:
    """True when argv runs a shell script: some token is a shell program followed later by a ``-c`` option
    (``-c``, or a short-option cluster containing ``c`` such as ``-ec``). Wrappers (``env``, ``sudo``,
    ``nice``) in front do not hide it."""
    for index, token in enumerate(argv):
        if os.path.basename(token) not in SHELLS:
            continue
        for option in argv[index + 1 :]:
            if option.startswith("-") and not option.startswith("--") and "c" in option[1:]:
                return True
    return False


def shell_syntax(text: str) -> str | None:
    """The first piece of shell syntax in a typed command line, or None.

    Looks outside single quotes (backticks and ``$(`` count inside double quotes too, as a shell would expand
    them there). A newline counts anywhere: one chat message is one command.
    """
    if "\n" in text or "\r" in text:
        return "a newline"
    quote = ""
    index = 0
    while index < len(text):
        char = text[index]
        pair = text[index : index + 2]
        if char == "\\" and quote != "'":
            index += 2
            continue
        if quote == "'":
            if char == "'":
                quote = ""
        elif char == "`":
            return "a backtick"
        elif pair == "$(":
            return "$("
        elif quote == '"':
            if char == '"':
                quote = ""
        elif char in "'\"":
            quote = char
        elif pair in ("&&", "||", ">>", "<<"):
            return pair
        elif char in ";|&<>":
            return char
        index += 1
    return None


class Policy:
    """Compiled roles. Build with `compile_policy`; ask with `decide`."""

    def __init__(self, roles: Mapping[str, tuple[Rule, ...]]) -> None:
        self._roles = dict(roles)

    @property
    def roles(self) -> Mapping[str, tuple[Rule, ...]]:
        return self._roles

    def unguarded(self) -> tuple[Rule, ...]:
        """Allow rules that can change a host and opt out of step-up with ``require_2fa: false``, in file order."""
        return tuple(rule for rules in self._roles.values() for rule in rules if rule.unguarded)

    def decide(
        self, *, user: str, role: str | None, host: str, argv: Sequence[str], text: str | None = None
    ) -> Decision:
        """Decide for the person `user` holding `role` (None: not a known user). `text` is the command as typed,
        when there was one; its shell syntax is then refused unless a shell is granted.

        Never raises for any input: unknown users and roles and empty commands are refusals with a reason.
        """
        if role is None:
            return Decision(
                False,
                "unknown user",
                f"{user!r} is not a TeleOps user, so nothing is allowed; an admin adds people under `users:`",
            )
        who = f'{user} (role "{role}")'
        if not argv:
            return Decision(False, "default deny", "nothing to run: the command is empty; write what to run")
        rules = self._roles.get(role)
        if rules is None:
            return Decision(
                False,
                "default deny",
                f'role "{role}" of {user} is not defined in the policy, so nothing is allowed; '
                "ask an admin to add it under policy.roles",
            )
        syntax = shell_syntax(text) if text is not None else None
        needs_shell = starts_shell(argv) or syntax is not None
        on_host = [r for r in rules if r.matches_host(host) and r.matches_argv(argv)]
        for rule in on_host:
            if rule.effect is Effect.DENY:
                return Decision(
                    False, rule.describe(), f'{who} may not run "{argv[0]}" on {host}: refused by {rule.describe()}'
                )
        allows = [r for r in on_host if r.effect is Effect.ALLOW]
        granted = [r for r in allows if r.shell] if needs_shell else allows
        if not granted:
            if allows and syntax is not None:
                return Decision(
                    False,
                    allows[0].describe(),
                    f"shell syntax is not run; {syntax} in the command would need a shell, which role "
                    f'"{role}" is not granted on {host}. Run one command at a time, without ; && || | ` $( or '
                    "redirections, or ask an admin for a shell grant",
                )
            if allows:
                return Decision(
                    False,
                    allows[0].describe(),
                    f'{who} may not start a shell with -c on {host}: no rule grants role "{role}" a shell '
                    "(shell: true); run the command directly instead",
                )
            if syntax is not None:
                return Decision(
                    False,
                    "default deny",
                    f"shell syntax is not run; {syntax} in the command would need a shell. Run one command at a "
                    "time, without ; && || | ` $( or redirections",
                )
            return Decision(
                False,
                "default deny",
                f'role "{role}" may not run "{pattern_text(argv)}" on {host} (rule: default deny); '
                "ask an admin to run it or to extend the policy",
            )
        # A rule that fits only through a wildcard that supplied code, or a path that is not plain, allows nothing.
        refusals = {r.number: r.refusal(argv) for r in granted}
        cleared = [r for r in granted if refusals[r.number] is None]
        if not cleared:
            first = granted[0]
            return Decision(
                False,
                first.describe(),
                f'{who} may not run "{argv[0]}" on {host}: {refusals[first.number]} '
                f"(fits {first.describe()}, which does not grant it)",
            )
        # Requirements come from every matching allow rule, granting or not: a shell grant must not skip the
        # approval a host-wide rule asks for.
        # A command run through a shell is never read-only: `df -h; reboot` splits into a df argv.
        read_only = not needs_shell and argv_is_read_only(argv)
        asks = {r.number: r.asks_code(read_only=read_only) for r in allows}
        require_2fa = any(asks.values())
        require_approval = any(r.require_approval for r in allows)
        timeouts = [r.max_timeout_s for r in allows if r.max_timeout_s is not None]
        # Name the rule that explains the strictest requirement, so `policy test` shows why a code is asked.
        deciding = max(allows, key=lambda r: (r.require_approval, asks[r.number], r in cleared, -r.number))
        needs = [word for flag, word in ((require_2fa, "a TOTP code"), (require_approval, "a second person")) if flag]
        matched = deciding.matching_pattern(argv)
        reason = f"allowed: {deciding.role} rule {deciding.number} allows {matched!r} on {host}"
        if needs:
            reason += f"; needs {' and '.join(needs)}"
        if require_2fa and not any(asks[r.number] and r.step_up is StepUp.ALWAYS for r in allows):
            reason += " (step-up by default: the command can change the host and the rule sets no require_2fa)"
        return Decision(
            True,
            deciding.describe(),
            reason,
            require_2fa=require_2fa,
            require_approval=require_approval,
            max_timeout_s=min(timeouts) if timeouts else None,
        )


def compile_policy(
    roles: Mapping[str, Any] | None,
    *,
    parse_duration: Callable[[Any], float],
    prefix: str = "policy.roles",
) -> Policy:
    """Check and compile ``policy.roles`` (plain data as in the config). An empty or missing mapping means
    `DEFAULT_ROLES`. `parse_duration(text) -> seconds` converts ``max_timeout`` (raising ValueError when bad).

    Raises PolicyError naming the first bad key: not a mapping, unknown key, empty or unsplittable pattern,
    bad effect or duration. Nothing is partially loaded: the caller gets a whole Policy or the error.
    """
    source: Mapping[str, Any] = roles if roles else DEFAULT_ROLES
    if not isinstance(source, Mapping):
        raise PolicyError(prefix, "must map role names to lists of rules")
    compiled: dict[str, tuple[Rule, ...]] = {}
    for role, raw_rules in source.items():
        key = f"{prefix}.{role}"
        if not isinstance(role, str) or not role.strip():
            raise PolicyError(key, "a role name must be a non-empty string")
        if not isinstance(raw_rules, Sequence) or isinstance(raw_rules, str):
            raise PolicyError(key, "must be a list of rules like {hosts: [...], commands: [...]}")
        compiled[role] = tuple(
            _compile_rule(role, number, raw, f"{key}.{number - 1}", parse_duration)
            for number, raw in enumerate(raw_rules, start=1)
        )
    return Policy(compiled)


def _compile_rule(role: str, number: int, raw: Any, key: str, parse_duration: Callable[[Any], float]) -> Rule:
    if not isinstance(raw, Mapping):
        raise PolicyError(key, "a rule must be a mapping like {hosts: [...], commands: [...]}")
    unknown = sorted(set(raw) - _RULE_KEYS)
    if unknown:
        raise PolicyError(f"{key}.{unknown[0]}", f"unknown key; a rule may have {', '.join(sorted(_RULE_KEYS))}")
    hosts = _patterns(raw.get("hosts"), f"{key}.hosts")
    for index, host in enumerate(hosts):
        if host != host.strip() or " " in host:
            raise PolicyError(f"{key}.hosts.{index}", f"host pattern {host!r} contains spaces; remove them")
    commands: list[tuple[str, ...]] = []
    texts = _patterns(raw.get("commands"), f"{key}.commands")
    for index, text in enumerate(texts):
        try:
            commands.append(parse_pattern(text))
        except InvalidPattern as exc:
            raise PolicyError(f"{key}.commands.{index}", str(exc)) from exc
    effect_text = raw.get("effect", "allow")
    try:
        effect = Effect(effect_text)
    except ValueError as exc:
        raise PolicyError(f"{key}.effect", f"{effect_text!r} is not allow or deny") from exc
    flags: dict[str, bool] = {}
    for flag in ("require_approval", "shell"):
        value = raw.get(flag, False)
        if not isinstance(value, bool):
            raise PolicyError(f"{key}.{flag}", f"{value!r} is not true or false")
        flags[flag] = value
    written = raw.get("require_2fa")  # None (or absent): the step-up default
    if written is not None and not isinstance(written, bool):
        raise PolicyError(f"{key}.require_2fa", f"{written!r} is not true or false")
    read_only = not flags["shell"] and all(pattern_is_read_only(pattern) for pattern in commands)
    if written is None:
        step_up = StepUp.NEVER if read_only or effect is Effect.DENY else StepUp.ON_CHANGE
    else:
        step_up = StepUp.ALWAYS if written else StepUp.NEVER
    max_timeout_s: float | None = None
    if raw.get("max_timeout") is not None:
        try:
            value = raw["max_timeout"]
            max_timeout_s = float(parse_duration(value))
        except (TypeError, ValueError) as exc:
            raise PolicyError(f"{key}.max_timeout", f"{exc}") from exc
        if max_timeout_s <= 0:
            raise PolicyError(f"{key}.max_timeout", "must be longer than 0s")
    return Rule(
        role=role,
        number=number,
        hosts=hosts,
        commands=tuple(commands),
        texts=tuple(t.strip() for t in texts),
        effect=effect,
        step_up=step_up,
        max_timeout_s=max_timeout_s,
        read_only=read_only,
        **flags,
    )


def _patterns(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        raise PolicyError(key, "required key is missing; list at least one pattern")
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise PolicyError(key, "must be a list of patterns, e.g. ['web-*']")
    if not value:
        raise PolicyError(key, "is empty; list at least one pattern (use ['*'] for all)")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise PolicyError(f"{key}.{index}", "empty pattern; write one, e.g. '*' or 'df *'")
    return tuple(value)
