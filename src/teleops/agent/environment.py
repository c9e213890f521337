"""The clean environment a command runs with: a fixed base plus the caller's extra variables, minus dangerous ones."""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["FIXED_PATH", "EnvironmentRefused", "build_environment"]

FIXED_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Variables that change what gets loaded or executed, or how a shell/interpreter starts: a caller who may set
# them may run code of their choosing. Most come from glibc's list of variables it ignores for setuid programs.
_REFUSED_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "IFS",
        "ENV",
        "BASH_ENV",
        "SHELLOPTS",
        "BASHOPTS",
        "PS4",
        "PROMPT_COMMAND",
        "CDPATH",
        "GLOBIGNORE",
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
        "PERL5LIB",
        "PERLLIB",
        "PERL5OPT",
        "RUBYLIB",
        "RUBYOPT",
        "NODE_OPTIONS",
        "NODE_PATH",
        "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "GIT_EXEC_PATH",
        "GIT_SSH",
        "GIT_SSH_COMMAND",
        "EDITOR",
        "VISUAL",
        "PAGER",
        "SYSTEMD_PAGER",
        "LESSOPEN",
        "LESSCLOSE",
    }
)
_REFUSED_PREFIXES = ("LD_", "DYLD_", "BASH_FUNC_", "MALLOC_", "PYTHON")


class EnvironmentRefused(ValueError):
    """A requested variable may not be set for a command; the message names it and says why."""


def _refusal(name: str, value: str) -> str | None:
    if not _NAME.fullmatch(name):
        return f"environment variable name {name!r} is not a plain NAME ([A-Za-z_][A-Za-z0-9_]*)"
    if "\x00" in value:
        return f"environment variable {name} contains a NUL byte"
    upper = name.upper()
    if upper in _REFUSED_NAMES or upper.startswith(_REFUSED_PREFIXES):
        return (
            f"environment variable {name} may not be set for a command: it controls what gets loaded or executed "
            "(the agent fixes PATH and HOME itself)"
        )
    return None


def build_environment(extra: Mapping[str, str], *, home: str) -> dict[str, str]:
    """The full environment for a command: PATH, LANG=C.UTF-8, HOME, plus ``extra``.

    Nothing of the agent's own environment leaks in. Raises EnvironmentRefused (naming the variable) when
    ``extra`` tries to set a loader or interpreter variable such as LD_PRELOAD or PATH, or a malformed name:
    such a request is refused as a whole, never silently trimmed.
    """
    for name, value in extra.items():
        problem = _refusal(name, value)
        if problem is not None:
            raise EnvironmentRefused(problem)
    env = {"PATH": FIXED_PATH, "LANG": "C.UTF-8", "HOME": home}
    env.update(extra)
    return env
