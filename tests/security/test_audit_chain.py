"""docs/threat-model.md T29 (audit tampering): `verify_audit` and `teleops audit verify` catch every way a database
attacker can change the log — edit, delete, reorder, truncate, and a full re-chain — on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.engine import Connection

from teleops.store.audit import GENESIS_HASH, append, append_many, event_hash, iter_events, record
from teleops.store.audit_checkpoints import CheckpointLog
from teleops.store.audit_verify import Tamper, verify_audit
from teleops.store.database import Database

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


@dataclass
class Log:
    db: Database
    checkpoints: CheckpointLog
    data_dir: Path
    url: str

    async def sql(self, *statements: str) -> None:
        def apply(conn: Connection) -> None:
            for statement in statements:
                conn.execute(text(statement))

        await self.db.run_in_transaction(apply)


@pytest.fixture
async def log(db_url: str, tmp_path: Path) -> AsyncIterator[Log]:
    db = Database(db_url)
    await db.migrate()
    data_dir = tmp_path / "data"
    checkpoints = CheckpointLog(data_dir)
    for number in range(1, 7):
        await record(
            db,
            at=T0 + timedelta(seconds=number),
            actor="alice",
            action="command.dispatching",
            subject=f"command:{number}",
            data={"argv": ["rm", "-rf", f"/tmp/{number}"], "host": "web-1", "via": "telegram-bot"},
        )
        if number == 5:
            assert await checkpoints.checkpoint(db)
    yield Log(db, checkpoints, data_dir, db_url)
    await db.close()


async def test_an_untouched_log_verifies(log: Log) -> None:
    finding = await verify_audit(log.db, log.checkpoints)
    assert finding.ok, finding.message
    assert (finding.events, finding.head_seq, finding.checkpoints) == (6, 6, 1)


async def test_events_appended_together_chain_exactly_like_one_by_one(log: Log) -> None:
    entries = [("bob", "command.dispatching", f"command:{n}", {"fanout": 3, "host": f"web-{n}"}) for n in (7, 8, 9)]

    def together(conn: Connection) -> list[str]:
        return [event.hash for event in append_many(conn, at=T0, entries=entries)]

    def one_by_one(conn: Connection) -> list[str]:
        return [append(conn, at=T0, actor=a, action=b, subject=c, data=d).hash for a, b, c, d in entries]

    batch = await log.db.run_in_transaction(together)
    finding = await verify_audit(log.db, log.checkpoints)
    assert finding.ok, finding.message
    assert (finding.events, finding.head_seq) == (9, 9)

    other = Database(f"sqlite+aiosqlite:///{log.data_dir}/other.db")
    await other.migrate()
    try:
        for number in range(1, 7):  # the same first six events as the fixture
            await record(
                other, at=T0 + timedelta(seconds=number), actor="alice", action="command.dispatching",
                subject=f"command:{number}",
                data={"argv": ["rm", "-rf", f"/tmp/{number}"], "host": "web-1", "via": "telegram-bot"},
            )  # fmt: skip
        assert await other.run_in_transaction(one_by_one) == batch
    finally:
        await other.close()


async def test_the_checkpoint_key_is_private_and_lines_carry_an_hmac(log: Log) -> None:
    assert (log.data_dir / "audit.key").stat().st_mode & 0o777 == 0o600
    [line] = (log.data_dir / "audit-checkpoints.log").read_text().splitlines()
    seq, digest, mac = line.split()
    assert seq == "5"
    assert len(digest) == 64
    assert len(mac) == 64


async def test_an_edited_record_is_named(log: Log) -> None:
    await log.sql("""UPDATE audit_events SET data = '{"argv": ["ls"], "host": "web-1"}' WHERE seq = 3""")
    finding = await verify_audit(log.db, log.checkpoints)
    assert (finding.ok, finding.kind, finding.seq) == (False, Tamper.EDITED, 3)


async def test_an_edited_actor_is_named(log: Log) -> None:
    await log.sql("UPDATE audit_events SET actor = 'bob' WHERE seq = 2")
    finding = await verify_audit(log.db, log.checkpoints)
    assert (finding.kind, finding.seq) == (Tamper.EDITED, 2)


async def test_a_deleted_record_shows_as_a_gap(log: Log) -> None:
    await log.sql("DELETE FROM audit_events WHERE seq = 3")
    finding = await verify_audit(log.db, log.checkpoints)
    assert (finding.ok, finding.kind, finding.seq) == (False, Tamper.DELETED, 3)
    assert "missing" in finding.message


async def test_reordered_records_are_named(log: Log) -> None:
    await log.sql(
        "UPDATE audit_events SET seq = -1 WHERE seq = 3",
        "UPDATE audit_events SET seq = 3 WHERE seq = 4",
        "UPDATE audit_events SET seq = 4 WHERE seq = -1",
    )
    finding = await verify_audit(log.db, log.checkpoints)
    assert (finding.ok, finding.kind, finding.seq) == (False, Tamper.REORDERED, 3)


async def test_a_truncated_tail_is_caught_by_the_checkpoint(log: Log) -> None:
    # The attacker removes the newest records and fixes the head row so the chain itself looks whole.
    await log.sql(
        "DELETE FROM audit_events WHERE seq >= 4",
        "UPDATE audit_head SET seq = 3, hash = (SELECT hash FROM audit_events WHERE seq = 3) WHERE id = 1",
    )
    finding = await verify_audit(log.db, log.checkpoints)
    assert (finding.ok, finding.kind) == (False, Tamper.TRUNCATED)
    assert "checkpoint 5" in finding.message


async def test_a_removed_tail_with_a_stale_head_row_is_truncation(log: Log) -> None:
    await log.sql("DELETE FROM audit_events WHERE seq = 6")
    finding = await verify_audit(log.db, log.checkpoints)
    assert (finding.kind, finding.seq) == (Tamper.TRUNCATED, 6)


async def rechain_without(log: Log, victim: int) -> None:
    """What a database attacker with our source code can do: delete a record and recompute every hash."""

    def apply(conn: Connection) -> None:
        events = [e for e in iter_events(conn) if e.seq != victim]
        conn.execute(text("DELETE FROM audit_events"))
        prev = GENESIS_HASH
        for seq, event in enumerate(events, start=1):
            digest = event_hash(
                seq=seq,
                prev_hash=prev,
                at=event.at,
                actor=event.actor,
                action=event.action,
                subject=event.subject,
                data=event.data,
            )
            conn.execute(
                text(
                    "INSERT INTO audit_events (seq, at, actor, action, subject, data, prev_hash, hash) "
                    "VALUES (:seq, :at, :actor, :action, :subject, :data, :prev, :hash)"
                ),
                {
                    "seq": seq,
                    "at": event.at.replace(tzinfo=None),
                    "actor": event.actor,
                    "action": event.action,
                    "subject": event.subject,
                    "data": json.dumps(event.data),
                    "prev": prev,
                    "hash": digest,
                },
            )
            prev = digest
        conn.execute(
            text("UPDATE audit_head SET seq = :seq, hash = :hash WHERE id = 1"), {"seq": len(events), "hash": prev}
        )

    await log.db.run_in_transaction(apply)


async def test_a_full_rechain_is_caught_by_the_checkpoint(log: Log) -> None:
    await rechain_without(log, victim=2)
    finding = await verify_audit(log.db, log.checkpoints)
    assert (finding.ok, finding.kind, finding.seq) == (False, Tamper.RECHAINED, 5)


async def test_a_chain_whose_checkpoint_file_was_deleted_fails(db_url: str, tmp_path: Path) -> None:
    # The limit of a hash chain on its own: a re-chain is consistent. Without any anchor it would pass, so a
    # chain with records and no checkpoint file is itself a finding (the controller checkpoints after every
    # dispatch and every few seconds).
    db = Database(db_url)
    await db.migrate()
    try:
        for number in range(3):
            await record(db, at=T0, actor="alice", action="x", subject=str(number))
        bare = Log(db, CheckpointLog(tmp_path / "empty"), tmp_path / "empty", db_url)
        await rechain_without(bare, victim=2)
        finding = await verify_audit(db, bare.checkpoints)
        assert (finding.ok, finding.kind) == (False, Tamper.CHECKPOINT)
        assert "checkpoint file is missing" in finding.message
    finally:
        await db.close()


async def test_a_deleted_checkpoint_file_fails_verification(log: Log) -> None:
    (log.data_dir / "audit-checkpoints.log").unlink()
    finding = await verify_audit(log.db, log.checkpoints)
    assert (finding.ok, finding.kind) == (False, Tamper.CHECKPOINT)


async def test_an_empty_chain_needs_no_checkpoint_file(db_url: str, tmp_path: Path) -> None:
    db = Database(db_url)
    await db.migrate()
    try:
        assert (await verify_audit(db, CheckpointLog(tmp_path / "fresh"))).ok
    finally:
        await db.close()


async def test_an_edited_checkpoint_file_is_reported(log: Log) -> None:
    path = log.data_dir / "audit-checkpoints.log"
    seq, _digest, mac = path.read_text().split()
    path.write_text(f"{seq} {'f' * 64} {mac}\n")
    finding = await verify_audit(log.db, log.checkpoints)
    assert (finding.ok, finding.kind) == (False, Tamper.CHECKPOINT)


async def test_an_append_that_rolls_back_leaves_no_record_and_no_gap(log: Log) -> None:
    class ActionFailed(Exception):
        pass

    def apply(conn: Connection) -> None:
        append(conn, at=T0, actor="alice", action="command.dispatching", subject="command:99")
        raise ActionFailed

    with pytest.raises(ActionFailed):
        await log.db.run_in_transaction(apply)
    event = await record(log.db, at=T0, actor="alice", action="after", subject="")
    assert event.seq == 7
    assert (await verify_audit(log.db, log.checkpoints)).ok


async def test_concurrent_appends_get_contiguous_seqs_and_one_chain(log: Log) -> None:
    await asyncio.gather(*(record(log.db, at=T0, actor=f"user{n}", action="login", subject="") for n in range(40)))

    def seqs(conn: Connection) -> list[int]:
        return [e.seq for e in iter_events(conn)]

    assert await log.db.run_in_transaction(seqs) == list(range(1, 47))
    assert (await verify_audit(log.db, log.checkpoints)).ok


def teleops(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "teleops.cli", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TELEOPS_CONFIG": ""},
    )


async def test_the_cli_verifies_exports_and_names_the_first_bad_record(log: Log, tmp_path: Path) -> None:
    config = tmp_path / "teleops.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(log.data_dir), "database": {"url": log.url}}))
    intact = await asyncio.to_thread(teleops, config, "audit", "verify")
    assert intact.returncode == 0, intact.stderr
    assert "intact: 6 events" in intact.stdout
    exported = await asyncio.to_thread(teleops, config, "audit", "export", "--since", "5")
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [r["seq"] for r in rows] == [5, 6]
    assert rows[0]["data"]["argv"] == ["rm", "-rf", "/tmp/5"]
    await log.sql("DELETE FROM audit_events WHERE seq = 4")
    broken = await asyncio.to_thread(teleops, config, "audit", "verify")
    assert broken.returncode == 1
    assert "TAMPERED (deleted) at record 4" in broken.stdout


async def test_a_dispatch_that_differs_from_what_was_approved_is_named(db_url: str, tmp_path: Path) -> None:
    # Issue #17.2: the command row changed between the approval request and the dispatch (a database writer, or
    # the controller's own user, which could also compute the approval digest): both records are in the chain.
    db = Database(db_url)
    await db.migrate()
    checkpoints = CheckpointLog(tmp_path / "data")
    asked = {"host": "web-1", "agent": "web-1", "argv": ["systemctl", "restart", "nginx"], "timeout_s": 60}
    try:
        await record(db, at=T0, actor="alice", action="approval.requested", subject="command:7", data=asked)
        await record(db, at=T0, actor="bob", action="approval.approved", subject="command:7", data={})
        ran = {**asked, "argv": ["rm", "-rf", "/"], "approved_by": ["bob"]}
        await record(db, at=T0, actor="alice", action="command.dispatching", subject="command:7", data=ran)
        await checkpoints.checkpoint(db)
        finding = await verify_audit(db, checkpoints)
        assert (finding.ok, finding.kind, finding.seq) == (False, Tamper.APPROVAL, 3)
        assert "dispatched with argv ['rm', '-rf', '/']" in finding.message
        # The same with what was approved verifies (and a timeout changed alone is named too).
        honest = Database(f"sqlite+aiosqlite:///{tmp_path}/honest.db")
        await honest.migrate()
        try:
            await record(honest, at=T0, actor="alice", action="approval.requested", subject="command:7", data=asked)
            await record(honest, at=T0, actor="alice", action="command.dispatching", subject="command:7", data=asked)
            other = CheckpointLog(tmp_path / "honest")
            await other.checkpoint(honest)
            assert (await verify_audit(honest, other)).ok
            await record(honest, at=T0, actor="alice", action="approval.requested", subject="command:8", data=asked)
            longer = {**asked, "timeout_s": 3600}
            await record(honest, at=T0, actor="alice", action="command.dispatching", subject="command:8", data=longer)
            await other.checkpoint(honest)
            assert (await verify_audit(honest, other)).kind == Tamper.APPROVAL
        finally:
            await honest.close()
    finally:
        await db.close()
