"""What the controller and ``teleops audit verify`` say to the witness, and what its log holds.

One request per connection to the witness's Unix socket, one line each way::

    HEAD <seq> <64 hex>     →  "ok <newest seq witnessed>" or "refused <why>"
    READ                    →  the whole log, then the connection closes

The log (``witness.log``, owned by the witness's user, appended to and fsynced per line) holds one line per
witnessed head, oldest first: ``<seq> <hash> <unix time> <uid of the sender>``. Seqs only grow: a head that is not
newer than the last one is answered ``ok`` and not written (several replicas send heads of one chain, not in order).
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WitnessClient", "WitnessError", "Witnessed", "parse_log"]

_HASH = re.compile(r"[0-9a-f]{64}")
MAX_LOG_BYTES = 1 << 30  # what a reader accepts from the witness (a line is ~90 bytes: ten million heads)


class WitnessError(Exception):
    """The witness cannot be reached, refused a head, or its log is malformed; the message says which."""


@dataclass(frozen=True, slots=True)
class Witnessed:
    line: int  # 1-based line number in the witness's log
    seq: int
    hash: str
    at: int  # unix time the witness wrote it
    uid: int  # who sent it (SO_PEERCRED)


def parse_head(text: str) -> tuple[int, str] | None:
    """``HEAD <seq> <hash>`` → (seq, hash); None when malformed."""
    parts = text.split()
    if len(parts) != 3 or parts[0] != "HEAD" or not parts[1].isdigit() or not _HASH.fullmatch(parts[2]):
        return None
    seq = int(parts[1])
    return (seq, parts[2]) if 0 < seq < 1 << 63 else None


def parse_log(text: str, *, source: str) -> list[Witnessed]:
    """The witnessed heads in a log's text. Raises WitnessError naming the first malformed or out-of-order line."""
    heads: list[Witnessed] = []
    last = 0
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if (
            len(parts) != 4
            or not all(p.isdigit() for p in (parts[0], parts[2], parts[3]))
            or not _HASH.fullmatch(parts[1])
        ):
            raise WitnessError(f"{source} line {number} is malformed: {line[:100]!r}; the witness log was edited")
        seq = int(parts[0])
        if seq <= last:
            raise WitnessError(
                f"{source} line {number} witnesses seq {seq} after seq {last}: the witness log was edited"
            )
        last = seq
        heads.append(Witnessed(number, seq, parts[1], int(parts[2]), int(parts[3])))
    return heads


class WitnessClient:
    """Talks to the witness at ``socket_path`` (blocking; call from a worker thread)."""

    def __init__(self, socket_path: Path, *, timeout_s: float = 2.0) -> None:
        self.socket_path = socket_path
        self._timeout_s = timeout_s

    def _exchange(self, request: bytes, *, limit: int) -> bytes:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self._timeout_s)
                sock.connect(str(self.socket_path))
                sock.sendall(request)
                sock.shutdown(socket.SHUT_WR)
                chunks: list[bytes] = []
                size = 0
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > limit:
                        raise WitnessError(f"the witness at {self.socket_path} sent more than {limit} bytes")
                return b"".join(chunks)
        except OSError as exc:
            raise WitnessError(
                f"cannot reach the audit witness at {self.socket_path}: {exc.strerror or exc}; is `teleops audit "
                "witness` running, and may this user connect to its socket?"
            ) from exc

    def send(self, seq: int, digest: str) -> int:
        """Have the witness record the chain head (seq, digest); returns the newest seq it has witnessed.
        Raises WitnessError when it cannot be reached or refuses."""
        answer = self._exchange(f"HEAD {seq} {digest}\n".encode("ascii"), limit=4096).decode("ascii", "replace")
        words = answer.split(maxsplit=1)
        if len(words) == 2 and words[0] == "ok" and words[1].strip().isdigit():
            return int(words[1])
        raise WitnessError(f"the audit witness at {self.socket_path} refused head {seq}: {answer.strip()[:200]}")

    def read(self) -> list[Witnessed]:
        """Every head the witness has recorded, oldest first. Raises WitnessError."""
        text = self._exchange(b"READ\n", limit=MAX_LOG_BYTES).decode("ascii", "replace")
        return parse_log(text, source=f"the witness log (via {self.socket_path})")
