"""The audit chain's anchor outside the database: `<data_dir>/audit-checkpoints.log`.

One line per checkpoint, ``SEQ HASH HMAC``, where HMAC = HMAC-SHA256(key, "SEQ HASH") with the key in
`<data_dir>/audit.key` (created 0600 on first use). The file is only ever appended to. A database attacker
who deletes an event and recomputes the whole chain cannot produce a matching line without the key, so
`teleops audit verify` sees the chain differ from the checkpoint.

When: the controller checkpoints the committed head after each dispatch, every few seconds while events
arrive, and on shutdown; the CLI commands that append (2FA enrolment, unlock) checkpoint before they exit.
A checkpoint is taken from the *committed* head, so it never names an event that was rolled back.

The file and its key sit in the data directory, so TeleOps' own OS user can rewrite both. With ``witness`` (the
socket of ``teleops audit witness``, run as another user) every line written here is also sent there, to a log
that user cannot touch (teleops/witness, docs/adr/0004-audit-witness.md). A witness that cannot be reached is
logged (``audit.witness_failed``) and does not stop the checkpoint: the next head sent covers every event before.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

import structlog

from teleops.store.audit import read_head
from teleops.store.database import Database
from teleops.witness.protocol import WitnessClient, Witnessed, WitnessError

__all__ = ["Checkpoint", "CheckpointError", "CheckpointLog"]

log = structlog.get_logger(__name__)

KEY_FILE = "audit.key"
LOG_FILE = "audit-checkpoints.log"


class CheckpointError(Exception):
    """The checkpoint file or its key is unusable (unreadable, or a line whose HMAC does not match)."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    line: int  # 1-based line number in the file
    seq: int
    hash: str


class CheckpointLog:
    """Appends and reads checkpoints under `data_dir`. Safe to share between tasks of one process."""

    def __init__(self, data_dir: Path, *, witness: Path | None = None) -> None:
        self.data_dir = data_dir
        self.witness = WitnessClient(witness) if witness is not None else None
        self.path = data_dir / LOG_FILE
        self.key_path = data_dir / KEY_FILE
        self._lock = threading.Lock()  # one append at a time
        self._last_seq: int | None = None
        self._wanted_lock = threading.Lock()
        self._wanted: tuple[int, str] | None = None  # the newest head any writer asked for

    def _key(self, *, create: bool) -> bytes:
        try:
            return bytes.fromhex(self.key_path.read_text(encoding="ascii").strip())
        except FileNotFoundError:
            if not create:
                raise CheckpointError(
                    f"no audit key at {self.key_path}; without it checkpoints cannot be checked. Restore it from "
                    "your backup (it is created by the first checkpoint)"
                ) from None
        except ValueError as exc:
            raise CheckpointError(f"{self.key_path} is not a hex key; restore it from your backup") from exc
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(32)
        try:
            # O_EXCL: two processes racing to create the key cannot both win with different keys.
            fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return self._key(create=False)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(key.hex() + "\n")
        return key

    def _mac(self, key: bytes, seq: int, digest: str) -> str:
        return hmac.new(key, f"{seq} {digest}".encode("ascii"), hashlib.sha256).hexdigest()

    def write(self, seq: int, digest: str) -> bool:
        """Append a checkpoint for (seq, hash) unless one as new is already written by this process.

        Writers that arrive while another one's fsync runs are folded: the next line written is the newest head
        any of them asked for (a head covers every event before it in the chain), so a burst of dispatches costs
        a couple of fsyncs, not one each. Returns True when this call wrote a line. Raises OSError when the file
        cannot be written.
        """
        with self._wanted_lock:
            if self._wanted is None or seq > self._wanted[0]:
                self._wanted = (seq, digest)
        with self._lock:
            if self._last_seq is not None and seq <= self._last_seq:
                return False  # a line for this head or a newer one is on disk already
            with self._wanted_lock:
                assert self._wanted is not None
                seq, digest = self._wanted
            key = self._key(create=True)
            line = f"{seq} {digest} {self._mac(key, seq, digest)}\n"
            # O_APPEND: each line lands whole at the end even with several writers (replicas on one host).
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, line.encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
            self._last_seq = seq
            if self.witness is not None:
                try:
                    self.witness.send(seq, digest)
                except WitnessError as exc:
                    log.error("audit.witness_failed", seq=seq, error=str(exc))
            return True

    async def checkpoint(self, db: Database) -> bool:
        """Checkpoint the committed chain head (no line for an empty log). Raises StorageUnavailable, OSError."""
        seq, digest = await db.run_in_transaction(read_head)
        if seq == 0:
            return False
        return self.write(seq, digest)

    def witnessed(self) -> list[Witnessed] | None:
        """The heads the witness recorded (None: no witness configured). Raises WitnessError."""
        return self.witness.read() if self.witness is not None else None

    def read(self) -> list[Checkpoint]:
        """All checkpoints, oldest first; [] when there is no file yet.

        Raises CheckpointError naming the first line that is malformed or whose HMAC does not match the key.
        """
        try:
            lines = self.path.read_text(encoding="ascii").splitlines()
        except FileNotFoundError:
            return []
        if not lines:
            return []
        key = self._key(create=False)
        found: list[Checkpoint] = []
        for number, line in enumerate(lines, start=1):
            parts = line.split()
            if len(parts) != 3 or not parts[0].isdigit():
                raise CheckpointError(f"{self.path} line {number} is malformed: {line[:80]!r}")
            seq, digest, mac = int(parts[0]), parts[1], parts[2]
            if not hmac.compare_digest(mac, self._mac(key, seq, digest)):
                raise CheckpointError(
                    f"{self.path} line {number} (seq {seq}) does not carry a valid HMAC: the checkpoint file was "
                    "edited or the key replaced"
                )
            found.append(Checkpoint(number, seq, digest))
        return found
