"""The clean environment a command runs with, and what of it the controller may choose (docs/threat-model.md T14).

A command gets a fixed base — PATH, LANG=C.UTF-8, HOME — plus the variables the controller sent in its exec.
In a running agent the host's own policy file decides which of those the controller may send at all
(``EnvPolicy``, installed by ``teleops agent`` at start, see ``install_policy``):

- ``env: [TERM, MY_APP_MODE]`` lists the exact variable NAMES a controller may set (default: none). A request
  naming any other variable is refused as a whole — never silently trimmed — with the offending names in the
  reason, so a compromised controller's attempt is visible in the result and in the agent's log.
- ``cwd: [/srv/app]`` lists the exact absolute directories a command may run in besides ``/`` (default: only
  ``/``, which is what the controller sends unless told otherwise).

Names that change what gets loaded or executed (LD_*, PATH, BASH_ENV, GIT_*, PYTHON*, PERL*, NODE_*, …) are a
second line: no request may set them, and a policy file that lists one is rejected when the agent starts. That
list can never be complete (every program reads its own variables); the allowlist above is the control.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "FIXED_CWD",
    "FIXED_PATH",
    "EnvPolicy",
    "EnvironmentRefused",
    "build_environment",
    "check_cwd",
    "install_policy",
    "installed_policy",
    "never_settable",
]

FIXED_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
FIXED_CWD = "/"  # always permitted: the directory every exec names unless the controller says otherwise

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Variables that change what gets loaded or executed, or how a shell/interpreter starts: a caller who may set
# them may run code of their choosing. Most come from glibc's list of variables it ignores for setuid programs;
# the rest point a common program at a config file, plugin or helper command. Compared in upper case.
_REFUSED_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "SHELL",
        "IFS",
        "ENV",
        "BASH_ENV",
        "SHELLOPTS",
        "BASHOPTS",
        "PS4",
        "PROMPT_COMMAND",
        "CDPATH",
        "GLOBIGNORE",
        "ZDOTDIR",
        "INPUTRC",
        "GCONV_PATH",
        "GETCONF_DIR",
        "GLIBC_TUNABLES",
        "HOSTALIASES",
        "LOCALDOMAIN",
        "LOCPATH",
        "NIS_PATH",
        "NLSPATH",
        "RESOLV_HOST_CONF",
        "RES_OPTIONS",
        "TMPDIR",
        "TZDIR",
        "TERMINFO",
        "TERMINFO_DIRS",
        "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "CLASSPATH",
        "TCLLIBPATH",
        "PHPRC",
        "PHP_INI_SCAN_DIR",
        "BUNDLE_GEMFILE",
        "RUBYGEMS_GEMDEPS",
        "GOFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC",
        "KRB5_CONFIG",
        "SASL_PATH",
        "QT_PLUGIN_PATH",
        "GIO_EXTRA_MODULES",
        "GTK_MODULES",
        "KUBECONFIG",
        "DOCKER_CONFIG",
        "DOCKER_HOST",
        "AWS_CONFIG_FILE",
        "CURL_HOME",
        "WGETRC",
        "SSH_ASKPASS",
        "SUDO_ASKPASS",
        "SUDO_EDITOR",
        "EDITOR",
        "VISUAL",
        "PAGER",
        "MANPAGER",
        "MANOPT",
        "BROWSER",
        "SYSTEMD_PAGER",
        "SYSTEMD_PAGERSECURE",
        "SYSTEMD_EDITOR",
        "SYSTEMD_LESS",
        "LESSOPEN",
        "LESSCLOSE",
    }
)
_REFUSED_PREFIXES = (
    "LD_",
    "DYLD_",
    "BASH_FUNC_",
    "MALLOC_",
    "PYTHON",
    "PERL",  # PERL5LIB, PERL5OPT, PERL5DB, PERLLIB, …
    "RUBY",  # RUBYOPT, RUBYLIB, …
    "NODE_",  # NODE_OPTIONS, NODE_PATH, …
    "NPM_CONFIG_",
    "GIT_",  # GIT_CONFIG_COUNT/KEY_n/VALUE_n, GIT_CONFIG_PARAMETERS, GIT_DIR, GIT_EXEC_PATH, GIT_SSH*, …
    "XDG_",  # XDG_CONFIG_HOME/DIRS: where git, systemd and most programs read their config from
    "OPENSSL_",  # OPENSSL_CONF loads engines/providers
    "LUA_",  # LUA_INIT runs code
    "GEM_",
    "CARGO_",
    "PIP_",
)

_CANNOT_PERMIT = "it controls what gets loaded or executed, so no policy can permit it"


class EnvironmentRefused(ValueError):
    """A requested variable or directory is not allowed for a command; the message names it and says why."""


def never_settable(name: str) -> bool:
    """True for a variable no request may set, whatever the host's policy says (the second line)."""
    upper = name.upper()
    return upper in _REFUSED_NAMES or upper.startswith(_REFUSED_PREFIXES)


@dataclass(frozen=True, slots=True)
class EnvPolicy:
    """What this host's policy file lets a controller choose: variable names (``env:``) and directories (``cwd:``).

    ``source`` names the policy file in refusals (None: the agent runs without ``--policy``).
    """

    env: frozenset[str] = frozenset()
    cwd: frozenset[str] = frozenset({FIXED_CWD})
    source: str | None = None

    @classmethod
    def parse(cls, env: object, cwd: object, *, source: str | None = None) -> EnvPolicy:
        """Validate the ``env:`` and ``cwd:`` values of a policy file (None: the key is absent).

        Raises ValueError naming the entry at fault: a name that is not a plain NAME, a pattern (``*``), a name
        no policy may permit (LD_PRELOAD, GIT_CONFIG_COUNT, …); a directory that is not absolute and normalised.
        """
        return cls(env=frozenset(_env_names(env)), cwd=frozenset({FIXED_CWD, *_directories(cwd)}), source=source)

    def where(self) -> str:
        return self.source if self.source is not None else "the policy file given with --policy"

    def env_text(self) -> str:
        return "[" + ", ".join(sorted(self.env)) + "]"

    def cwd_text(self) -> str:
        return "[" + ", ".join(sorted(self.cwd)) + "]"


def _env_names(raw: object) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError(f"'env' must be a list of variable names like [TERM], got {type(raw).__name__}")
    names: list[str] = []
    for index, item in enumerate(raw):
        if not isinstance(item, str):
            raise ValueError(f"env[{index}] must be a variable name like TERM, got {item!r}")
        if "*" in item:
            raise ValueError(f"env[{index}] {item!r}: patterns are not accepted; list each variable name exactly")
        if not _NAME.fullmatch(item):
            raise ValueError(f"env[{index}] {item!r} is not a plain NAME ([A-Za-z_][A-Za-z0-9_]*)")
        if never_settable(item):
            raise ValueError(f"env[{index}] {item}: {_CANNOT_PERMIT}; remove it from env:")
        names.append(item)
    return names


def _directories(raw: object) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError(f"'cwd' must be a list of absolute directories like [/srv/app], got {type(raw).__name__}")
    out: list[str] = []
    for index, item in enumerate(raw):
        if not isinstance(item, str):
            raise ValueError(f"cwd[{index}] must be an absolute directory like /srv/app, got {item!r}")
        if "\x00" in item or not item.startswith("/") or "//" in item or os.path.normpath(item) != item:
            raise ValueError(
                f"cwd[{index}] {item!r} must be an absolute, normalised directory (no '..', '.', '//' or trailing /)"
            )
        out.append(item)
    return out


# The policy of the running agent (set once by `teleops agent` at start). None: no agent policy is in force —
# the runner used as a library (its tests) — and only the second line (``never_settable``) applies.
_installed: EnvPolicy | None = None


def install_policy(policy: EnvPolicy | None) -> EnvPolicy | None:
    """Make ``policy`` the one every command of this process is checked against; returns the previous one."""
    global _installed
    previous, _installed = _installed, policy
    return previous


def installed_policy() -> EnvPolicy | None:
    return _installed


def _malformed(name: str, value: str) -> str | None:
    if not _NAME.fullmatch(name):
        return f"environment variable name {name!r} is not a plain NAME ([A-Za-z_][A-Za-z0-9_]*)"
    if "\x00" in value:
        return f"environment variable {name} contains a NUL byte"
    return None


def _not_permitted(requested: Iterable[str], policy: EnvPolicy) -> str:
    names = sorted(requested)
    fixable = [n for n in names if not never_settable(n)]
    hopeless = [n for n in names if never_settable(n)]
    if len(names) == 1:
        text = f"environment variable {names[0]} is not permitted by this host's policy (env: {policy.env_text()})"
        if fixable:
            return f"{text}; add it under env: in {policy.where()} if it is safe"
        return f"{text}; {_CANNOT_PERMIT}"
    text = (
        f"environment variables {', '.join(names)} are not permitted by this host's policy (env: {policy.env_text()})"
    )
    if fixable:
        text += f"; add {', '.join(fixable)} under env: in {policy.where()} if safe"
    if hopeless:
        text += f"; {', '.join(hopeless)} control what gets loaded or executed: no policy can permit them"
    return text


def build_environment(extra: Mapping[str, str], *, home: str, policy: EnvPolicy | None = None) -> dict[str, str]:
    """The full environment for a command: PATH, LANG=C.UTF-8, HOME, plus ``extra``.

    Nothing of the agent's own environment leaks in. Raises EnvironmentRefused (naming the variables) when
    ``extra`` names a variable ``policy`` does not list under ``env:``, tries to set a loader or interpreter
    variable such as LD_PRELOAD, GIT_CONFIG_COUNT or PATH (whatever the policy), or has a malformed name: such a
    request is refused as a whole, never silently trimmed. ``policy`` None skips only the first check.
    """
    for name, value in extra.items():
        problem = _malformed(name, value)
        if problem is not None:
            raise EnvironmentRefused(problem)
    if policy is not None:
        unlisted = [name for name in extra if name not in policy.env]
        if unlisted:
            raise EnvironmentRefused(_not_permitted(unlisted, policy))
    for name in extra:
        if never_settable(name):
            raise EnvironmentRefused(
                f"environment variable {name} may not be set for a command: it controls what gets loaded or "
                "executed (the agent fixes PATH and HOME itself)"
            )
    env = {"PATH": FIXED_PATH, "LANG": "C.UTF-8", "HOME": home}
    env.update(extra)
    return env


def check_cwd(cwd: str, policy: EnvPolicy | None) -> None:
    """Raise EnvironmentRefused unless ``cwd`` is ``/`` or a directory ``policy`` lists (exactly) under ``cwd:``.

    ``policy`` None (no agent policy in force) permits any directory; the runner still checks it exists.
    """
    if policy is None or cwd in policy.cwd:
        return
    raise EnvironmentRefused(
        f"working directory {cwd!r} is not permitted by this host's policy (cwd: {policy.cwd_text()}); "
        f"add it under cwd: in {policy.where()} if commands may run there"
    )
