"""The controller's data files are readable by its own user only (issue #17: secrets at rest).

`teleops serve` sets the umask to 0o077 before it creates anything, and every secret-bearing file is also
created 0600 explicitly (the SQLite database, whose -wal and -shm files take its mode; `argv.key`,
`twofactor.key`, the audit checkpoint log and key, the local agent's token, the first-start credentials).

Files made before that (an older version, a database copied in) are checked at start: a file the controller's
own user owns, at the top of the data directory or the SQLite database and its -wal/-shm, loses its group and
other bits, and the change is logged (`data_file.tightened`). A file someone else owns is only warned about
(`data_file.readable`): it is not ours to change. Subdirectories (the local agent's state) are left to
whoever runs in them.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PRIVATE_UMASK", "ModeFinding", "check_data_files", "sqlite_files"]

PRIVATE_UMASK = 0o077


@dataclass(frozen=True, slots=True)
class ModeFinding:
    """A data file that was readable by others: `tightened` when we fixed it, else only reported."""

    path: Path
    mode: int
    tightened: bool


def sqlite_files(database_url: str) -> list[Path]:
    """The SQLite database file of `database_url` and its -wal and -shm files (none for PostgreSQL or memory)."""
    if not database_url.startswith("sqlite"):
        return []
    database = database_url.partition(":///")[2].split("?", 1)[0]  # sqlite+driver:///relative or :////absolute
    if not database or database == ":memory:":
        return []
    main = Path(database)
    return [main, main.with_name(main.name + "-wal"), main.with_name(main.name + "-shm")]


def check_data_files(data_dir: Path, database_url: str) -> list[ModeFinding]:
    """Tighten our own readable data files to 0600 (or less); report others' readable ones. Never raises for a
    file that vanished or cannot be changed (that is reported as not tightened)."""
    candidates = [p for p in sorted(data_dir.iterdir()) if not p.is_symlink()] if data_dir.is_dir() else []
    candidates += [p for p in sqlite_files(database_url) if p not in candidates]
    findings: list[ModeFinding] = []
    uid = os.getuid()
    for path in candidates:
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(info.st_mode) or not info.st_mode & 0o077:
            continue
        mode = stat.S_IMODE(info.st_mode)
        tightened = False
        if info.st_uid == uid:
            try:
                os.chmod(path, mode & 0o700)
                tightened = True
            except OSError:
                tightened = False
        findings.append(ModeFinding(path, mode, tightened))
    return findings
