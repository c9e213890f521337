"""What the agent must not forget across disconnects and restarts.

- Results of finished commands stay in `results/<command_id>.json` until the controller acknowledges them,
  so a result is reported even if the connection (or this process) dies in between.
- Every command id this agent accepted is appended to `seen`, *before* it runs: an exec that arrives again
  (a replay, a confused controller) is refused, never run twice — also after an agent restart.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import TextIO

import structlog

from teleops.wire import Exit, WireError, decode, encode

__all__ = ["Spool"]

log = structlog.get_logger(__name__)

REMEMBER_IDS = 100_000


class Spool:
    """A directory this agent alone writes (mode 0700). Methods raise OSError when the disk refuses."""

    def __init__(self, state_dir: Path, *, remember: int = REMEMBER_IDS) -> None:
        self._dir = state_dir
        self._results = state_dir / "results"
        self._seen_file = state_dir / "seen"
        self._remember = remember
        self._results.mkdir(parents=True, exist_ok=True)
        for folder in (state_dir, self._results):
            os.chmod(folder, 0o700)
        self._seen: dict[str, None] = {}  # insertion-ordered set
        # Appends to `seen` come from worker threads, many at once when commands arrive together: each appends
        # under `_append_lock`, then one fsync covers every append made before it started (group commit), so
        # a burst of 100 commands waits for a few fsyncs, not for 100 in a row. Lock order: sync, then append.
        self._append_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._seen_handle: TextIO | None = None
        self._appended = 0  # appends so far (under _append_lock)
        self._synced = 0  # appends known on disk (under _sync_lock)
        if self._seen_file.exists():
            for line in self._seen_file.read_text(encoding="utf-8").splitlines()[-remember:]:
                if line:
                    self._seen[line] = None

    @property
    def directory(self) -> Path:
        return self._dir

    def seen(self, command_id: str) -> bool:
        return command_id in self._seen

    def remember(self, command_id: str) -> None:
        """Record that `command_id` was accepted, durably, before it runs."""
        self.note_seen(command_id)
        self.persist_seen(command_id)

    def note_seen(self, command_id: str) -> None:
        """The in-memory half of `remember`: from now on `seen(command_id)` is True in this process."""
        self._seen[command_id] = None

    def persist_seen(self, command_id: str) -> None:
        """The durable half of `remember` (append, then an fsync shared with concurrent callers); safe to call
        from worker threads."""
        with self._append_lock:
            if self._seen_handle is None:
                self._seen_handle = open(self._seen_file, "a", encoding="utf-8")  # noqa: SIM115 (kept open)
            self._seen_handle.write(command_id + "\n")
            self._seen_handle.flush()
            self._appended += 1
            mine = self._appended
        with self._sync_lock:
            if self._synced >= mine:
                return  # an fsync that started after our append covered it
            with self._append_lock:
                covered = self._appended
                assert self._seen_handle is not None
                descriptor = self._seen_handle.fileno()  # only closed below, under _sync_lock
            os.fsync(descriptor)
            self._synced = covered
            if len(self._seen) > 2 * self._remember:
                self._trim_seen()

    def _trim_seen(self) -> None:
        """Drop the oldest ids in place (holding _sync_lock): an id noted meanwhile on the event loop is kept."""
        with self._append_lock:
            for old in list(self._seen)[: len(self._seen) - self._remember]:
                self._seen.pop(old, None)
            if self._seen_handle is not None:
                self._seen_handle.close()
                self._seen_handle = None
            _write_atomically(self._seen_file, "".join(f"{i}\n" for i in self._seen))

    def close(self) -> None:
        """Close the `seen` file (the agent is stopping)."""
        with self._sync_lock, self._append_lock:
            if self._seen_handle is not None:
                self._seen_handle.close()
                self._seen_handle = None

    def put(self, result: Exit) -> None:
        """Keep `result` until `ack`. Atomic: a crash leaves the old file or the new one, never half.
        Safe to call from a worker thread."""
        _write_atomically(self._results / f"{result.command_id}.json", encode(result))

    def ack(self, command_id: str) -> None:
        """The controller stored this result; forget it (its id stays in `seen`)."""
        with contextlib.suppress(FileNotFoundError):
            (self._results / f"{command_id}.json").unlink()

    def pending(self) -> list[Exit]:
        """Results not yet acknowledged, oldest first. An unreadable file is moved aside and logged."""
        found: list[tuple[float, Exit]] = []
        for path in self._results.glob("*.json"):
            try:
                message = decode(path.read_text(encoding="utf-8"))
                if not isinstance(message, Exit):
                    raise WireError(f"expected an exit, found {message.type}")
                found.append((path.stat().st_mtime, message))
            except (OSError, WireError) as exc:
                log.error("agent.spool_unreadable", file=path.name, error=str(exc), moved_to=path.name + ".bad")
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(".bad"))
        return [message for _, message in sorted(found, key=lambda item: item[0])]


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
