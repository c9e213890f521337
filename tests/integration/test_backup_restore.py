"""`teleops db backup|restore` and the restore drill of docs/backup-restore.md (issue #21).

The drill test runs the `bash` blocks of the doc's "Restore drill" section, in order, as one script, against a
real `teleops serve` that keeps taking alerts while the backup is taken; `teleops` on the script's PATH is this
checkout's CLI. A doc edit that breaks the drill breaks this test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from tests.integration.servers import TeleopsServer, free_port, run_teleops_cli, start_teleops, stop_process
from tests.scenarios.conftest import alert_body

DOC = Path(__file__).parents[2] / "docs" / "backup-restore.md"


def drill_script() -> str:
    """The bash blocks of the "Restore drill" section, in order."""
    text = DOC.read_text()
    section = text.split("## Restore drill", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    assert len(blocks) >= 6, "the drill lost its steps"
    return "\n".join(blocks)


def fire(server: TeleopsServer, name: str, fingerprint: str) -> int:
    response = httpx.post(
        f"{server.url}/api/v1/alerts/alertmanager",
        content=alert_body(name, fingerprint),
        headers={**server.ingest_headers, "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return int(response.json()["results"][0]["incident_id"])


def teleops_on_path(folder: Path) -> str:
    """A folder holding a `teleops` that runs this checkout's CLI with this interpreter, for PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "teleops"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m teleops.cli "$@"\n')
    shim.chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


def test_the_restore_drill_in_the_docs_restores_a_backup_taken_while_serving(tmp_path: Path) -> None:
    live = start_teleops(tmp_path / "live")
    stop_writing = threading.Event()

    def keep_firing() -> None:  # the controller is busy while the backup runs
        n = 0
        while not stop_writing.is_set():
            n += 1
            fire(live, f"Busy{n % 5}", f"busy{n}")

    writer = threading.Thread(target=keep_firing)
    try:
        yesterday = fire(live, "DiskFull", "d15cf011")
        writer.start()
        drill = tmp_path / "drill"
        drill.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TELEOPS_")}
        env.update(
            PATH=teleops_on_path(tmp_path / "bin"),
            CONFIG=str(live.config_path),
            BACKUP=str(tmp_path / "teleops-backup.tar.gz"),
            DRILL=str(drill),
            DRILL_LISTEN=f"127.0.0.1:{free_port()}",
            FIND="DiskFull",
        )
        script = 'set -euo pipefail\ntrap \'if [ -n "${SERVE_PID:-}" ]; then kill "$SERVE_PID" 2>/dev/null || true; fi\' EXIT\n'
        result = subprocess.run(
            ["bash", "-c", script + drill_script()], env=env, capture_output=True, text=True, timeout=300, check=False
        )
    finally:
        stop_writing.set()
        if writer.is_alive():
            writer.join(timeout=30)
        stop_process(live.process)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "audit log intact:" in result.stdout
    assert "restore drill passed: found DiskFull" in result.stdout
    found, _ = json.JSONDecoder().raw_decode(result.stdout[result.stdout.index('{"items"') :])
    assert yesterday in [hit["incident_id"] for hit in found["items"]]
    assert not drill.exists(), "the drill did not clean up"
    assert (tmp_path / "teleops-backup.tar.gz").stat().st_mode & 0o077 == 0, "the backup is readable by others"


def restore_config(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "teleops.yaml"
    config.write_text(
        f"data_dir: {folder}/data\ndatabase: {{url: 'sqlite+aiosqlite:///{folder}/data/teleops.db'}}\n"
        "local_agent: {enabled: false}\n"
    )
    return config


def test_a_backup_streamed_to_stdout_restores_from_stdin_and_restore_never_overwrites(tmp_path: Path) -> None:
    live = start_teleops(tmp_path / "live")
    try:
        incident_id = fire(live, "DiskFull", "d15cf012")
        streamed = subprocess.run(
            [sys.executable, "-m", "teleops.cli", "db", "backup", "--output", "-", "--config", str(live.config_path)],
            env=live.env,
            capture_output=True,
            timeout=60,
            check=True,
        )
        assert b"audit head seq" in streamed.stderr
        again = live.cli("db", "backup", "--output", str(tmp_path / "b.tar.gz"))
        assert "incidents" in again.stdout
        refused_existing = live.cli("db", "backup", "--output", str(tmp_path / "b.tar.gz"), check=False)
        assert refused_existing.returncode == 1
        assert "already exists" in refused_existing.stderr
    finally:
        stop_process(live.process)

    config = restore_config(tmp_path / "restored")
    restored = subprocess.run(
        [sys.executable, "-m", "teleops.cli", "db", "restore", "--from", "-", "--config", str(config)],
        input=streamed.stdout,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert restored.returncode == 0, restored.stderr
    assert "restored the backup taken at" in restored.stdout.decode()
    data = tmp_path / "restored" / "data"
    assert {p.name for p in data.iterdir()} >= {"teleops.db", "audit-checkpoints.log", "audit.key"}
    assert all(p.stat().st_mode & 0o077 == 0 for p in data.iterdir()), "restored files are readable by others"
    verify = run_teleops_cli("audit", "verify", "--config", str(config))
    assert verify.stdout.startswith("audit log intact:")

    before = (data / "teleops.db").read_bytes()
    twice = run_teleops_cli("db", "restore", "--from", str(tmp_path / "b.tar.gz"), "--config", str(config), check=False)
    assert twice.returncode == 1, twice.stderr
    assert "restore writes only into a fresh place" in twice.stderr, twice.stderr
    assert (data / "teleops.db").read_bytes() == before, "a refused restore changed the database"

    other = restore_config(tmp_path / "other")
    not_a_backup = tmp_path / "not-a-backup.tar.gz"
    not_a_backup.write_bytes(b"hello")
    bad = run_teleops_cli("db", "restore", "--from", str(not_a_backup), "--config", str(other), check=False)
    assert bad.returncode == 1, bad.stderr
    assert "cannot read the backup archive" in bad.stderr, bad.stderr
    assert not (tmp_path / "other" / "data" / "teleops.db").exists()
    assert incident_id > 0


def test_backing_up_postgresql_points_at_pg_dump(tmp_path: Path) -> None:
    config = tmp_path / "teleops.yaml"
    config.write_text("database: {url: 'postgresql+asyncpg://teleops@127.0.0.1:1/teleops'}\n")
    result = run_teleops_cli("db", "backup", "--output", str(tmp_path / "x"), "--config", str(config), check=False)
    assert result.returncode == 1
    assert "pg_dump" in result.stderr
    assert "docs/backup-restore.md" in result.stderr
    assert not (tmp_path / "x").exists()
