"""What a wildcard in a command pattern does not grant (docs/threat-model.md T11, T12). Pure; stdlib only.

A rule like ``find *`` or ``*`` lets the requester choose the arguments. Some arguments turn the program into
something else: code given in the command (``python3 -c``, ``perl -e``, an awk program, ``git -c
core.pager=…``) or another program started (``find -exec``, ``tar --to-command``, ``env sh``, ``nice reboot``).
`executing_argument` finds such an argument when a **wildcard** supplied it, using the `EXECUTORS` table; an
argument the rule spells out itself is the rule's intent and is allowed (``find /var/log -name *.gz -exec gzip
{} ;`` allows that ``-exec``; ``python3 -c *`` allows ``-c``; ``nice -n 10 uptime`` allows that program).

The principle, which is also what ``*`` grants (docs/access-control.md, "What * grants"):

- a wildcard may pick **any program file on the host** and any arguments for it, script files included
  (``python3 /opt/tools/report.py``, ``bash /usr/local/bin/backup.sh``, ``awk -f prog.awk``);
- it may not give a program **code to run** written into the command (``-c``/``-e``/``--eval``, an awk or sed
  program, a ``git -c`` value, ``ssh -o ProxyCommand=…``), nor make it **start another program**
  (wrappers such as ``env``, ``sudo``, ``xargs``, ``nice``, ``timeout`` whose program came from the wildcard;
  ``find -exec``, ``tar --use-compress-program``, ``rsync -e``, ``docker exec``…), nor set the environment of
  the program a wrapper starts (``env LD_PRELOAD=…``);
- ``find *`` is moreover not allowed to delete or write files (``-delete``, ``-fprintf``…): that rule is
  granted as a search.

Binaries not in the table are not inspected: a rule for them grants whatever their flags do. The table is a
curated list in the spirit of GTFOBins, not a proof; docs/access-control.md lists its limits.

`resolved_refusal` is the agent's half of path containment: it resolves path arguments on the host (symlinks,
``..`` inside a link) and requires the result to still fit the pattern.
"""

from __future__ import annotations

import enum
import fnmatch
import os.path
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from teleops.domain.patterns import (
    Match,
    is_glob,
    is_path_word,
    literal_prefix,
    match_argv,
    path_glob_matches,
    path_problem,
    split_path_word,
)

__all__ = [
    "EXECUTORS",
    "Executor",
    "Kind",
    "Verdict",
    "executing_argument",
    "judge",
    "program_name",
    "resolved_refusal",
]

_PATH_MAX = 4096  # Linux PATH_MAX: longer arguments cannot name a file, so they are not resolved
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_VERSION_SUFFIX = re.compile(r"[0-9.]+$")


class Kind(enum.Enum):
    OPTIONS = "options"  # a tool some of whose options/words run code or programs (find, tar, git)
    INTERPRETER = "interpreter"  # runs code: inline code flags are refused, a script file is a program on disk
    WRAPPER = "wrapper"  # runs its arguments as another program (env, nice, sudo, xargs)


@dataclass(frozen=True, slots=True)
class Executor:
    """How one program can be made to run code or other programs through its arguments."""

    kind: Kind
    flags: Mapping[str, str] = field(default_factory=dict)  # option → what it does ("runs a program per file")
    values: str = ""  # short options that take a value: the rest of a cluster, or the next token, is that value
    long_values: frozenset[str] = frozenset()  # long options whose value is the next token (wrappers' parsing)
    words: Mapping[str, str] = field(default_factory=dict)  # positional arguments (fnmatch) that run code
    sub_flags: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # flags after a subcommand word
    code: str = ""  # INTERPRETER: name of its first positional when that is code text ("awk program"), else ""
    script_flags: frozenset[str] = frozenset()  # options that give that code from a file (then no positional code)
    leading: int = 0  # WRAPPER: positional arguments before the program (timeout DURATION, flock FILE)
    leading_what: str = ""  # WRAPPER: when set, a wildcard may not supply those leading arguments either (chroot)
    joins_shell: bool = False  # WRAPPER: its program and arguments are run by ``sh -c`` (watch, sg, parallel)
    assignments: bool = False  # NAME=VALUE arguments set the environment of the program it runs (env, sudo, make)
    plus: str = ""  # what a ``+CMD`` argument does (vim, less); "" when it is not special
    clusters: bool = True  # short options may be grouped (``-avze``); False for find-style single-dash words
    dashdash: bool = True  # ``--`` ends its options (not for find, whose expression follows)
    permute: bool = False  # options may come after positional arguments (GNU getopt: tar, sed, git, rsync …)
    old_style: bool = False  # tar: a first argument without '-' is a cluster of options (``tar xIf …``)


_RUNS = "runs a program"
_SHELL_CODE = "runs a shell command line given in the command"
_CONFIG = "reads a configuration file that can name programs to run"


def _options(flags: Mapping[str, str], **kw: object) -> Executor:
    return Executor(Kind.OPTIONS, flags, permute=True, **kw)  # type: ignore[arg-type]


def _interpreter(flags: Mapping[str, str], **kw: object) -> Executor:
    return Executor(Kind.INTERPRETER, flags, **kw)  # type: ignore[arg-type]


def _wrapper(**kw: object) -> Executor:
    return Executor(Kind.WRAPPER, **kw)  # type: ignore[arg-type]


_SHELL = _interpreter({"-c": _SHELL_CODE}, values="oO")
_PYTHON = _interpreter({"-c": "runs Python code given in the command"}, values="cmWXQ")
_AWK = _interpreter(
    {"-e": "takes awk program text (gawk --source)", "--source": "takes awk program text"},
    code="awk program",
    script_flags=frozenset({"-f", "--file", "-E", "--exec"}),
    values="FfveEilW",
    long_values=frozenset({"--field-separator", "--assign", "--file", "--exec", "--include", "--load"}),
)
_TAR = _options(
    {
        "--to-command": "pipes each extracted file into a program",
        "--checkpoint-action": "runs a program at checkpoints (exec=…)",
        "--use-compress-program": "runs a program as the compressor",
        "-I": "runs a program as the compressor (--use-compress-program)",
        "--rmt-command": "runs a program as the remote tape server",
        "--rsh-command": "runs a program to reach a remote archive",
        "-F": "runs a script at the end of each volume (--info-script)",
        "--info-script": "runs a script at the end of each volume",
        "--new-volume-script": "runs a script at the end of each volume",
    },
    values="bCfgHKLNTVXIF",
    old_style=True,
)
_SSH_O = "sets options that run programs (ProxyCommand, LocalCommand, KnownHostsCommand, Match exec)"
_SUDO_LONG = frozenset(
    {
        "--user",
        "--group",
        "--host",
        "--prompt",
        "--chdir",
        "--close-from",
        "--role",
        "--type",
        "--other-user",
        "--login-class",
        "--command-timeout",
    }
)
_DOCKER_WORDS = {
    "exec": "runs a program in a container",
    "run": "starts a container running a program",
    "create": "creates a container to run a program",
    "build": "runs the build's RUN steps",
    "buildx": "runs the build's RUN steps",
    "compose": "starts containers from a compose file",
    "plugin": "installs or enables plugins (programs)",
}

# The table: program name (basename of argv[0], also after a version suffix: python3.11 → python) → how its
# arguments run code or programs. Module-level and documented in docs/access-control.md ("What * grants").
EXECUTORS: Mapping[str, Executor] = {
    # -- interpreters and shells: inline code only (a script file is a program on the host) ---------------
    **dict.fromkeys(("sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "csh", "tcsh", "rbash"), _SHELL),
    "fish": _interpreter(
        {"-c": _SHELL_CODE, "--command": _SHELL_CODE, "-C": _SHELL_CODE, "--init-command": _SHELL_CODE}
    ),
    **dict.fromkeys(("python", "python2", "python3", "pypy", "pypy3"), _PYTHON),
    "perl": _interpreter(
        {
            "-e": "runs Perl code given in the command",
            "-E": "runs Perl code given in the command",
            "-M": "runs 'use MODULE…' code given in the command (-M'X;system…')",
            "-m": "runs 'use MODULE…' code given in the command",
            "-d": "loads a debugger module given in the command (-d:MODULE)",
        },
        values="eEMmIixFDCd",
    ),
    "ruby": _interpreter({"-e": "runs Ruby code given in the command"}, values="erICEFixKTW"),
    **dict.fromkeys(
        ("node", "nodejs"),
        _interpreter(
            {
                "-e": "runs JavaScript given in the command",
                "--eval": "runs JavaScript given in the command",
                "-p": "runs JavaScript given in the command and prints it",
                "--print": "runs JavaScript given in the command and prints it",
                "--inspect": "opens a debugger port that runs code sent to it",
                "--inspect-brk": "opens a debugger port that runs code sent to it",
                "--inspect-wait": "opens a debugger port that runs code sent to it",
            },
            values="eprC",
        ),
    ),
    "php": _interpreter(
        {
            "-r": "runs PHP code given in the command",
            "-B": "runs PHP code given in the command",
            "-R": "runs PHP code given in the command",
            "-E": "runs PHP code given in the command",
        },
        values="cdfrBRFEztS",
    ),
    **dict.fromkeys(("lua", "luajit"), _interpreter({"-e": "runs Lua code given in the command"}, values="elj")),
    "Rscript": _interpreter({"-e": "runs R code given in the command"}, values="e"),
    "expect": _interpreter({"-c": "runs Tcl/expect commands given in the command"}, values="cfD"),
    "gdb": _interpreter(
        {
            "-ex": "runs a debugger command given in the command (shell, python…)",
            "-eval-command": "runs a debugger command given in the command",
            "--eval-command": "runs a debugger command given in the command",
            "-iex": "runs a debugger command given in the command",
            "-init-eval-command": "runs a debugger command given in the command",
            "--init-eval-command": "runs a debugger command given in the command",
            "-p": "takes control of a running process",
            "-pid": "takes control of a running process",
            "--pid": "takes control of a running process",
        },
        clusters=False,
    ),
    # -- programs whose first positional (or -e) is code text --------------------------------------------
    **dict.fromkeys(("awk", "gawk", "mawk", "nawk", "original-awk"), _AWK),
    "sed": _interpreter(
        {
            "-e": "takes sed script text (its e command runs a shell, w writes files)",
            "--expression": "takes sed script text (its e command runs a shell, w writes files)",
        },
        code="sed script",
        script_flags=frozenset({"-f", "--file"}),
        values="efli",
        long_values=frozenset({"--expression", "--file", "--line-length"}),
        permute=True,
    ),
    "ed": _options({}, words={"!*": "reads the output of a shell command"}),
    "crontab": _interpreter({}, code="crontab (its commands run later)", values="u"),
    # -- wrappers: their program (and for some, its environment or a shell line) -------------------------
    "env": _wrapper(
        flags={
            "-S": "splits a string into a program and its arguments",
            "--split-string": "splits a string into a program",
        },
        values="uCPS",
        long_values=frozenset({"--unset", "--chdir"}),
        assignments=True,
    ),
    "sudo": _wrapper(
        flags={
            "-s": "runs a shell",
            "--shell": "runs a shell",
            "-i": "runs a login shell",
            "--login": "runs a login shell",
            "-e": "edits files as another user",
            "--edit": "edits files as another user",
        },
        values="CDghpRrTtUu",
        long_values=_SUDO_LONG,
        assignments=True,
    ),
    "doas": _wrapper(flags={"-s": "runs a shell"}, values="uC"),
    "pkexec": _wrapper(long_values=frozenset({"--user"})),
    "su": _interpreter(
        {
            "-c": "runs a command line through the user's shell",
            "--command": "runs a command line through the user's shell",
            "--session-command": "runs a command line through the user's shell",
            "-s": "chooses the shell to run",
            "--shell": "chooses the shell to run",
        },
        values="gGcs",
    ),
    "runuser": _wrapper(
        flags={
            "-c": "runs a command line through the user's shell",
            "--command": "runs a command line through the user's shell",
            "--session-command": "runs a command line through the user's shell",
            "-s": "chooses the shell to run",
            "--shell": "chooses the shell to run",
        },
        values="ugGwcs",
        long_values=frozenset({"--user", "--group", "--supp-group", "--whitelist-environment"}),
    ),
    "xargs": _wrapper(
        values="adEILnPs",
        long_values=frozenset(
            {"--arg-file", "--delimiter", "--max-args", "--max-procs", "--max-chars", "--process-slot-var"}
        ),
    ),
    "nice": _wrapper(values="n", long_values=frozenset({"--adjustment"})),
    "nohup": _wrapper(),
    "timeout": _wrapper(leading=1, values="ks", long_values=frozenset({"--kill-after", "--signal"})),
    "stdbuf": _wrapper(values="ioe", long_values=frozenset({"--input", "--output", "--error"})),
    "setsid": _wrapper(),
    "chroot": _wrapper(leading=1, leading_what="the directory whose programs chroot runs"),
    "setarch": _wrapper(leading=1),
    "ionice": _wrapper(values="cnpPu", long_values=frozenset({"--class", "--classdata", "--pid", "--pgid", "--uid"})),
    "chrt": _wrapper(leading=1),
    "taskset": _wrapper(leading=1),
    "numactl": _wrapper(values="CNmlpiP"),
    "prlimit": _wrapper(values="p", long_values=frozenset({"--pid"})),
    "unshare": _wrapper(values="SGRw"),
    "nsenter": _wrapper(values="tSGwWeZ", long_values=frozenset({"--target", "--setuid", "--setgid"})),
    "systemd-run": _wrapper(
        values="pEuMHsG",
        long_values=frozenset(
            {"--property", "--setenv", "--unit", "--machine", "--host", "--slice", "--description", "--uid", "--gid"}
        ),
    ),
    "flock": _wrapper(
        flags={"-c": _SHELL_CODE, "--command": _SHELL_CODE},
        leading=1,
        values="wEc",
        long_values=frozenset({"--wait", "--timeout", "--conflict-exit-code"}),
    ),
    "watch": _wrapper(values="nq", long_values=frozenset({"--interval"}), joins_shell=True),
    "sg": _wrapper(leading=1, joins_shell=True),
    "parallel": _wrapper(values="jaSIdE", joins_shell=True),
    "time": _wrapper(values="fo", long_values=frozenset({"--format", "--output"})),
    "strace": _wrapper(flags={"-o": "writes its trace into a program when given '|cmd'"}, values="abeEIOopPsSuUX"),
    "ltrace": _wrapper(flags={"-o": "writes its trace into a file or program"}, values="aAeEnopsSuXLFx"),
    "valgrind": _wrapper(),
    "busybox": _wrapper(),
    "toybox": _wrapper(),
    "npx": _wrapper(values="pc"),
    "screen": _wrapper(
        flags={"-X": "sends a command (exec …) to a running screen", "-c": _CONFIG},
        values="ehpSsTXc",
    ),
    "ssh-agent": _wrapper(values="aEPt"),
    "start-stop-daemon": _options(
        {
            "-x": "starts a program",
            "--exec": "starts a program",
            "-a": "starts a program",
            "--startas": "starts a program",
        }
    ),
    # -- tools with options that run programs or code -----------------------------------------------------
    **dict.fromkeys(
        ("find", "gfind"),
        _options(
            {
                "-exec": "runs a program for each file",
                "-execdir": "runs a program for each file",
                "-ok": "runs a program for each file",
                "-okdir": "runs a program for each file",
                "-delete": "deletes the files it finds (find * is granted as a search)",
                "-fprint": "writes a file (find * is granted as a search)",
                "-fprint0": "writes a file (find * is granted as a search)",
                "-fprintf": "writes a file with content of the caller's choosing",
                "-fls": "writes a file (find * is granted as a search)",
            },
            clusters=False,
            dashdash=False,
        ),
    ),
    **dict.fromkeys(("tar", "gtar", "bsdtar"), _TAR),
    "git": _options(
        {
            "-c": "sets configuration that runs programs (core.pager, core.sshCommand, alias.x=!…)",
            "--config-env": "sets configuration that runs programs",
            "--exec-path": "runs git's helper programs from another directory",
            "--upload-pack": "runs a program in place of git-upload-pack",
            "--receive-pack": "runs a program in place of git-receive-pack",
            "--exec": "runs a program in place of the remote helper (archive, push)",
            "--extcmd": "runs a program to show each diff (difftool)",
            "--open-files-in-pager": "runs a program as pager (grep -O)",
            "--template": "installs hooks (programs git runs) from a directory",
            "--sendmail-cmd": "runs a program to send mail",
            "--smtp-server": "runs a program when given a path (send-email)",
            "--to-cmd": "runs a program to compute recipients",
            "--cc-cmd": "runs a program to compute recipients",
        },
        values="mSGFCMUBLlnOoe",
        words={
            "ext::*": "runs a program as the transport (ext:: URL)",
            "filter-branch": "runs shell code for each commit",
            "foreach": "runs shell code in each submodule (submodule foreach)",
            "config": "writes configuration that runs programs later (core.pager, core.fsmonitor, alias.*=!…)",
        },
        sub_flags={
            "clone": {"-u": "runs a program in place of git-upload-pack"},
            "ls-remote": {"-u": "runs a program in place of git-upload-pack"},
            "rebase": {"-x": "runs shell code after each commit"},
            "difftool": {"-x": "runs a program to show each diff"},
            "grep": {"-O": "runs a program as pager"},
            "bisect": {"run": "runs a program to test each commit"},
        },
    ),
    "rsync": _options(
        {
            "-e": "runs a program as the remote shell",
            "--rsh": "runs a program as the remote shell",
            "--rsync-path": "runs a program as the remote rsync",
            "-M": "passes options to the remote rsync (--remote-option)",
            "--remote-option": "passes options to the remote rsync",
        },
        values="BfTeM",
    ),
    "ssh": _options(
        {"-o": _SSH_O, "-F": _CONFIG, "-I": "loads a PKCS#11 library (code)"}, values="BbcDEeiJLlmOpQRSWwoFI"
    ),
    "scp": _options({"-S": "runs a program in place of ssh", "-o": _SSH_O, "-F": _CONFIG}, values="cDiJlPXSoF"),
    "sftp": _options(
        {
            "-S": "runs a program in place of ssh",
            "-D": "runs a program in place of the sftp server",
            "-b": "runs batch commands, which may start a local shell (!)",
            "-o": _SSH_O,
            "-F": _CONFIG,
        },
        values="BciJlPRXSDboF",
    ),
    "man": _options(
        {
            "-P": "runs a program as pager",
            "--pager": "runs a program as pager",
            "-H": "runs a program as browser",
            "--html": "runs a program as browser",
            "-C": _CONFIG,
            "--config-file": _CONFIG,
        },
        values="LmMSsErRTeKpPC",
    ),
    "less": _options(
        {"-k": _CONFIG, "--lesskey-file": _CONFIG, "--lesskey-src": _CONFIG},
        values="bhjoOpPtTxyz#k",
        plus="runs less commands at start",
    ),
    **dict.fromkeys(
        ("vim", "vi", "nvim", "view", "ex", "rvim"),
        _options(
            {"-c": "runs an editor command (:!sh …)", "--cmd": "runs an editor command (:!sh …)"},
            values="ioqrSTtuUVwWc",
            plus="runs an editor command (:!sh …)",
        ),
    ),
    "emacs": _options(
        {
            "--eval": "evaluates Lisp given in the command",
            "-f": "calls a Lisp function named in the command",
            "--funcall": "calls a Lisp function named in the command",
        },
        clusters=False,
    ),
    "zip": _options(
        {
            "-T": "tests the archive by running unzip (or -TT's program)",
            "-TT": "runs a program to test the archive",
            "--unzip-command": "runs a program to test the archive",
        },
        values="bnt",
    ),
    "dpkg": _options(
        {
            "-i": "installs a package file, running its maintainer scripts",
            "--install": "installs a package file, running its maintainer scripts",
            "--unpack": "unpacks a package file, running its maintainer scripts",
            "--pre-invoke": _SHELL_CODE,
            "--post-invoke": _SHELL_CODE,
            "--status-logger": _SHELL_CODE,
        }
    ),
    **dict.fromkeys(
        ("apt", "apt-get", "aptitude"),
        _options(
            {
                "-o": "sets options such as APT::Update::Pre-Invoke that run commands",
                "--option": "sets options such as APT::Update::Pre-Invoke that run commands",
                "-c": _CONFIG,
                "--config-file": _CONFIG,
            },
            values="toc",
            words={"*.deb": "installs a package file, running its maintainer scripts"},
        ),
    ),
    "rpm": _options(
        {
            "--eval": "expands macros given in the command (%(shell …))",
            "-E": "expands macros given in the command (%(shell …))",
            "--define": "defines macros given in the command",
            "-D": "defines macros given in the command",
            "--pipe": "pipes its output into a shell command",
            "-i": "installs a package file, running its scriptlets",
            "--install": "installs a package file, running its scriptlets",
            "-U": "installs a package file, running its scriptlets",
            "--upgrade": "installs a package file, running its scriptlets",
            "--macros": _CONFIG,
            "--rcfile": _CONFIG,
        }
    ),
    **dict.fromkeys(("docker", "podman", "nerdctl"), _options({}, values="cHl", words=_DOCKER_WORDS)),
    **dict.fromkeys(
        ("kubectl", "oc"),
        _options(
            {"--kubeconfig": "reads a kubeconfig whose exec plugins run programs"},
            values="cfln",
            words={
                "exec": "runs a program in a pod",
                "run": "starts a pod running a program",
                "debug": "starts a debugging container",
                "attach": "attaches to a running program",
                "cp": "copies files into pods",
                "apply": "creates or changes workloads",
                "create": "creates workloads",
                "replace": "changes workloads",
                "patch": "changes workloads",
            },
        ),
    ),
    **dict.fromkeys(
        ("mysql", "mariadb"),
        _options(
            {
                "-e": "runs SQL given in the command (\\! runs a shell)",
                "--execute": "runs SQL given in the command (\\! runs a shell)",
                "--init-command": "runs SQL given in the command",
                "--pager": "runs a program as pager",
                "--system-command": "allows \\! shell commands",
                "--plugin-dir": "loads plugins (code) from a directory",
                "--default-auth": "loads an authentication plugin (code)",
                "--defaults-file": _CONFIG,
                "--defaults-extra-file": _CONFIG,
            },
            values="DhPpSuAe",
        ),
    ),
    "psql": _options(
        {
            "-c": "runs SQL and psql commands given in the command (\\! runs a shell)",
            "--command": "runs SQL and psql commands given in the command (\\! runs a shell)",
            "-o": "writes output into a program when given '|cmd'",
            "--output": "writes output into a program when given '|cmd'",
        },
        values="dfhLpPTUvFco",
    ),
    **dict.fromkeys(("at", "batch"), _options({"-f": "schedules the commands of a file"}, values="qtmf")),
    "tcpdump": _options(
        {"-z": "runs a program on each capture file it rotates (as the user of -Z)"},
        values="BcCDEFGiMmrsTVwWyZjz",
    ),
    "openssl": _options(
        {
            "-engine": "loads an engine (code)",
            "-provider": "loads a provider (code)",
            "-provider-path": "loads providers (code) from a directory",
        },
        clusters=False,
        words={"engine": "loads engines (code)"},
    ),
    "nmap": _options(
        {"--script": "runs NSE (Lua) scripts", "--interactive": "opens a prompt that runs shell commands (!)"},
        clusters=False,
    ),
    "make": _options(
        {
            "--eval": "evaluates make code given in the command ($(shell …))",
            "-E": "evaluates make code given in the command",
        },
        values="CfIjlOoWE",
        assignments=True,
    ),
    "npm": _options({}, words={"exec": "downloads and runs a package", "x": "downloads and runs a package"}),
    "tmux": _options(
        {"-f": _CONFIG},
        values="cLSlT",
        words={
            name: "runs a shell command or types into a shell"
            for name in (
                "new-session",
                "new",
                "new-window",
                "neww",
                "split-window",
                "splitw",
                "run-shell",
                "run",
                "respawn-pane",
                "respawnp",
                "respawn-window",
                "respawnw",
                "pipe-pane",
                "pipep",
                "if-shell",
                "if",
                "display-popup",
                "popup",
                "send-keys",
                "send",
                "source-file",
                "source",
            )
        },
    ),
}


def program_name(token: str) -> str | None:
    """The `EXECUTORS` key for an argv word naming a program (``/usr/bin/python3.11`` → ``python``), or None."""
    base = token.rsplit("/", 1)[-1]
    if base in EXECUTORS:
        return base
    stripped = _VERSION_SUFFIX.sub("", base)
    if stripped and stripped != base and stripped in EXECUTORS:
        return stripped
    return None


def _flag_in(token: str, spec: Executor, flags: Mapping[str, str]) -> tuple[str, str] | None:
    """The option of `flags` that `token` carries for this program, as (canonical flag, what it does)."""
    if token.startswith("--"):
        name = token.split("=", 1)[0]
        for flag, what in flags.items():
            # GNU getopt_long takes any unambiguous prefix: --to-com=… is --to-command=…
            if flag.startswith("--") and (name == flag or (len(name) > 3 and flag.startswith(name))):
                return flag, what
        return None
    name = re.split("[=:]", token, maxsplit=1)[0]
    for flag, what in flags.items():
        if len(flag) > 2 and not flag.startswith("--") and (name == flag or (len(name) >= 3 and flag.startswith(name))):
            return flag, what
    if spec.clusters:
        # The leftmost short flag of the cluster, up to the first option taking the rest as its value. With
        # str.find (C speed): an argv may hold thousands of 64 KiB tokens from a hostile controller.
        body = token[1:]
        stop = _value_start(body, spec)
        found: tuple[int, str] | None = None
        for flag in flags:
            if len(flag) == 2 and flag[0] == "-":
                at = body.find(flag[1], 0, stop + 1)
                if at >= 0 and (found is None or at < found[0]):
                    found = (at, flag)
        if found is not None:
            return found[1], flags[found[1]]
    elif token in flags:
        return token, flags[token]
    return None


def _takes_next(token: str, spec: Executor) -> bool:
    """True when the option `token` takes the next argv token as its value."""
    if token.startswith("--"):
        return "=" not in token and token in spec.long_values
    if spec.clusters:
        body = token[1:]
        return _value_start(body, spec) == len(body) - 1
    return token in spec.long_values


def _value_start(body: str, spec: Executor) -> int:
    """Index in a short-option cluster (without its '-') of the first option that takes a value, or len(body)."""
    starts = [at for at in (body.find(char) for char in spec.values) if at >= 0]
    return min(starts, default=len(body))


def _names(slot: str | None, flag: str) -> bool:
    """True when the pattern token that matched an argument spells `flag` out (the rule's own intent)."""
    if slot is None:
        return False
    prefix = literal_prefix(slot)
    if prefix == slot:
        return True  # a literal pattern token
    if len(flag) == 2 and not flag.startswith("--"):
        return prefix.startswith(flag)  # -o* / -oConnectTimeout=* name -o
    return prefix == flag or prefix.startswith((flag + "=", flag + ":"))


def _literal(match: Match, index: int) -> bool:
    return not match.wild(index)


def _say(argv: Sequence[str], index: int, text: str, fix: str) -> str:
    return f"argument {index} {argv[index]!r} {text}: a wildcard in the rule does not grant that; {fix}"


def _examine(argv: Sequence[str], match: Match, start: int, end: int) -> tuple[str | None, int | None]:
    """Look at the program argv[start] with its arguments up to `end`. Returns (refusal, program index) where
    the program index is the argument a wrapper runs (None otherwise)."""
    key = program_name(argv[start])
    if key is None:
        return None, None
    spec = EXECUTORS[key]
    name = argv[start].rsplit("/", 1)[-1]
    index = start + 1
    options_open = True
    code_given = False
    positionals = 0
    extra: Mapping[str, str] = {}
    while index < end:
        arg = argv[index]
        wild = match.wild(index)
        slot = match.slots[index]
        if options_open and arg == "--" and spec.dashdash:
            options_open = False
            index += 1
            continue
        old_style = spec.old_style and index == start + 1 and not arg.startswith("-")
        if options_open and ((arg.startswith("-") and arg != "-") or old_style):
            option = "-" + arg if old_style else arg
            found = _flag_in(option, spec, {**spec.flags, **extra})
            if found is not None:
                flag, what = found
                if wild and not _names(slot, flag):
                    return _say(argv, index, f"is {name} {flag}, which {what}", f"a rule must spell out {flag!r}"), None
                if spec.kind is Kind.INTERPRETER and not spec.permute:
                    return None, None  # the rule names the code flag: what follows is that code and its arguments
                code_given = True
            if spec.script_flags and _flag_in(option, spec, dict.fromkeys(spec.script_flags, "")) is not None:
                code_given = True
            index += 2 if (not old_style and _takes_next(arg, spec)) else 1
            continue
        if options_open and spec.plus and arg.startswith("+") and len(arg) > 1:
            if wild:
                return _say(argv, index, f"is a {name} +command, which {spec.plus}", "a rule must spell it out"), None
            index += 1
            continue
        if options_open and spec.assignments and _ASSIGNMENT.match(arg) and positionals == 0:
            variable = arg.split("=", 1)[0]
            if wild and not _names(slot, variable):
                return (
                    _say(
                        argv,
                        index,
                        f"sets {variable} for what {name} runs (variables like LD_PRELOAD, BASH_ENV or SHELL run code)",
                        "a rule must spell out the assignment",
                    ),
                    None,
                )
            index += 1
            continue
        # a positional argument
        if options_open:
            for word, what in spec.words.items():
                if fnmatch.fnmatchcase(arg, word) and wild:
                    return _say(argv, index, f"is {name} {word}, which {what}", "a rule must spell it out"), None
            if positionals == 0 and arg in spec.sub_flags:
                extra = spec.sub_flags[arg]
            if arg in extra and wild and not arg.startswith("-"):
                return _say(argv, index, f"is {name} {arg}, which {extra[arg]}", "a rule must spell it out"), None
        if spec.kind is Kind.WRAPPER:
            if positionals < spec.leading:
                if spec.leading_what and wild:
                    return _say(argv, index, f"is {spec.leading_what}", "a rule must name it"), None
                positionals += 1
                index += 1
                continue
            if wild:
                return _say(argv, index, f"is the program {name} would run", "a rule must name the program"), None
            if spec.joins_shell:
                for later in range(index + 1, end):
                    if match.wild(later):
                        return _say(
                            argv,
                            later,
                            f"is part of the command line {name} runs through sh -c",
                            "a rule must spell it out",
                        ), None
            return None, index
        if spec.kind is Kind.INTERPRETER:
            if spec.code and not code_given and wild:
                return _say(argv, index, f"is the {spec.code} {name} would run", "a rule must spell it out"), None
            code_given = True
            if not spec.permute:
                return None, None  # the rest are arguments of the script or code
        positionals += 1
        index += 1
    if spec.kind is Kind.WRAPPER and index == end < len(argv) and positionals >= spec.leading and match.wild(end):
        # The next program of the table starts where this wrapper's own arguments end: it is what the wrapper runs.
        return _say(argv, end, f"is the program {name} would run", "a rule must name the program"), None
    return None, None


def executing_argument(argv: Sequence[str], match: Match) -> str | None:
    """Why argv, which fits a pattern as `match` says, still may not run under it: an argument supplied by a
    wildcard gives the program code to run or another program to start (see `EXECUTORS`). None when there is
    no such argument. A wrapper's program is examined in turn (``nice -n 5 find / *`` still refuses a
    wildcard ``-exec``), and so is every later argument naming a program in the table (fail closed)."""
    if not argv:
        return None
    refusal, program = _examine(argv, match, 0, len(argv))
    if refusal is not None or program is None:
        return refusal
    # Inside a wrapper's program and arguments, each word naming a program in the table starts a context that
    # runs until the next one (linear in len(argv), whatever the nesting).
    starts = [index for index in range(program, len(argv)) if program_name(argv[index]) is not None]
    for position, begin in enumerate(starts):
        end = starts[position + 1] if position + 1 < len(starts) else len(argv)
        refusal, _ = _examine(argv, match, begin, end)
        if refusal is not None:
            return refusal
    return None


@dataclass(frozen=True, slots=True)
class Verdict:
    """One pattern against one argv: whether it fits and, when it fits, why it must still not run (or None)."""

    fits: bool
    refusal: str | None = None
    match: Match | None = None

    @property
    def allowed(self) -> bool:
        return self.fits and self.refusal is None


def judge(pattern: Sequence[str], argv: Sequence[str], *, code: bool = True) -> Verdict:
    """The one check the policy and the agent share: does argv fit the pattern (`teleops.domain.patterns`),
    are its path arguments plain paths inside the pattern's path words, and (unless ``code=False``, for a
    rule that grants a shell anyway) did no wildcard supply an executing argument."""
    found = match_argv(pattern, argv)
    if found is None:
        return Verdict(False)
    if found.problem is not None:
        return Verdict(True, found.problem, found)
    if code:
        refusal = executing_argument(argv, found)
        if refusal is not None:
            return Verdict(True, refusal, found)
    return Verdict(True, None, found)


def _resolved_word(pattern_path: str, realpath: Callable[[str], str]) -> str:
    """The path word with its fixed directory resolved on this host (/var/run/*.pid → /run/*.pid)."""
    segments = pattern_path.split("/")
    cut = next((i for i, segment in enumerate(segments) if is_glob(segment)), len(segments))
    fixed = "/".join(segments[:cut])
    if not fixed:
        return pattern_path
    resolved = realpath(fixed).rstrip("/")
    return "/".join([resolved, *segments[cut:]])


def resolved_refusal(
    argv: Sequence[str],
    match: Match,
    *,
    realpath: Callable[[str], str] = os.path.realpath,
    cwd: str | None = None,
) -> str | None:
    """The agent's containment check, run on the host just before the command starts: every argument a path
    word matched is resolved (``realpath``: symlinks, ``..`` inside links) and must still fit the word, whose
    own fixed directory is resolved the same way. A relative path is resolved against `cwd`; without one it is
    refused (the host cannot tell where it leads).

    TOCTOU: this checks the file system as it is now. Whoever can change a symlink under the pattern's
    directory between this check and the program's open() can still swap it; the check closes links that are
    already there, not a race. Hard links and bind mounts are not seen by realpath either.
    """
    for index, slot in enumerate(match.slots):
        if slot is None or not is_path_word(slot):
            continue
        head, pattern_path = split_path_word(slot)
        value = argv[index][len(head) :] if head else argv[index]
        if len(value) > _PATH_MAX:
            return f"argument {index} is longer than a path on this host can be ({_PATH_MAX} bytes)"
        if not value.startswith("/"):
            if cwd is None:
                return (
                    f"argument {index} {argv[index]!r} is a relative path; this host cannot check where it leads "
                    "without the working directory: write the rule with an absolute path"
                )
            value = posixpath.join(cwd, value)
            pattern_path = posixpath.join(cwd, pattern_path)
        try:
            resolved = realpath(value)
            word = _resolved_word(pattern_path, realpath)
        except (OSError, ValueError) as exc:
            return f"argument {index} {argv[index]!r} cannot be resolved on this host: {exc}"
        problem = path_problem(resolved)
        if problem is not None or not path_glob_matches(word, resolved):
            why = f" ({problem})" if problem is not None else ""
            return f"argument {index} {argv[index]!r} resolves to {resolved!r}, outside {pattern_path}{why}"
    return None
