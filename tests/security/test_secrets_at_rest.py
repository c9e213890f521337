"""Secrets are not kept in clear (issue #17 item 3).

Part one drives the real dispatch step, approval desk, store and argv vault (the agent hub replaced by a
recorder of what would have been sent): a secret typed in a command line is masked in the commands table, the
timeline, the audit data and the approval request, the agent still receives the original, an approval binds
the original across a controller restart, and the seal is wiped once the command is dispatched.

Part two (`test_e2e_…`) runs `teleops serve` as a real process with its local agent and the fake Telegram Bot
API: a command whose argv holds a configured secret and a `tlo_…` token prints both in six encodings, one
occurrence split across an output chunk boundary; then every log line, every table, every chat call and the
API are searched for them. File modes of the data directory are checked too.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shutil
import sqlite3
import stat
import sys
import tempfile
import urllib.parse
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.engine import Connection
from tests.conftest import FakeClock
from tests.fakes.telegram import FakeTelegram, free_port
from tests.scenarios.conftest import ALERT_CHAT, ALICE_ID, eventually

from teleops.commands.approval import ApprovalDesk, ApprovalNews, Vote
from teleops.commands.authorize import current_policy, use_policy
from teleops.commands.dispatch import CommandRequest
from teleops.commands.outcome import AwaitingApproval, Dispatched
from teleops.commands.submit import submit
from teleops.config.settings import parse_duration
from teleops.domain.command import CommandStatus
from teleops.domain.policy import compile_policy
from teleops.domain.redaction import MASK, Redactor, SecretRules, redact
from teleops.server.data_files import check_data_files
from teleops.store.agents import list_agents, register_agent
from teleops.store.approvals import ApprovalRules, get_approval
from teleops.store.audit import iter_events
from teleops.store.commands import get_command
from teleops.store.console_messages import ConsoleMessageStore
from teleops.store.database import Database
from teleops.store.sealed_argv import KEY_FILE, ArgvVault
from teleops.store.users import UserStore
from teleops.wire import Exec

CONFIGURED = "Zq8-Vault/Pass+w0rd=X"  # a configured secret (redaction.secrets), with characters encodings change
TOKEN = "tlo_ag_" + "Kx3vQ9mP2rT7wY1zB5nC8dF4gH6jL0sA_e-UoIiWq"  # the shape store/tokens.py mints


def six_encodings(secret: str) -> dict[str, str]:
    raw = secret.encode()
    return {
        "plain": secret,
        "base64": base64.b64encode(raw).decode(),
        "base64url": base64.urlsafe_b64encode(raw).decode(),
        "hex": raw.hex(),
        "percent": urllib.parse.quote(secret, safe=""),
        "json": json.dumps(secret)[1:-1],
    }


# ---------------------------------------------------------------------------------------------------------------
# The redactor: TeleOps tokens in every encoding, and split across chunks


@pytest.mark.parametrize("encoding", list(six_encodings(TOKEN)))
def test_a_teleops_token_is_masked_in_each_encoding_by_the_built_ins(encoding: str) -> None:
    form = six_encodings(TOKEN)[encoding]
    masked = redact(f"cat /etc/agent.token → {form} (end)", SecretRules.build())
    assert form not in masked
    assert TOKEN[7:20] not in masked
    assert MASK in masked


@pytest.mark.parametrize("encoding", list(six_encodings(CONFIGURED)))
def test_a_configured_secret_is_masked_in_each_encoding(encoding: str) -> None:
    form = six_encodings(CONFIGURED)[encoding]
    masked = redact(f"value: {form};", SecretRules.build(known_secrets=[CONFIGURED]))
    assert form not in masked
    assert MASK in masked


@pytest.mark.parametrize("cut", [1, 4, 7, 20, len(TOKEN) - 1])
def test_a_teleops_token_split_across_chunks_is_held_back_and_masked_whole(cut: int) -> None:
    stream = Redactor(SecretRules.build())
    text_in = "a" * 300 + " token " + TOKEN + " tail " + "b" * 300
    split_at = 300 + len(" token ") + cut
    out = stream.feed(text_in[:split_at]) + stream.feed(text_in[split_at:]) + stream.flush()
    assert TOKEN[:7] + TOKEN[7:][:4] not in out
    assert out == redact(text_in, SecretRules.build())
    assert out.count(MASK) == 1


def test_a_token_prefix_alone_is_not_taken_for_a_token() -> None:
    assert redact("the tlo_ag_ prefix marks agent tokens", SecretRules.build()) == (
        "the tlo_ag_ prefix marks agent tokens"
    )


# ---------------------------------------------------------------------------------------------------------------
# The argv vault


def test_the_vault_masks_arguments_seals_the_original_and_proves_it(tmp_path: Path) -> None:
    vault = ArgvVault.open(tmp_path, SecretRules.build(known_secrets=[CONFIGURED]))
    argv = ["deploy", "--password", "hunter2-plain", f"--key={CONFIGURED}", TOKEN, "uptime"]
    protected = vault.protect(argv, "deploy --password hunter2-plain ...")
    assert protected.shown == ["deploy", "--password", MASK, f"--key={MASK}", MASK, "uptime"]
    assert protected.sealed is not None
    assert protected.argv_hmac is not None
    for secret in ("hunter2-plain", CONFIGURED, TOKEN):
        assert secret not in protected.sealed
        assert secret not in json.dumps(protected.audit_fields())
        assert secret not in (protected.shown_text or "")
    assert vault.open_sealed(protected.sealed).argv == argv
    assert vault.proves(argv, protected.argv_hmac)
    assert not vault.proves([*argv[:-1], "reboot"], protected.argv_hmac)
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    reopened = ArgvVault.open(tmp_path, SecretRules.build(known_secrets=[CONFIGURED]))  # the same key file
    assert reopened.open_sealed(protected.sealed).argv == argv


def test_a_command_line_without_secrets_is_kept_as_typed_and_not_sealed(tmp_path: Path) -> None:
    vault = ArgvVault.open(tmp_path, SecretRules.build(known_secrets=[CONFIGURED]))
    protected = vault.protect(["df", "-h", "/var"], "df -h /var")
    assert (protected.shown, protected.shown_text, protected.sealed, protected.audit_fields()) == (
        ["df", "-h", "/var"],
        "df -h /var",
        None,
        {},
    )


# ---------------------------------------------------------------------------------------------------------------
# Data files


def test_readable_data_files_of_ours_are_tightened_at_start_and_subdirectories_left_alone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "local-agent-state").mkdir(parents=True)
    for name in ("teleops.db", "teleops.db-wal", "audit-checkpoints.log", "local-agent-state/spooled.json"):
        (data / name).write_text("x")
        (data / name).chmod(0o644)
    (data / "argv.key").write_text("x")
    (data / "argv.key").chmod(0o600)
    findings = check_data_files(data, f"sqlite+aiosqlite:///{data}/teleops.db")
    assert sorted((f.path.name, oct(f.mode), f.tightened) for f in findings) == [
        ("audit-checkpoints.log", "0o644", True),
        ("teleops.db", "0o644", True),
        ("teleops.db-wal", "0o644", True),
    ]
    for name in ("teleops.db", "teleops.db-wal", "audit-checkpoints.log", "argv.key"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE((data / "local-agent-state/spooled.json").stat().st_mode) == 0o644
    assert check_data_files(data, f"sqlite+aiosqlite:///{data}/teleops.db") == []


def test_a_new_sqlite_database_is_created_0600_with_its_wal(tmp_path: Path) -> None:
    previous = os.umask(0o022)  # even under a permissive umask
    try:
        database = Database(f"sqlite+aiosqlite:///{tmp_path}/fresh.db")
        asyncio.run(database.migrate())
        asyncio.run(database.close())
    finally:
        os.umask(previous)
    made = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir() if p.name.startswith("fresh.db")}
    assert made["fresh.db"] == 0o600
    assert all(mode == 0o600 for mode in made.values()), made


# ---------------------------------------------------------------------------------------------------------------
# Through the real pipeline and store (approval across a restart)

POLICY = yaml.safe_load(
    """
operator:
  - {hosts: ["*"], commands: ["deploy *"], require_2fa: false}
  - {hosts: ["*"], commands: ["rotate *"], require_approval: true, require_2fa: false}
"""
)


@dataclass
class Recorder:
    sent: list[Exec] = field(default_factory=list)

    def is_connected(self, agent_name: str) -> bool:
        return True

    async def send_exec(self, agent_name: str, message: Exec) -> None:
        self.sent.append(message)


@dataclass
class Controller:
    """One controller's store side: its database handle with the argv vault of `data_dir`."""

    db: Database
    users: UserStore
    sender: Recorder
    clock: FakeClock
    news: list[ApprovalNews]

    def desk(self) -> ApprovalDesk:
        desk = ApprovalDesk(
            db=self.db,
            users=self.users,
            sender=self.sender,
            clock=self.clock,
            rules=ApprovalRules(ttl=timedelta(minutes=15), needed=1),
            output_cap_bytes=65536,
        )

        async def hear(news: ApprovalNews) -> None:
            self.news.append(news)

        desk.listen(hear)
        return desk


async def start_controller(db_url: str, data_dir: Path, clock: FakeClock) -> Controller:
    db = Database(db_url)
    db.argv_vault = ArgvVault.open(data_dir, SecretRules.build(known_secrets=[CONFIGURED]))
    await db.migrate()
    return Controller(db, UserStore(db), Recorder(), clock, [])


@pytest.fixture
async def first(db_url: str, tmp_path: Path) -> AsyncIterator[Controller]:
    previous = current_policy()
    use_policy(compile_policy(POLICY, parse_duration=parse_duration))
    clock = FakeClock(datetime(2026, 12, 6, 9, 0, tzinfo=UTC))
    controller = await start_controller(db_url, tmp_path / "data", clock)
    await register_agent(
        controller.db, name="web-1", hostname="web-1", version="1", labels={}, allowlist_digest="", now=clock()
    )
    for name in ("alice", "bob"):
        await controller.users.ensure(name, "operator", now=clock())
    yield controller
    await controller.db.close()
    use_policy(previous)


async def dump_database(db: Database) -> str:
    """Every row of every table, as text."""

    def dump(conn: Connection) -> str:
        if conn.dialect.name == "sqlite":
            names = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'")).scalars().all()
        else:
            query = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            names = conn.execute(text(query)).scalars().all()
        # Table names come from the database's own catalogue, not from input.
        return "\n".join(repr(conn.execute(text(f'SELECT * FROM "{name}"')).all()) for name in names)  # noqa: S608

    return await db.run_in_transaction(dump)


def assert_nowhere(secrets_: Sequence[str], **places: str) -> None:
    for place, content in places.items():
        for secret in secrets_:
            assert secret not in content, f"{secret[:6]}… leaked into {place}"


async def test_a_secret_in_a_dispatched_command_is_masked_at_rest_and_sent_in_full(first: Controller) -> None:
    argv = ["deploy", "--password", "hunter2-plain", f"--db={CONFIGURED}", TOKEN]
    request = CommandRequest("alice", "operator", "web-1", " ".join(argv), 60, 65536)
    outcome = await submit(first.db, first.sender, await list_agents(first.db), request, now=first.clock())
    assert isinstance(outcome, Dispatched), outcome
    record = outcome.record
    assert [m.argv for m in first.sender.sent] == [argv]  # the agent gets the original
    stored = await get_command(first.db, record.id)
    assert stored.argv == ["deploy", "--password", MASK, f"--db={MASK}", MASK]
    assert stored.sealed_argv is None  # dispatched at once: the original was never stored
    events = [e for e in await _events(first.db) if e.action == "command.dispatching"]
    assert first.db.argv_vault is not None
    assert first.db.argv_vault.proves(argv, events[0].data["argv_hmac"])
    assert_nowhere(["hunter2-plain", CONFIGURED, TOKEN], database=await dump_database(first.db))


async def test_a_command_typed_in_the_web_console_is_kept_masked_in_its_history(first: Controller) -> None:
    store = ConsoleMessageStore(first.db)
    typed = f"/run web-1 deploy --password hunter2-plain {TOKEN} --db={CONFIGURED}"
    record = await store.append({"text": typed, "buttons": []}, now=first.clock(), author="alice")
    assert record.body["text"] == f"/run web-1 deploy --password {MASK} {MASK} --db={MASK}"
    bot = await store.append({"text": "df -h", "buttons": []}, now=first.clock())  # not typed by a person
    assert bot.body["text"] == "df -h"
    assert_nowhere(["hunter2-plain", CONFIGURED, TOKEN], database=await dump_database(first.db))


async def test_an_approval_binds_the_original_argv_across_a_restart_and_the_seal_is_wiped(
    first: Controller, db_url: str, tmp_path: Path
) -> None:
    argv = ["rotate", "--token", TOKEN, f"secret={CONFIGURED}"]
    request = CommandRequest("alice", "operator", "web-1", " ".join(argv), 60, 65536, platform="telegram")
    waits = await submit(
        first.db, first.sender, await list_agents(first.db), request, now=first.clock(), approval=first.desk().rules
    )
    assert isinstance(waits, AwaitingApproval), waits
    command_id = waits.record.id
    approval = await get_approval(first.db, command_id)
    assert approval is not None
    assert approval.command_text == f"rotate --token {MASK} secret={MASK}"  # the approver sees that, not what
    waiting = await get_command(first.db, command_id)
    assert waiting.status == CommandStatus.QUEUED
    assert waiting.sealed_argv is not None
    assert_nowhere([TOKEN, CONFIGURED], database=await dump_database(first.db))
    await first.db.close()

    # A new controller process: the same database and data directory, nothing in memory.
    second = await start_controller(db_url, tmp_path / "data", first.clock)
    try:
        answer = await second.desk().vote(command_id, voter="bob", vote=Vote.APPROVE, digest=approval.short_digest)
        assert answer == f"Command {command_id} approved by bob."
        assert [m.argv for m in second.sender.sent] == [argv]
        assert f"running `rotate --token {MASK} secret={MASK}`" in second.news[-1].text
        after = await get_command(second.db, command_id)
        assert (after.status, after.sealed_argv) == (CommandStatus.RUNNING, None)
        dispatching = [e for e in await _events(second.db) if e.action == "command.dispatching"][-1]
        assert second.db.argv_vault is not None
        assert second.db.argv_vault.proves(argv, dispatching.data["argv_hmac"])
        assert_nowhere([TOKEN, CONFIGURED], database=await dump_database(second.db))
    finally:
        await second.db.close()


async def test_a_sealed_command_whose_key_is_gone_is_not_run(first: Controller, db_url: str, tmp_path: Path) -> None:
    request = CommandRequest("alice", "operator", "web-1", f"rotate {TOKEN}", 60, 65536)
    waits = await submit(
        first.db, first.sender, await list_agents(first.db), request, now=first.clock(), approval=first.desk().rules
    )
    assert isinstance(waits, AwaitingApproval), waits
    approval = await get_approval(first.db, waits.record.id)
    assert approval is not None
    await first.db.close()
    (tmp_path / "data" / KEY_FILE).unlink()  # a new key is made: the old seal cannot be opened
    second = await start_controller(db_url, tmp_path / "data", first.clock)
    try:
        await second.desk().vote(approval.command_id, voter="bob", vote=Vote.APPROVE, digest=approval.short_digest)
        ended = await get_command(second.db, approval.command_id)
        assert (ended.status, ended.sealed_argv, second.sender.sent) == (CommandStatus.DENIED, None, [])
        assert ended.reason is not None
        assert "argv.key in the data directory is missing" in ended.reason
        assert "restore the key file, or ask for the command again" in ended.reason
        assert f"Command {approval.command_id} was approved by bob but not run: the command's original argv cannot" in (
            second.news[-1].text
        )
    finally:
        await second.db.close()


async def _events(db: Database) -> list[Any]:
    def read(conn: Connection) -> list[Any]:
        return list(iter_events(conn))

    return await db.run_in_transaction(read)


# ---------------------------------------------------------------------------------------------------------------
# End to end: `teleops serve` as a process, its local agent, the fake Telegram Bot API

# Prints sha256 of each argument (proving the agent got the originals), then both secrets in six encodings; each
# form is split across two output messages: the agent passes on all but its last 256 characters, so the filler
# after the second half makes the cut fall between the halves. The embedded agent knows the configured secret
# (--redact-file) and masks it first; the controller's stream redactor holding a split secret back is proven on
# its own in the Redactor tests above (every cut point).
SCRIPT = r"""
import base64, hashlib, json, sys, time, urllib.parse
def say(text):
    sys.stdout.write(text); sys.stdout.flush()
def slowly(text):
    half = len(text) // 2
    say(text[:half]); time.sleep(0.3)
    say(text[half:] + "." * (256 - len(text) + half)); time.sleep(0.3)
    say("\n" + "-" * 300)
for arg in sys.argv[2:]:
    say("sha256 " + hashlib.sha256(arg.encode()).hexdigest() + "\n")
for n, secret in enumerate(sys.argv[2:]):
    raw = secret.encode()
    forms = {"plain": secret, "base64": base64.b64encode(raw).decode(), "base64url": base64.urlsafe_b64encode(raw).decode(),
             "hex": raw.hex(), "percent": urllib.parse.quote(secret, safe=""), "json": json.dumps(secret)[1:-1]}
    for name, form in forms.items():
        say(f"s{n} {name}: "); slowly(form); say("\n")
say("end\n")
"""
# A Python any user can run: the local agent may run commands as an unprivileged user, who cannot reach a venv
# under /root or a pytest temp directory (0700).
PYTHON = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
ADMIN_APPROVES = f"{PYTHON} *"


@dataclass
class Served:
    """A `teleops serve` process and what a person gets from it."""

    process: asyncio.subprocess.Process
    url: str
    data_dir: Path
    log: Path

    def credentials(self) -> str:
        path = self.data_dir / "first-start-credentials.txt"
        return path.read_text() if path.is_file() else ""

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def serve(config: Path, cwd: Path, url: str, data_dir: Path, log: Path) -> Served:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEOPS_")}
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "teleops.cli", "serve", "--config", str(config),
            cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    served = Served(process, url, data_dir, log)

    async def ready() -> bool:
        assert process.returncode is None, log.read_text(errors="replace")[-3000:]
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                return (await client.get(f"{url}/readyz")).status_code == 200
        except httpx.HTTPError:
            return False

    await eventually(ready, timeout=120, what="teleops serve to be ready")
    return served


@pytest.fixture
async def served(fake_telegram: FakeTelegram, tmp_path: Path) -> AsyncIterator[tuple[Served, Path]]:
    data_dir = tmp_path / "data"
    port = free_port()
    config = tmp_path / "teleops.yaml"
    settings = {
        "data_dir": str(data_dir),
        "server": {"listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}"},
        "database": {"url": f"sqlite+aiosqlite:///{data_dir}/teleops.db"},
        "local_agent": {"enabled": True, "name": "web-1"},  # the embedded default: it may run commands as nobody
        "telegram": {
            "token": fake_telegram.token,
            "base_url": fake_telegram.base_url,
            "allowed_chats": [ALERT_CHAT],
            "alert_chats": [ALERT_CHAT],
            "poll_timeout": "1s",
        },
        "users": [{"name": "alice", "role": "operator", "telegram_id": ALICE_ID}],
        "redaction": {"secrets": [CONFIGURED]},
        "policy": {
            "roles": {
                "operator": [
                    {"hosts": ["*"], "commands": [f"{PYTHON} ** s0 *"], "require_2fa": False},
                    {"hosts": ["*"], "commands": [f"{PYTHON} ** s1 *"], "require_approval": True, "require_2fa": False},
                ],
                "admin": [{"hosts": ["*"], "commands": [ADMIN_APPROVES], "require_2fa": False}],
            }
        },
    }
    config.write_text(yaml.safe_dump(settings))
    run = await serve(config, tmp_path, f"http://127.0.0.1:{port}", data_dir, tmp_path / "serve.log")
    try:
        yield run, config
    finally:
        await run.stop()


async def command_when(client: httpx.AsyncClient, command_id: int, headers: dict[str, str], *states: str) -> Any:
    async def check() -> Any:
        answer = await client.get(f"/api/v1/commands/{command_id}", headers=headers)
        return answer if answer.status_code == 200 and answer.json()["status"] in states else None

    return await eventually(check, timeout=90, what=f"command {command_id} to be {'/'.join(states)}")


@pytest.fixture
def canary_dir() -> Iterator[Path]:
    """A directory every user can read (the command may run as another user than the test)."""
    folder = Path(tempfile.mkdtemp(prefix="teleops-canary-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def every_row(database: Path) -> str:
    with sqlite3.connect(database) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        # Table names come from the database's own catalogue, not from input.
        return "\n".join(repr(conn.execute(f'SELECT * FROM "{name}"').fetchall()) for name in names)  # noqa: S608


async def test_e2e_secrets_in_argv_and_output_are_found_in_no_log_table_chat_or_api_and_files_are_0600(
    served: tuple[Served, Path], fake_telegram: FakeTelegram, tmp_path: Path, canary_dir: Path
) -> None:
    run, config = served
    fake = fake_telegram
    await eventually(lambda: "API token" in run.credentials(), what="the first-start credentials file")
    api_token = run.credentials().split("API token   : ")[1].split()[0]
    admin = {"Authorization": f"Bearer {api_token}"}
    script = canary_dir / "canaries.py"
    script.write_text(SCRIPT)
    script.chmod(0o644)
    async with httpx.AsyncClient(base_url=run.url, timeout=10) as client:

        async def agent_online() -> bool:
            items = (await client.get("/api/v1/agents", headers=admin)).json()["items"]
            return any(a["name"] == "web-1" and a["online"] for a in items)

        await eventually(agent_online, timeout=60, what="the local agent to connect")
        # 1. Runs at once: the argv holds the configured secret and a TeleOps token.
        fake.push_update(
            fake.message_update(ALERT_CHAT, ALICE_ID, f"/run web-1 {PYTHON} {script} s0 {CONFIGURED} {TOKEN}")
        )
        first = (await command_when(client, 1, admin, "succeeded", "failed", "denied")).json()
        assert first["status"] == "succeeded", (first["output"], first.get("reason"))
        # 2. Needs approval; approved (by the admin, over the API) after a controller restart.
        fake.push_update(
            fake.message_update(ALERT_CHAT, ALICE_ID, f"/run web-1 {PYTHON} {script} s1 {TOKEN} {CONFIGURED}")
        )
        assert (await command_when(client, 2, admin, "queued")).json()["argv"][2:] == ["s1", MASK, MASK]
        await eventually(
            lambda: any("Approval needed" in m.text for m in fake.chat_messages(ALERT_CHAT)), what="the request"
        )
    await run.stop()
    run = await serve(config, tmp_path, run.url, run.data_dir, run.log)
    try:
        async with httpx.AsyncClient(base_url=run.url, timeout=10) as client:
            await eventually(agent_online, timeout=60, what="the local agent to connect again")
            approved = await client.post("/api/v1/commands/2/approve", headers=admin)
            assert approved.status_code == 200, approved.text
            second = (await command_when(client, 2, admin, "succeeded", "failed", "denied")).json()
            assert second["status"] == "succeeded", second
            await eventually(
                lambda: sum(" · succeeded" in m.text for m in fake.chat_messages(ALERT_CHAT)) >= 2,
                what="both final chat edits",
            )
            api = "\n".join(
                [json.dumps(first), json.dumps(second), (await client.get("/api/v1/agents", headers=admin)).text]
            )
    finally:
        await run.stop()

    # The agent received the originals (their hashes were printed), and every form was printed, masked.
    for output, order in ((first["output"], (CONFIGURED, TOKEN)), (second["output"], (TOKEN, CONFIGURED))):
        for secret in order:
            assert "sha256 " + hashlib.sha256(secret.encode()).hexdigest() in output
        for n in range(2):
            for name in six_encodings(CONFIGURED):
                assert f"s{n} {name}: {MASK}" in output, output
    chat = "\n".join(repr(call.params) for call in fake.calls)
    assert f"s0 {MASK} {MASK}" in chat  # the chat echo shows that secrets were there
    places = {"database": every_row(run.data_dir / "teleops.db"), "api": api, "chat": chat}
    forms = {f"{who} {name}": form for who, secret in (("configured", CONFIGURED), ("token", TOKEN))
             for name, form in six_encodings(secret).items()}  # fmt: skip
    for place, content in places.items():
        for name, form in forms.items():
            assert form not in content, f"{name} leaked into the {place}"
    log_lines = run.log.read_text(errors="replace").splitlines()
    # The local agent's own lines (the argv it runs) are masked with the controller's configured secrets too: it
    # gets them in a 0600 file (--redact-file).
    leaking = {line for line in log_lines for form in forms.values() if form in line}
    assert leaking == set()
    assert any("agent.command_started" in line for line in log_lines)
    # Every file the controller made is its user's alone.
    loose = {
        str(path.relative_to(run.data_dir)): oct(stat.S_IMODE(path.stat().st_mode))
        for path in run.data_dir.rglob("*")
        if path.is_file() and path.stat().st_mode & 0o077
    }
    assert loose == {}
    assert {"teleops.db", "argv.key", "first-start-credentials.txt"} <= {p.name for p in run.data_dir.iterdir()}
