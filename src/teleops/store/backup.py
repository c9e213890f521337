"""`teleops db backup|restore` for SQLite: one archive holding the database and the data files it needs.

The database alone is not a backup: the audit chain is anchored in `audit-checkpoints.log` (signed with
`audit.key`), sealed command lines open only with `argv.key`, and TOTP secrets only with `twofactor.key`. A backup
is therefore a gzipped tar of `teleops.db` (taken with SQLite's online backup API: one consistent snapshot while the
controller goes on writing, WAL readers never block it), those data files, and `manifest.json`.

Order matters for the audit anchor: the data files are read *before* the database snapshot, so every checkpoint in
the archive refers to a record the archived database holds (a checkpoint newer than the database would make
`teleops audit verify` report a truncated chain).

Restore only ever writes into a fresh place: it refuses when the database file or any of the data files already
exists, so it can never overwrite a live installation.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from teleops.store import audit_checkpoints, sealed_argv, twofactor

__all__ = ["DATABASE_MEMBER", "DATA_FILES", "BackupError", "BackupSummary", "restore_backup", "write_backup"]

DATABASE_MEMBER = "teleops.db"
MANIFEST_MEMBER = "manifest.json"
# The data directory's files that the database needs to be whole (see the module docstring), in the order read.
DATA_FILES = (
    audit_checkpoints.LOG_FILE,
    audit_checkpoints.KEY_FILE,
    sealed_argv.KEY_FILE,
    twofactor.KEY_FILE,
)


class BackupError(Exception):
    """The backup or restore did not happen (nothing was left half-written); the message says what to do."""


@dataclass(frozen=True, slots=True)
class BackupSummary:
    taken_at: str  # ISO 8601, UTC
    database_bytes: int
    audit_head_seq: int
    incidents: int
    data_files: tuple[str, ...]  # which of DATA_FILES the archive holds


def write_backup(database: Path, data_dir: Path, out: IO[bytes]) -> BackupSummary:
    """Write a backup archive of the SQLite `database` and `data_dir`'s files to `out` (a file or stdout).

    Safe while a controller serves from the same files. Raises BackupError when the database is missing, is not a
    TeleOps database, or cannot be read (busy past the timeout, unreadable).
    """
    if not database.is_file():
        raise BackupError(f"no SQLite database at {database}; check database.url in the configuration")
    files = [(name, (data_dir / name).read_bytes()) for name in DATA_FILES if (data_dir / name).is_file()]
    with tempfile.TemporaryDirectory(prefix=".teleops-backup-", dir=database.parent) as scratch:
        snapshot = Path(scratch) / DATABASE_MEMBER
        taken_at = datetime.now(UTC).isoformat(timespec="seconds")
        try:
            _snapshot(database, snapshot)
            head, incidents = _facts(snapshot)
        except sqlite3.Error as exc:
            raise BackupError(
                f"could not back up {database}: {exc}; retry, or check the file's owner and mode"
            ) from exc
        summary = BackupSummary(taken_at, snapshot.stat().st_size, head, incidents, tuple(n for n, _ in files))
        manifest = {
            "format": 1,
            "taken_at": taken_at,
            "database": str(database),
            "audit_head_seq": head,
            "incidents": incidents,
            "data_files": list(summary.data_files),
        }
        with tarfile.open(fileobj=out, mode="w|gz") as archive:
            _add(archive, MANIFEST_MEMBER, json.dumps(manifest, indent=2).encode())
            for name, content in files:
                _add(archive, name, content)
            with snapshot.open("rb") as db_file:
                info = tarfile.TarInfo(DATABASE_MEMBER)
                info.size, info.mode, info.mtime = summary.database_bytes, 0o600, int(datetime.now(UTC).timestamp())
                archive.addfile(info, db_file)
    return summary


def _snapshot(database: Path, destination: Path) -> None:
    """SQLite's online backup in one step: one read snapshot, so a concurrent writer neither blocks it nor restarts
    it (a page-by-page backup restarts on every write made through another connection)."""
    source = sqlite3.connect(database, timeout=30)
    target = sqlite3.connect(destination)
    try:
        source.backup(target)
        # A self-contained file: no -wal beside it (the controller turns WAL back on when it opens it).
        target.execute("PRAGMA journal_mode=DELETE")
    finally:
        target.close()
        source.close()


def _facts(path: Path) -> tuple[int, int]:
    """(audit head seq, incidents) of a database file; sqlite3.Error when it is not a TeleOps database."""
    conn = sqlite3.connect(path)
    try:
        head = conn.execute("SELECT seq FROM audit_head WHERE id = 1").fetchone()
        incidents = conn.execute("SELECT count(*) FROM incidents").fetchone()[0]
        return (int(head[0]) if head else 0), int(incidents)
    finally:
        conn.close()


def _add(archive: tarfile.TarFile, name: str, content: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(content), 0o600, int(datetime.now(UTC).timestamp())
    archive.addfile(info, io.BytesIO(content))


def restore_backup(archive_in: IO[bytes], *, database: Path, data_dir: Path) -> dict[str, object]:
    """Restore an archive made by `write_backup` into a database path and data directory that hold nothing yet.

    Returns the archive's manifest. Raises BackupError, having written nothing, when the database or one of the
    data files already exists, when the archive is not a TeleOps backup (unknown or missing members, a corrupt
    database), or cannot be read.
    """
    existing = [p for p in (database, database.with_name(database.name + "-wal")) if p.exists()]
    existing += [data_dir / n for n in DATA_FILES if (data_dir / n).exists()]
    if existing:
        raise BackupError(
            "restore writes only into a fresh place, and these already exist: "
            + ", ".join(str(p) for p in existing)
            + ". Stop the controller and move them away (or point data_dir and database.url at an empty directory), "
            "then run the restore again"
        )
    database.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".teleops-restore-", dir=database.parent) as scratch:
        staged = Path(scratch) / DATABASE_MEMBER
        members = _read_members(archive_in, staged)
        manifest = json.loads(members.pop(MANIFEST_MEMBER))
        try:
            _check_database(staged)
        except sqlite3.Error as exc:
            raise BackupError(f"the database in the backup is unreadable ({exc}); use another backup") from exc
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name, content in members.items():
            _write_private(data_dir / name, content)
        os.replace(staged, database)
    _fsync_dir(database.parent)
    _fsync_dir(data_dir)
    return dict(manifest)


def _read_members(archive_in: IO[bytes], database: Path) -> dict[str, bytes]:
    """The archive's small members by name; the database member is streamed into `database` (0600)."""
    allowed = {DATABASE_MEMBER, MANIFEST_MEMBER, *DATA_FILES}
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=archive_in, mode="r|*") as archive:
            for member in archive:
                if member.name not in allowed or not member.isfile():
                    raise BackupError(
                        f"the archive holds {member.name!r}, which no TeleOps backup has; is it a backup made by "
                        "`teleops db backup`?"
                    )
                extracted = archive.extractfile(member)
                assert extracted is not None
                if member.name == DATABASE_MEMBER:
                    fd = os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "wb") as out:
                        shutil.copyfileobj(extracted, out, 1024 * 1024)
                        out.flush()
                        os.fsync(out.fileno())
                    members[DATABASE_MEMBER] = b""
                else:
                    members[member.name] = extracted.read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BackupError(
            f"cannot read the backup archive ({exc}); is it complete and made by `teleops db backup`?"
        ) from exc
    missing = _missing(members, (DATABASE_MEMBER, MANIFEST_MEMBER))
    if missing:
        raise BackupError(f"the archive has no {', '.join(missing)}; it is not a complete `teleops db backup`")
    del members[DATABASE_MEMBER]
    return members


def _missing(members: dict[str, bytes], names: Iterable[str]) -> list[str]:
    return [name for name in names if name not in members]


def _check_database(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        verdict = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if verdict != "ok":
            raise sqlite3.DatabaseError(f"integrity check: {verdict}")
        conn.execute("SELECT version_num FROM alembic_version").fetchone()
    finally:
        conn.close()


def _write_private(path: Path, content: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(content)
        out.flush()
        os.fsync(out.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
