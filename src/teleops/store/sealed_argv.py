"""Command lines that carry secrets: what is stored and shown, and the original sealed until dispatch (T24).

A command line may carry a secret (`curl -H 'Authorization: Bearer …'`, `--password S3cret`, an agent's
`tlo_…` token). Everything that keeps or shows a command shows its *shown* argv: the commands table
(`commands.argv`), the incident timeline, the audit data, the approval request (`approvals.command_text`),
structlog lines, chat echoes ("running `…`"), the web UI and the API. It is the argv with each argument
redacted by the output rules (`Settings.redaction_rules()`: the built-in shapes including TeleOps' own tokens,
`redaction.patterns`, `redaction.secrets` in all their encodings) and the argument after a flag that names a
secret (`--password X`, `--token X`, `--api-key X`) masked as well, so the approver sees *that* a secret is
there (`[REDACTED]`) but not its value. The web console keeps a person's typed line masked the same way
(`shown_line`).

The agent must still receive the real argv, and a command waiting for approval is sent later, possibly after a
controller restart. So when anything was masked, the original argv and the typed text are sealed with Fernet
(AES-128-CBC + HMAC-SHA256) under a key kept outside the database, `<data_dir>/argv.key` (32 random bytes,
created 0600 on first use; replicas must share the file), into `commands.sealed_argv`. The seal is opened only
to re-check a vote or an approval against the original and to send the exec; it is wiped (set NULL) when the
command is dispatched or ends. A database dump alone therefore never shows the secret.

What the audit keeps to prove a record: `argv_hmac` in the audit data of a masked command, HMAC-SHA256 (under
a key derived from the same file) of the canonical JSON of the original argv. Whoever holds the key can check
that a claimed command line is the one that ran (`ArgvVault.proves`); the database alone cannot guess it. The
approval digest is computed over the original argv, so an approval binds what really runs.

Limits: a secret the rules do not recognise is stored as typed (`curl -u user:pass`, `mysql -pS3cret`:
configure the value in `redaction.secrets` or a pattern in `redaction.patterns`); a shape split over two
arguments (`Bearer` `tok`) is recognised only by the flag rule above. "Run again" of a masked command offers
the shown argv, which the agent would receive with `[REDACTED]` in it: type the command again instead. Losing
`argv.key` makes the masked commands still waiting for approval unrunnable (the first vote ends them `denied`,
saying so) and their `argv_hmac` unverifiable; nothing else depends on it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from teleops.domain.redaction import MASK, SecretRules, redact

__all__ = [
    "KEY_FILE",
    "ArgvVault",
    "OriginalCommand",
    "ProtectedArgv",
    "SealUnreadable",
    "original_command",
    "protect_argv",
]

KEY_FILE = "argv.key"

# A flag whose *next* argument is a secret (`--password X`, `--api-key X`); `--password=X` is a built-in shape.
_SECRET_FLAG = re.compile(
    r"(?i)^--?[a-z0-9_.-]*(?:password|passwd|passphrase|pwd|secret|token|api[_-]?key|access[_-]?key|credentials?)$"
)


class SealUnreadable(Exception):
    """The sealed argv cannot be opened (the key file is missing or another one, or the value was altered)."""


@dataclass(frozen=True, slots=True)
class OriginalCommand:
    """What the person really typed: the argv the agent receives and the text the policy re-checks."""

    argv: list[str]
    text: str | None


@dataclass(frozen=True, slots=True)
class ProtectedArgv:
    """A command line ready to store: `shown` (and `shown_text`) to keep and display, the original `sealed`
    (None when nothing was masked: then `shown` is the original) and its `argv_hmac` for the audit data."""

    shown: list[str]
    shown_text: str | None
    sealed: str | None
    argv_hmac: str | None

    def audit_fields(self) -> dict[str, str]:
        """What the audit data carry besides the shown argv: the keyed hash of the original, when masked."""
        return {} if self.argv_hmac is None else {"argv_hmac": self.argv_hmac}


class ArgvVault:
    """Redacts command lines for storage and seals the originals under a key outside the database."""

    def __init__(self, rules: SecretRules, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the argv key must be at least 32 bytes; delete the key file to have a new one made")
        self._rules = rules
        self._fernet = Fernet(base64.urlsafe_b64encode(hmac.digest(key, b"teleops argv seal", "sha256")))
        self._mac_key = hmac.digest(key, b"teleops argv hmac", "sha256")
        # What approvals are bound with (store/approvals.approval_digest): a database writer cannot recompute it.
        self.binding_key = hmac.digest(key, b"teleops approval binding", "sha256")

    @classmethod
    def open(cls, data_dir: Path, rules: SecretRules) -> ArgvVault:
        """The vault keyed by `<data_dir>/argv.key`, created (0600, exclusively) when missing.

        Raises OSError when the file can be neither read nor created, ValueError when it holds no valid key.
        """
        path = data_dir / KEY_FILE
        try:
            return cls(rules, bytes.fromhex(path.read_text().strip()))
        except FileNotFoundError:
            pass
        data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another replica (or process) made it just now: use theirs
            return cls(rules, bytes.fromhex(path.read_text().strip()))
        with os.fdopen(fd, "w") as handle:
            handle.write(key.hex() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return cls(rules, key)

    def shown(self, argv: Sequence[str]) -> list[str]:
        """`argv` with every secret masked (`[REDACTED]`), argument by argument."""
        out: list[str] = []
        after_flag = False
        for arg in argv:
            out.append(MASK if after_flag and arg and not arg.startswith("-") else redact(arg, self._rules))
            after_flag = bool(_SECRET_FLAG.match(arg))
        return out

    def protect(self, argv: Sequence[str], text: str | None = None) -> ProtectedArgv:
        """The shown form of `argv` (and of `text`, the typed line), with the original sealed if anything was masked."""
        shown = self.shown(argv)
        if shown == list(argv):
            return ProtectedArgv(list(argv), text, None, None)
        sealed = self._fernet.encrypt(json.dumps({"argv": list(argv), "text": text}).encode("utf-8"))
        shown_text = None if text is None else " ".join(_shown_word(arg) for arg in shown)
        return ProtectedArgv(shown, shown_text, sealed.decode("ascii"), self.argv_hmac(argv))

    def shown_line(self, text: str) -> str:
        """A typed chat line with its secrets masked, for keeping it (the web console's history): word by word as
        `shown`, or the whole line redacted when it does not split like a command line."""
        try:
            words = shlex.split(text)
        except ValueError:
            return redact(text, self._rules)
        shown = self.shown(words)
        return text if shown == words else " ".join(_shown_word(word) for word in shown)

    def open_sealed(self, sealed: str) -> OriginalCommand:
        """The original command sealed by `protect`. Raises SealUnreadable."""
        try:
            data = json.loads(self._fernet.decrypt(sealed.encode("ascii")))
        except (InvalidToken, ValueError) as exc:
            raise SealUnreadable(
                "the command's original argv cannot be opened: argv.key in the data directory is missing or is not "
                "the one it was sealed with; restore the key file, or ask for the command again"
            ) from exc
        return OriginalCommand([str(a) for a in data["argv"]], data.get("text"))

    def argv_hmac(self, argv: Sequence[str]) -> str:
        """`hmac-sha256:<hex>` of the canonical JSON of `argv` under this vault's key."""
        canonical = json.dumps(list(argv), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return "hmac-sha256:" + hmac.new(self._mac_key, canonical, hashlib.sha256).hexdigest()

    def proves(self, argv: Sequence[str], argv_hmac: str) -> bool:
        """Whether an audit record's `argv_hmac` is that of `argv` (constant-time)."""
        return hmac.compare_digest(self.argv_hmac(argv), argv_hmac)


def _shown_word(arg: str) -> str:
    """`arg` quoted for a shell, but a mask stays bare: `--key=[REDACTED]`, not `'--key=[REDACTED]'`."""
    plain = arg.replace(MASK, "X")
    return arg if plain and shlex.quote(plain) == plain else shlex.quote(arg)


def protect_argv(vault: ArgvVault | None, argv: Sequence[str], text: str | None = None) -> ProtectedArgv:
    """`vault.protect`, or the command as typed when no vault is in use (tools and tests without a data dir)."""
    if vault is None:
        return ProtectedArgv(list(argv), text, None, None)
    return vault.protect(argv, text)


def original_command(
    vault: ArgvVault | None, shown: Sequence[str], sealed: str | None, text: str | None = None
) -> OriginalCommand:
    """The original of a stored command: `shown` itself when nothing was sealed. Raises SealUnreadable when it
    was sealed and `vault` is None or cannot open it."""
    if sealed is None:
        return OriginalCommand(list(shown), text)
    if vault is None:
        raise SealUnreadable(
            "the command's original argv is sealed but no argv key is loaded here; run it from `teleops serve`"
        )
    return vault.open_sealed(sealed)
