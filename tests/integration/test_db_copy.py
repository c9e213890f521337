"""`teleops db copy` from the embedded SQLite default into a real PostgreSQL (issue #21).

A real `teleops serve` on SQLite makes the history (alerts, incidents that recur, commands run by its local agent,
a command approved by a second person, escalations, web console messages); the copy carries it over; a controller
started on the copy serves the same scenarios and "last time" blocks, `teleops audit verify` passes, and a new
alert gets an id after the copied ones. A copy killed by SIGKILL half-way is detected and restarted cleanly.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert, select, text

from teleops.store.backup import DATA_FILES
from teleops.store.database import Database
from teleops.store.schema import alerts, incidents
from tests.integration.db_state import row_counts
from tests.integration.servers import (
    ADMIN_WITHOUT_STEPUP,
    PostgresServer,
    TeleopsServer,
    eventually,
    run_teleops_cli,
    start_teleops,
    stop_process,
    wait_until,
)
from tests.scenarios.conftest import alert_body

POLICY: dict[str, Any] = {
    "roles": {
        "operator": [
            {"hosts": ["*"], "commands": ["echo *"], "require_2fa": False},
            {"hosts": ["*"], "commands": ["date"], "require_approval": True, "require_2fa": False},
        ],
        "admin": ADMIN_WITHOUT_STEPUP["roles"]["admin"],
    }
}
CONFIG: dict[str, Any] = {
    "policy": POLICY,
    "users": [{"name": "bob", "role": "operator"}, {"name": "carol", "role": "operator"}],
    "oncall": {
        "escalation": [{"after": "0m", "notify": "chat:room"}, {"after": "30m", "notify": "user:carol"}],
        "chats": {"room": {"platform": "console", "id": "ops"}},
    },
}


def fire(
    server: TeleopsServer, name: str, fingerprint: str, *, status: str = "firing", starts_at: str | None = None
) -> int:
    body = json.loads(alert_body(name, fingerprint, instance="localhost:9100"))
    if starts_at is not None:
        body["alerts"][0]["startsAt"] = starts_at
    body["status"] = body["alerts"][0]["status"] = status
    if status == "resolved":
        body["alerts"][0]["endsAt"] = body["alerts"][0]["startsAt"]
    response = httpx.post(
        f"{server.url}/api/v1/alerts/alertmanager",
        content=json.dumps(body),
        headers={**server.ingest_headers, "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return int(response.json()["results"][0]["incident_id"])


def run(server: TeleopsServer, headers: dict[str, str], command: str, incident_id: int) -> dict[str, Any]:
    response = httpx.post(
        f"{server.url}/api/v1/commands",
        json={"host": "localhost", "command": command, "incident_id": incident_id},
        headers=headers,
        timeout=10,
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def finished(server: TeleopsServer, command_id: int) -> dict[str, Any] | None:
    body: dict[str, Any] = httpx.get(
        f"{server.url}/api/v1/commands/{command_id}", headers=server.api_headers, timeout=10
    ).json()
    return body if body["status"] not in ("queued", "running") else None


def scripted_run(server: TeleopsServer) -> list[int]:
    """Yesterday's on-call shift: two scenarios, the disk one twice; commands, one approved by a second person."""
    bob = {"Authorization": f"Bearer {server.create_token('api', 'bob-cli', '--user', 'bob')}"}
    carol = {"Authorization": f"Bearer {server.create_token('api', 'carol-cli', '--user', 'carol')}"}
    disk = fire(server, "DiskFull", "f00d0001")
    fire(server, "HighLoad", "f00d0002")
    ran = run(server, bob, "echo cleaned /var/tmp", disk)
    assert eventually(lambda: finished(server, ran["id"]), what="echo to finish")["exit_code"] == 0
    pending = run(server, bob, "date", disk)
    assert pending["status"] == "queued", pending
    assert pending["approval"], pending
    vote = httpx.post(
        f"{server.url}/api/v1/commands/{pending['id']}/approve",
        json={"digest": pending["approval"]["digest"]},
        headers=carol,
        timeout=10,
    )
    assert vote.status_code == 200, vote.text
    assert eventually(lambda: finished(server, pending["id"]), what="the approved date")["status"] == "succeeded"
    assert fire(server, "DiskFull", "f00d0001", status="resolved") == disk
    again = fire(
        server, "DiskFull", "f00d0001", starts_at=datetime.now(UTC).isoformat()
    )  # it came back: the "last time" block shows the echo
    return [disk, again]


def views(server: TeleopsServer, incident_ids: list[int]) -> dict[str, Any]:
    """What an engineer sees: the incident list, each incident with its timeline, and the "last time" block."""
    seen: dict[str, Any] = {"list": server.incidents()}
    for incident_id in incident_ids:
        seen[f"incident {incident_id}"] = server.incident(incident_id)
        history = httpx.get(
            f"{server.url}/api/v1/incidents/{incident_id}/history", headers=server.api_headers, timeout=10
        )
        block = history.json()
        # The chat lines say "2m ago": the time-free rest of the block is compared; the lines must name the fix.
        seen[f"history {incident_id}"] = {key: value for key, value in block.items() if key != "text"}
        seen[f"fix shown {incident_id}"] = "echo cleaned /var/tmp" in "\n".join(block["text"])
    return seen


async def counts(url: str) -> dict[str, int]:
    db = Database(url)
    try:
        table_rows = await row_counts(db)
        async with db.engine.connect() as conn:
            table_rows["scenario_search"] = (
                await conn.execute(text("SELECT count(*) FROM scenario_search"))
            ).scalar_one()
        return table_rows
    finally:
        await db.close()


def copy_cli(source: str, target: str, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run_teleops_cli("db", "copy", "--from", source, "--to", target, *extra, check=check, timeout=300)


def test_a_scripted_history_copied_to_postgresql_serves_the_same_scenarios(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    server = start_teleops(tmp_path / "sqlite", local_agent=True, config=CONFIG)
    try:
        wait_until(lambda: _agent_online(server), what="the local agent")
        incident_ids = scripted_run(server)
        before = views(server, incident_ids)
        search = httpx.get(
            f"{server.url}/api/v1/scenarios", params={"q": "cleaned"}, headers=server.api_headers, timeout=10
        ).json()
        assert [hit["incident_id"] for hit in search["items"]] == [incident_ids[0]]
    finally:
        stop_process(server.process)
    source_counts = asyncio.run(counts(server.database_url))
    for table in ("incidents", "commands", "approvals", "escalations", "console_messages", "audit_events"):
        assert source_counts[table] > 0, f"the scripted run made no {table}"

    target = postgres_server.create_database()  # migrated and empty, as after `createdb` + `teleops db upgrade`
    copied = copy_cli(server.database_url, target)
    assert "copied" in copied.stdout, copied.stdout
    assert "sequences continue" in copied.stdout, copied.stdout
    assert "incidents: " in copied.stderr, copied.stderr
    assert "rows/s" in copied.stderr, copied.stderr
    assert asyncio.run(counts(target)) == source_counts

    # The data files go with the database (docs/backup-restore.md): the audit anchor and the keys.
    moved = tmp_path / "postgres"
    (moved / "data").mkdir(parents=True)
    for name in DATA_FILES:
        if (server.data_dir / name).is_file():
            shutil.copy2(server.data_dir / name, moved / "data" / name)
    on_copy = start_teleops(moved, database_url=target, local_agent=True, config=CONFIG)
    try:
        verify = on_copy.cli("audit", "verify")
        assert verify.stdout.startswith("audit log intact:"), verify.stdout
        after = views(on_copy, incident_ids)
        assert after == before
        assert after[f"history {incident_ids[1]}"]["last"]["ended_in_fix"], "the copy lost the 'last time' block"
        assert after[f"fix shown {incident_ids[1]}"]
        search_after = httpx.get(
            f"{on_copy.url}/api/v1/scenarios", params={"q": "cleaned"}, headers=on_copy.api_headers, timeout=10
        ).json()
        # Scores and snippets are each engine's own (FTS5, PostgreSQL ts_rank): the hits must be the same. Command
        # output is indexed only when a command finishes, so this hit proves the index itself was carried over.
        assert _hits(search_after) == _hits(search)
        fresh = fire(on_copy, "NewAlert", "f00d0003")
        assert fresh > max(i["id"] for i in before["list"])
    finally:
        stop_process(on_copy.process)
        postgres_server.drop_database(target)


def _hits(search: dict[str, Any]) -> list[tuple[int, str, str]]:
    return [(hit["incident_id"], hit["name"], hit["status"]) for hit in search["items"]]


def _agent_online(server: TeleopsServer) -> bool:
    items = httpx.get(f"{server.url}/api/v1/agents", headers=server.api_headers, timeout=10).json()["items"]
    return any(item["name"] == "localhost" and item["online"] for item in items)


async def _big_source(url: str, alerts_rows: int) -> None:
    """A migrated SQLite database with one incident and `alerts_rows` raw reports: large enough to kill the copy
    while it runs."""
    db = Database(url)
    try:
        await db.migrate()
        now = datetime.now(UTC)

        def fill(conn: Any) -> None:
            incident_id = conn.execute(
                insert(incidents).values(
                    source="alertmanager",
                    fingerprint="big",
                    status="open",
                    name="Big",
                    severity="warning",
                    host="web-1",
                    labels={},
                    annotations={},
                    digest="0" * 64,
                    created_at=now,
                    last_seen_at=now,
                )
            ).inserted_primary_key[0]
            row = {"incident_id": incident_id, "status": "firing", "received_at": now, "alert": {"n": "x" * 200}}
            for start in range(0, alerts_rows, 10_000):
                conn.execute(insert(alerts), [row] * min(10_000, alerts_rows - start))

        await db.run_in_transaction(fill)
    finally:
        await db.close()


async def _target_alerts(url: str) -> tuple[int, bool]:
    db = Database(url)
    try:
        async with db.engine.connect() as conn:
            rows = (await conn.execute(select(alerts.c.id))).all()
            marker = (
                await conn.execute(text("SELECT count(*) FROM pg_tables WHERE tablename = 'teleops_copy_marker'"))
            ).scalar_one()
            return len(rows), bool(marker)
    finally:
        await db.close()


def test_a_copy_killed_half_way_is_detected_and_restarted_cleanly(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    source = f"sqlite+aiosqlite:///{tmp_path}/teleops.db"
    asyncio.run(_big_source(source, 150_000))
    target = postgres_server.create_database()
    try:
        log = tmp_path / "copy.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "teleops.cli", "db", "copy", "--from", source, "--to", target],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:  # killed once it reports rows of the big table copied but not yet done
            wait_until(lambda: "alerts: " in log.read_text() and "copying" in log.read_text(), what="the copy",
                       process=process, log=log)  # fmt: skip
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
        assert "alerts: 150000/150000 rows done" not in log.read_text()
        rows, marker = asyncio.run(_target_alerts(target))
        assert (rows, marker) == (0, True), "the killed copy left partial data or no marker"

        refused = copy_cli(source, target, check=False)
        assert refused.returncode == 1
        assert "the target holds an interrupted copy" in refused.stderr
        assert "--restart" in refused.stderr
        assert asyncio.run(_target_alerts(target)) == (0, True), "a refused copy changed the target"

        copy_cli(source, target, "--restart")
        assert asyncio.run(_target_alerts(target)) == (150_000, False)
        assert asyncio.run(counts(target)) == asyncio.run(counts(source))

        again = copy_cli(source, target, check=False)
        assert again.returncode == 1
        assert "already holds" in again.stderr, again.stderr
        assert "--overwrite" in again.stderr, again.stderr
        copy_cli(source, target, "--overwrite")
        assert asyncio.run(_target_alerts(target)) == (150_000, False)
    finally:
        postgres_server.drop_database(target)


def test_a_copy_refuses_what_it_cannot_carry(tmp_path: Path, postgres_server: PostgresServer) -> None:
    missing = copy_cli(f"sqlite+aiosqlite:///{tmp_path}/none.db", "postgresql+asyncpg://u:p@127.0.0.1:1/x", check=False)
    assert missing.returncode == 1, missing.stderr
    assert "no SQLite database at" in missing.stderr, missing.stderr
    wrong_way = copy_cli("postgresql+asyncpg://u:p@127.0.0.1:1/x", f"sqlite+aiosqlite:///{tmp_path}/t.db", check=False)
    assert wrong_way.returncode == 1
    assert "--to must be a PostgreSQL database" in wrong_way.stderr
    source = f"sqlite+aiosqlite:///{tmp_path}/teleops.db"
    asyncio.run(_big_source(source, 1))
    unreachable = copy_cli(source, "postgresql+asyncpg://u:secret@127.0.0.1:1/x", check=False)
    assert unreachable.returncode == 1
    assert "cannot reach the target" in unreachable.stderr
    assert "secret" not in unreachable.stderr, "the password was printed"
    assert json.dumps(unreachable.stderr)  # one readable message, no traceback
    assert "Traceback" not in unreachable.stderr


def test_the_copy_knows_every_table_the_migrations_create(tmp_path: Path) -> None:
    """A table defined outside schema.py must be imported by store/copy.py, or `db copy` refuses every database.
    Checked in a fresh interpreter that imports only what `teleops db copy` imports (here the app has loaded all)."""
    probe = (
        "import asyncio, sys\n"
        "from teleops.store.copy import source_tables_unknown\n"
        "from teleops.store.database import Database\n"
        "async def main():\n"
        "    db = Database(sys.argv[1])\n"
        "    await db.migrate()\n"
        "    print(','.join(await db.read(source_tables_unknown)))\n"
        "    await db.close()\n"
        "asyncio.run(main())\n"
    )
    url = f"sqlite+aiosqlite:///{tmp_path / 'teleops.db'}"
    result = subprocess.run([sys.executable, "-c", probe, url], capture_output=True, text=True, check=True, timeout=60)
    unknown = result.stdout.strip()
    assert unknown == "", f"store/copy.py does not know these tables; import their modules there: {unknown}"
