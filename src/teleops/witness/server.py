"""``teleops audit witness``: append the audit chain heads the controller sends to a log only this user writes.

Run it as a user of its own (not the controller's: it refuses to start as a user it accepts heads from), with
its log in a directory that user owns and nobody else may write. Then neither the controller's OS user nor a
database writer can remove or rewrite what was witnessed, and ``teleops audit verify`` catches a re-chained,
truncated or rolled-back log up to the newest witnessed head (docs/adr/0004-audit-witness.md).

Who may send: ``allowed_uids`` (SO_PEERCRED), else anyone who can open the socket (set its directory's mode).
Anyone who can connect may READ: the log holds hashes and seqs, nothing secret.
"""

from __future__ import annotations

import asyncio
import codecs
import concurrent.futures.thread  # noqa: F401 — asyncio.to_thread loads it lazily; `--user` drops access first
import contextlib
import os
import socket
import stat
import struct
import time
from collections.abc import Collection
from pathlib import Path

import structlog

from teleops.witness.protocol import parse_head, parse_log

__all__ = ["Witness", "WitnessSetupError", "preload", "run_witness"]

log = structlog.get_logger(__name__)

_MAX_REQUEST = 256
_REQUEST_TIMEOUT_S = 5.0


class WitnessSetupError(Exception):
    """The witness cannot start as asked; the message says what to fix."""


def preload() -> None:
    """Load what Python loads lazily (codecs), for a witness about to drop to a user who cannot read the
    interpreter's files (``--user``, started as root)."""
    for codec in ("ascii", "utf-8", "latin-1", "idna"):
        codecs.lookup(codec)


def _peer_uid(writer: asyncio.StreamWriter) -> int:
    sock: socket.socket | None = writer.get_extra_info("socket")
    if sock is None:
        return -1
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


class Witness:
    """The witness's state: its log file and the newest seq in it."""

    def __init__(self, log_path: Path, *, allowed_uids: Collection[int] = ()) -> None:
        self.log_path = log_path
        self._allowed = frozenset(allowed_uids)
        self._lock = asyncio.Lock()
        if os.geteuid() in self._allowed:
            raise WitnessSetupError(
                f"the witness runs as uid {os.geteuid()}, which it also accepts heads from: that user could rewrite "
                "the witness log. Run it as a user of its own (useradd --system teleops-witness)"
            )
        directory = log_path.parent
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        info = directory.stat()
        if info.st_uid != os.geteuid() or stat.S_IMODE(info.st_mode) & 0o022:
            raise WitnessSetupError(
                f"{directory} must belong to the witness's user (uid {os.geteuid()}) and be writable by nobody else; "
                f"run: chown {os.geteuid()} {directory} && chmod go-w {directory}"
            )
        try:
            text = log_path.read_text(encoding="ascii")
        except FileNotFoundError:
            text = ""
        heads = parse_log(text, source=str(log_path))  # a log edited behind our back: refuse to go on with it
        self.last_seq = heads[-1].seq if heads else 0

    def _append(self, line: str) -> None:
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT_S):
                request = (await reader.readline())[:_MAX_REQUEST].decode("ascii", "replace").strip()
            uid = _peer_uid(writer)
            if request == "READ":
                writer.write(await asyncio.to_thread(self._read_bytes))
            else:
                writer.write((await self._head(request, uid) + "\n").encode("ascii"))
            await writer.drain()
        except (TimeoutError, OSError, UnicodeError) as exc:
            log.info("witness.request_failed", error=str(exc) or type(exc).__name__)
        except Exception:  # answer nothing rather than die: the sender logs an empty answer as a refusal
            log.exception("witness.request_crashed")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _read_bytes(self) -> bytes:
        try:
            return self.log_path.read_bytes()
        except FileNotFoundError:
            return b""

    async def _head(self, request: str, uid: int) -> str:
        if self._allowed and uid not in self._allowed:
            log.warning("witness.sender_refused", uid=uid)
            return f"refused uid {uid} may not send heads to this witness"
        parsed = parse_head(request)
        if parsed is None:
            return "refused expected: HEAD <seq> <64 hex digits>"
        seq, digest = parsed
        async with self._lock:
            if seq > self.last_seq:
                await asyncio.to_thread(self._append, f"{seq} {digest} {int(time.time())} {uid}\n")
                self.last_seq = seq
            return f"ok {self.last_seq}"


async def run_witness(socket_path: Path, log_path: Path, *, allowed_uids: Collection[int] = ()) -> None:
    """Serve until cancelled (SIGTERM/SIGINT). Raises WitnessSetupError."""
    witness = Witness(log_path, allowed_uids=allowed_uids)
    _clear_socket(socket_path)
    socket_path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    server = await asyncio.start_unix_server(witness.handle, path=str(socket_path))
    # Who may connect is the directory's mode; who may send, allowed_uids; reading is harmless (no secrets).
    os.chmod(socket_path, 0o666)  # noqa: S103
    log.info(
        "witness.started",
        socket=str(socket_path),
        log=str(log_path),
        last_seq=witness.last_seq,
        allowed_uids=sorted(allowed_uids) or "any",
    )
    try:
        async with server:
            await server.serve_forever()
    finally:
        _clear_socket(socket_path)


def _clear_socket(path: Path) -> None:
    """Remove a socket left at ``path`` (by a previous run); anything else there is left alone."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
