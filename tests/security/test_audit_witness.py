"""docs/threat-model.md T29 beyond the data directory (issue #17.1): the audit witness.

A real `teleops audit witness` process runs as its own user (`daemon` here) with its log in a directory that
user owns. The attacker holds the database and TeleOps' OS user: it can re-chain the table, rewrite the local
checkpoint file and re-sign it with the local key, delete or cut either — and `teleops audit verify` still says
so, because the witness's log is out of its reach (checked: a process as another user cannot write it).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.security.test_audit_chain import T0, Log, rechain_without

from teleops.store.audit import record
from teleops.store.audit_checkpoints import CheckpointLog
from teleops.store.audit_verify import Tamper, verify_audit
from teleops.store.database import Database
from teleops.witness.protocol import WitnessClient, WitnessError

WITNESS_USER = pwd.getpwnam("daemon")
CONTROLLER_STAND_IN = pwd.getpwnam("nobody")  # "TeleOps' OS user" when checking what it may write


@dataclass
class WitnessProcess:
    process: subprocess.Popen[bytes]
    socket: Path
    log: Path
    output: Path

    def text(self) -> str:
        return self.output.read_text(errors="replace")


def _as_user(user: pwd.struct_passwd) -> dict[str, Any]:
    """Popen arguments that start a process as ``user`` (only for programs outside /root: the test interpreter
    lives there, so TeleOps itself is started as root with ``--user``, as a root-started service would be)."""
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


@pytest.fixture
def witness_home() -> Iterator[Path]:
    """A directory outside pytest's root-only temporary tree (the witness user must reach it), owned by it."""
    home = Path("/tmp") / f"teleops-witness-{os.getpid()}-{os.urandom(4).hex()}"
    home.mkdir(mode=0o755)
    os.chown(home, WITNESS_USER.pw_uid, WITNESS_USER.pw_gid)
    yield home
    shutil.rmtree(home, ignore_errors=True)


def start_witness(home: Path, *extra: str) -> WitnessProcess:
    socket_path, log_path, output = home / "witness.sock", home / "witness.log", Path(f"{home}.out")
    argv = [sys.executable, "-m", "teleops", "audit", "witness", "--socket", str(socket_path), "--log", str(log_path)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEOPS_")}
    with output.open("wb") as out:
        process = subprocess.Popen(
            [*argv, "--user", WITNESS_USER.pw_name, *extra], stdout=out, stderr=subprocess.STDOUT, env=env, cwd="/"
        )
    witness = WitnessProcess(process, socket_path, log_path, output)
    for _ in range(300):
        if socket_path.exists():
            return witness
        if process.poll() is not None:
            pytest.fail(f"the witness exited with {process.returncode}:\n{witness.text()}")
        subprocess.run(["sleep", "0.05"], check=True)
    pytest.fail(f"the witness did not listen:\n{witness.text()}")


def stop(witness: WitnessProcess) -> None:
    if witness.process.poll() is None:
        witness.process.send_signal(signal.SIGTERM)
        witness.process.wait(10)
    Path(f"{witness.socket.parent}.out").unlink(missing_ok=True)


@pytest.fixture
def witness(witness_home: Path) -> Iterator[WitnessProcess]:
    running = start_witness(witness_home, "--allow-user", "root")
    yield running
    stop(running)


@pytest.fixture
async def witnessed_log(db_url: str, tmp_path: Path, witness: WitnessProcess) -> AsyncIterator[Log]:
    """Six audit records; checkpoints (local file and witness) after the 3rd and the 5th."""
    db = Database(db_url)
    await db.migrate()
    data_dir = tmp_path / "data"
    checkpoints = CheckpointLog(data_dir, witness=witness.socket)
    for number in range(1, 7):
        await record(
            db,
            at=T0 + timedelta(seconds=number),
            actor="alice",
            action="command.dispatching",
            subject=f"command:{number}",
            data={"argv": ["rm", "-rf", f"/tmp/{number}"], "host": "web-1"},
        )
        if number in (3, 5):
            assert await checkpoints.checkpoint(db)
    yield Log(db, checkpoints, data_dir, db_url)
    await db.close()


async def test_an_untouched_log_verifies_against_the_witness(witnessed_log: Log, witness: WitnessProcess) -> None:
    finding = await verify_audit(witnessed_log.db, witnessed_log.checkpoints)
    assert finding.ok, finding.message
    assert (finding.witnessed, finding.witnessed_seq) == (2, 5)
    lines = witness.log.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["3", "5"]
    assert all(line.split()[3] == "0" for line in lines)  # sent by root (SO_PEERCRED)
    info = witness.log.stat()
    assert (info.st_uid, info.st_mode & 0o777) == (WITNESS_USER.pw_uid, 0o644)


async def test_a_rechain_resigned_with_the_local_key_is_caught_by_the_witness(witnessed_log: Log) -> None:
    # The attacker re-chains the table without record 2 and rewrites the local checkpoint file with every key the
    # controller's user can read (audit.key): the local anchor now agrees with the forged chain.
    await rechain_without(witnessed_log, victim=2)
    local = witnessed_log.data_dir / "audit-checkpoints.log"
    local.unlink()
    forged = CheckpointLog(witnessed_log.data_dir)  # same key file, no witness: what the attacker can do
    assert await forged.checkpoint(witnessed_log.db)
    alone = await verify_audit(witnessed_log.db, forged)
    assert alone.ok  # the local anchor alone is fooled: that is why the witness exists
    finding = await verify_audit(witnessed_log.db, witnessed_log.checkpoints)
    assert (finding.ok, finding.kind, finding.seq) == (False, Tamper.RECHAINED, 3)
    assert "the witness recorded" in finding.message


async def test_a_tail_cut_in_step_with_the_local_file_is_caught_by_the_witness(witnessed_log: Log) -> None:
    await witnessed_log.sql(
        "DELETE FROM audit_events WHERE seq >= 4",
        "UPDATE audit_head SET seq = 3, hash = (SELECT hash FROM audit_events WHERE seq = 3) WHERE id = 1",
    )
    local = witnessed_log.data_dir / "audit-checkpoints.log"
    local.write_text(local.read_text().splitlines()[0] + "\n")  # the line for seq 3 stays, valid HMAC
    finding = await verify_audit(witnessed_log.db, witnessed_log.checkpoints)
    assert (finding.ok, finding.kind) == (False, Tamper.TRUNCATED)
    assert "the witness recorded head 5" in finding.message


async def test_deleting_the_local_anchor_fails_and_the_witness_log_is_out_of_the_controllers_reach(
    witnessed_log: Log, witness: WitnessProcess
) -> None:
    (witnessed_log.data_dir / "audit-checkpoints.log").unlink()
    finding = await verify_audit(witnessed_log.db, witnessed_log.checkpoints)
    assert (finding.ok, finding.kind) == (False, Tamper.CHECKPOINT)
    # TeleOps' OS user (a stand-in: any user but the witness's) can neither rewrite, cut nor delete its log.
    attempt = (
        "for how in append truncate unlink; do case $how in "
        'append) printf "999 %064d 0 0\\n" 0 >> "$1" ;; truncate) truncate -s 0 "$1" ;; unlink) rm -f "$1" ;; esac '
        '2>/dev/null && echo "$how WORKED" || echo "$how refused"; done'
    )
    done = subprocess.run(
        ["/bin/sh", "-c", attempt, "attacker", str(witness.log)],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
        **_as_user(CONTROLLER_STAND_IN),
    )
    assert done.stdout.split() == ["append", "refused", "truncate", "refused", "unlink", "refused"]


async def test_a_witness_that_cannot_be_read_fails_verification(witnessed_log: Log, witness: WitnessProcess) -> None:
    stop(witness)
    finding = await verify_audit(witnessed_log.db, witnessed_log.checkpoints)
    assert (finding.ok, finding.kind) == (False, Tamper.WITNESS)
    assert "cannot reach the audit witness" in finding.message


async def test_an_edited_witness_log_is_refused_by_the_witness_and_by_verify(
    witnessed_log: Log, witness: WitnessProcess, witness_home: Path
) -> None:
    # Someone holding the witness's own user (or root) edits its log: the order of seqs no longer holds.
    lines = witness.log.read_text().splitlines()
    witness.log.write_text("\n".join(reversed(lines)) + "\n")
    finding = await verify_audit(witnessed_log.db, witnessed_log.checkpoints)
    assert (finding.ok, finding.kind) == (False, Tamper.WITNESS)
    assert "witnesses seq 3 after seq 5" in finding.message
    stop(witness)
    argv = [sys.executable, "-m", "teleops", "audit", "witness", "--socket", str(witness.socket)]
    argv += ["--log", str(witness.log), "--user", WITNESS_USER.pw_name]
    restarted = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, cwd="/")
    assert restarted.returncode == 78
    assert "the witness log was edited" in restarted.stderr


async def test_heads_only_grow_and_a_sender_not_allowed_is_refused(witness_home: Path) -> None:
    running = start_witness(witness_home, "--allow-user", "nobody")
    try:
        client = WitnessClient(running.socket)
        with pytest.raises(WitnessError, match="uid 0 may not send heads"):
            await asyncio.to_thread(client.send, 7, "a" * 64)
        assert await asyncio.to_thread(client.read) == []
    finally:
        stop(running)
    running = start_witness(witness_home)  # anyone who can open the socket
    try:
        client = WitnessClient(running.socket)
        assert await asyncio.to_thread(client.send, 7, "a" * 64) == 7
        assert await asyncio.to_thread(client.send, 5, "b" * 64) == 7  # older (another replica): not written
        with pytest.raises(WitnessError, match="refused"):
            await asyncio.to_thread(client.send, 8, "not-a-hash")
        assert [(w.seq, w.hash[0]) for w in await asyncio.to_thread(client.read)] == [(7, "a")]
    finally:
        stop(running)


def test_the_witness_refuses_to_run_as_a_user_it_accepts_heads_from(witness_home: Path) -> None:
    argv = [sys.executable, "-m", "teleops", "audit", "witness", "--socket", str(witness_home / "s.sock")]
    argv += ["--log", str(witness_home / "witness.log"), "--user", "daemon"]
    done = subprocess.run([*argv, "--allow-user", "daemon"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 78
    assert "Run it as a user of its own" in done.stderr
    os.chmod(witness_home, 0o777)  # noqa: S103 — the mistake under test
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 78
    assert "writable by nobody else" in done.stderr


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_the_cli_says_what_the_witness_covers(
    witnessed_log: Log, witness: WitnessProcess, tmp_path: Path
) -> None:
    config = tmp_path / "teleops.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(witnessed_log.data_dir),
                "database": {"url": witnessed_log.url},
                "audit": {"witness": str(witness.socket)},
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEOPS_")}
    verify = [sys.executable, "-m", "teleops", "audit", "verify", "--config", str(config)]
    done = subprocess.run(verify, capture_output=True, text=True, timeout=60, check=False, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 witnessed heads checked (newest seq 5)" in done.stdout
    assert "records 6-6 are newer than the newest witnessed head" in done.stderr
    await rechain_without(witnessed_log, victim=2)
    done = subprocess.run(verify, capture_output=True, text=True, timeout=60, check=False, env=env)
    assert done.returncode == 1
    assert "TAMPERED (re-chained) at record 3" in done.stdout
