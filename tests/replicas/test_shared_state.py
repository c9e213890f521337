"""Two `teleops serve` replicas on one PostgreSQL keep one set of security state (issue #23, items 4 and 5).

Driven over HTTP as an attacker would try, with one cookie jar for both replicas (cookies do not depend on the
port, as behind a load balancer): a session started on A works on B and a logout on B ends it on A; the password
step on A and the code step on B make one sign-in; a TOTP code used on one is refused on the other; wrong passwords
spread over both lock the name on both, and the login throttle counts tries on both; an elevation granted on A
lets a command run on B without another code; a Duo push waiting through A refuses a second one through B, and its
approval elevates the person on B. Then the schema version check: a replica refuses a database a newer
TeleOps migrated (exit 1 and the message), a running one reports it on /readyz, and replicas starting together on an
empty database take turns migrating it.

The replicas share the key files as docs/replicas.md says: B's data directory gets A's `argv.key` and
`twofactor.key` before B starts.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import asyncpg
import httpx
import pyotp
import pytest
import yaml

from teleops.store.database import newest_revision
from tests.fakes.duo import Answer, FakeDuo
from tests.integration.servers import (
    REPLICA_KEY_FILES,
    PostgresServer,
    TeleopsServer,
    _run_coroutine,
    agent_online,
    start_agent,
    start_teleops,
    stop_process,
    wait_until,
)

OPERATOR = "olga"
ENROLLED = "ada"
PAIR_CONFIG: dict[str, Any] = {
    "users": [{"name": OPERATOR, "role": "operator"}, {"name": ENROLLED, "role": "operator"}],
}


@dataclass
class Pair:
    a: TeleopsServer
    b: TeleopsServer
    totp: pyotp.TOTP  # ENROLLED's authenticator

    def password(self, user: str) -> str:
        """A fresh password through A's CLI (the database is shared: it is B's password too)."""
        return self.a.cli("user", "set-password", user, "--generate").stdout.strip().splitlines()[-1]


def _enrol(server: TeleopsServer, user: str) -> pyotp.TOTP:
    uri = server.cli("user", "2fa-enroll", user).stdout.strip().splitlines()[-1]
    return pyotp.TOTP(parse_qs(urlparse(uri).query)["secret"][0])


def _start_pair(postgres: PostgresServer, tmp_path: Path, config: dict[str, Any], stack: list[TeleopsServer]) -> Pair:
    url = postgres.create_database()
    a = start_teleops(tmp_path / "a", database_url=url, config=config)
    stack.append(a)
    totp = _enrol(a, ENROLLED)
    b = start_teleops(tmp_path / "b", database_url=url, config=config, keys_from=a)  # the same key files
    stack.append(b)
    return Pair(a, b, totp)


@pytest.fixture
def pair_of(postgres_server: PostgresServer, tmp_path: Path) -> Iterator[Callable[..., Pair]]:
    """Factory: two replicas on one fresh database, with `config` (default PAIR_CONFIG); stopped by PID after."""
    started: list[TeleopsServer] = []

    def make(config: dict[str, Any] | None = None) -> Pair:
        return _start_pair(postgres_server, tmp_path, config or PAIR_CONFIG, started)

    try:
        yield make
    finally:
        for server in started:
            stop_process(server.process)


def _field(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"the page has no {name} field:\n{html[:500]}"
    return match.group(1)


def _password_step(client: httpx.Client, server: TeleopsServer, user: str, password: str) -> httpx.Response:
    page = client.get(f"{server.url}/ui/login")
    form = {"username": user, "password": password, "csrf_token": _field(page.text, "csrf_token"), "next": "/ui/"}
    return client.post(f"{server.url}/ui/login", data=form)


def _code_step(client: httpx.Client, server: TeleopsServer, code_form: httpx.Response, code: str) -> httpx.Response:
    form = {
        "ticket": _field(code_form.text, "ticket"),
        "csrf_token": _field(code_form.text, "csrf_token"),
        "code": code,
        "next": "/ui/",
    }
    return client.post(f"{server.url}/ui/login/code", data=form)


def _signed_in(client: httpx.Client, server: TeleopsServer) -> bool:
    return client.get(f"{server.url}/api/v1/incidents").status_code == 200


def _next_code(totp: pyotp.TOTP) -> str:
    """The next 30 s step's code: accepted now (one step of skew), never the one an earlier test step used."""
    return totp.at(time.time() + 30)


def test_a_session_from_one_replica_opens_the_other_and_a_logout_on_either_ends_it_on_both(
    pair_of: Callable[..., Pair],
) -> None:
    pair = pair_of()
    with httpx.Client(timeout=10) as client:
        started = _password_step(client, pair.a, OPERATOR, pair.password(OPERATOR))
        assert started.status_code == 303, started.text
        assert _signed_in(client, pair.b)
        page = client.get(f"{pair.b.url}/ui/")
        assert page.status_code == 200
        stolen = dict(client.cookies)  # what an attacker copied before the logout
        logout = client.post(f"{pair.b.url}/ui/logout", data={"csrf_token": _field(page.text, "csrf_token")})
        assert logout.status_code == 303, logout.text
    for server in (pair.a, pair.b):
        replayed = httpx.get(f"{server.url}/api/v1/incidents", cookies=stolen, timeout=10)
        assert replayed.status_code == 401, f"{server.url}: a cookie from before the logout still works"


def test_the_password_on_one_replica_and_the_code_on_the_other_sign_in_and_the_code_is_then_spent_on_both(
    pair_of: Callable[..., Pair],
) -> None:
    pair = pair_of()
    password = pair.password(ENROLLED)
    code = _next_code(pair.totp)
    with httpx.Client(timeout=10) as first:
        code_form = _password_step(first, pair.a, ENROLLED, password)
        assert code_form.status_code == 200, code_form.text
        assert 'name="ticket"' in code_form.text
        signed = _code_step(first, pair.b, code_form, code)  # the ticket was signed by A
        assert signed.status_code == 303, signed.text
        assert _signed_in(first, pair.a)
    for server in (pair.a, pair.b):  # the same code again, on either replica: refused
        with httpx.Client(timeout=10) as attacker:
            code_form = _password_step(attacker, server, ENROLLED, password)
            replay = _code_step(attacker, server, code_form, code)
            assert replay.status_code == 401, f"{server.url} accepted a used code: {replay.status_code}"
            assert "already used" in replay.text
            assert not _signed_in(attacker, server)
        time.sleep(1.5)  # past the 1 s wait a refused code imposes (shared too), so B judges the code itself


def test_wrong_passwords_spread_over_both_replicas_lock_the_name_on_both(pair_of: Callable[..., Pair]) -> None:
    pair = pair_of()  # twofactor.lockout_after: 5 (the default)
    password = pair.password(OPERATOR)
    with httpx.Client(timeout=10) as client:
        answers = [
            _password_step(client, server, OPERATOR, "wrong password").status_code
            for server in (pair.a, pair.b, pair.a, pair.b, pair.a)
        ]
        assert answers == [401, 401, 401, 401, 429], "five in a row over both replicas must lock the name"
        for server in (pair.b, pair.a):  # now even the right password is refused, on both
            right = _password_step(client, server, OPERATOR, password)
            assert right.status_code == 429, right.text
            assert "is locked after too many failed attempts" in right.text
            assert not _signed_in(client, server)


def test_the_login_throttle_counts_the_tries_made_on_both_replicas(pair_of: Callable[..., Pair]) -> None:
    pair = pair_of({**PAIR_CONFIG, "twofactor": {"lockout_after": 50}})  # only the throttle (10 a minute) applies
    with httpx.Client(timeout=10) as client:
        answers = [
            _password_step(client, server, OPERATOR, f"guess {n}").status_code
            for n, server in enumerate([pair.a, pair.b] * 5)
        ]
        assert answers == [401] * 10
        for server in (pair.a, pair.b):
            eleventh = _password_step(client, server, OPERATOR, "guess 11")
            assert eleventh.status_code == 429, f"{server.url} let an 11th try through"
            assert "Too many failed logins" in eleventh.text


def test_an_elevation_granted_on_one_replica_lets_a_command_run_on_the_other(
    pair_of: Callable[..., Pair], tmp_path: Path
) -> None:
    # Every admin command needs a code; the API token acts as admin. The agent is connected to B only.
    config = {
        **PAIR_CONFIG,
        "policy": {
            "roles": {
                "admin": [{"hosts": ["*"], "commands": ["*"], "require_2fa": True}],
                "operator": [{"hosts": ["*"], "commands": ["uptime"], "require_2fa": False}],
            }
        },
    }
    pair = pair_of(config)
    agent = start_agent(pair.b, "web-1", tmp_path / "agent", allow=("echo *",))
    try:
        wait_until(lambda: agent_online(pair.b, "web-1", agent), what="the agent on replica B")
        command = {"host": "web-1", "command": "echo elevated"}
        refused = httpx.post(f"{pair.b.url}/api/v1/commands", json=command, headers=pair.b.api_headers, timeout=10)
        assert refused.status_code == 403, refused.text
        assert refused.json().get("needs") == "otp"
        admin = _enrol(pair.a, "admin")
        with httpx.Client(timeout=10) as client:  # the admin signs in on A with a code: elevated
            code_form = _password_step(client, pair.a, "admin", pair.password("admin"))
            assert _code_step(client, pair.a, code_form, _next_code(admin)).status_code == 303
        ran = httpx.post(f"{pair.b.url}/api/v1/commands", json=command, headers=pair.b.api_headers, timeout=10)
        assert ran.status_code == 202, f"B did not count A's elevation: {ran.status_code} {ran.text}"
    finally:
        stop_process(agent)


def test_one_duo_push_at_a_time_and_its_approval_count_on_every_replica(
    pair_of: Callable[..., Pair], tmp_path: Path
) -> None:
    fake = FakeDuo(default=Answer.WAIT)
    fake.start()
    try:
        config = {
            "users": [*PAIR_CONFIG["users"], {"name": "dora", "role": "operator", "twofactor": "duo"}],
            "twofactor": {
                "duo": {
                    "ikey": fake.ikey,
                    "skey": fake.skey,
                    "api_host": fake.api_host,
                    "timeout": "2s",
                    "push_timeout": "30s",
                    "ca_certs": str(fake.ca_certs),
                }
            },
            "policy": {
                "roles": {
                    "admin": [{"hosts": ["*"], "commands": ["*"], "require_2fa": False}],
                    "operator": [{"hosts": ["web-*"], "commands": ["echo *"], "require_2fa": True}],
                }
            },
        }
        pair = pair_of(config)
        agents = [
            start_agent(pair.a, "web-1", tmp_path / "web-1", allow=("echo *",)),
            start_agent(pair.b, "web-2", tmp_path / "web-2", allow=("echo *",)),
        ]
        try:
            wait_until(lambda: agent_online(pair.a, "web-1", agents[0]), what="web-1 on replica A")
            wait_until(lambda: agent_online(pair.b, "web-2", agents[1]), what="web-2 on replica B")
            dora = {"Authorization": f"Bearer {pair.a.create_token('api', 'dora-cli', '--user', 'dora')}"}
            first: list[httpx.Response] = []
            waiting = threading.Thread(
                target=lambda: first.append(
                    httpx.post(
                        f"{pair.a.url}/api/v1/commands",
                        json={"host": "web-1", "command": "echo first"},
                        headers=dora,
                        timeout=60,
                    )
                )
            )
            waiting.start()
            wait_until(lambda: len(fake.pushes()) == 1, what="the push for the command on A")
            # The same person, through B, while that push waits: refused, and no second push (T20).
            busy = httpx.post(
                f"{pair.b.url}/api/v1/commands",
                json={"host": "web-2", "command": "echo second"},
                headers=dora,
                timeout=30,
            )
            assert busy.status_code == 403, busy.text
            assert "already waiting on your phone for `echo first` on web-1" in busy.json()["detail"]
            assert len(fake.pushes()) == 1
            assert fake.resolve("dora", Answer.APPROVE) == 1
            waiting.join(timeout=60)
            assert first[0].status_code == 202, first[0].text
            # The approval on A elevates dora on B: the next command there runs without a push.
            third = httpx.post(
                f"{pair.b.url}/api/v1/commands",
                json={"host": "web-2", "command": "echo third"},
                headers=dora,
                timeout=30,
            )
            assert third.status_code == 202, third.text
            assert len(fake.pushes()) == 1
        finally:
            for agent in agents:
                stop_process(agent)
    finally:
        fake.stop()


def test_a_replica_without_the_others_key_files_refuses_to_start_saying_what_to_copy(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = postgres_server.create_database()
    first = start_teleops(tmp_path / "a", database_url=url)
    stop_process(first.process)
    assert {name for name in REPLICA_KEY_FILES if (first.data_dir / name).is_file()} == set(REPLICA_KEY_FILES)
    config = yaml.safe_load(first.config_path.read_text())
    second = tmp_path / "b"
    (second / "data").mkdir(parents=True, mode=0o700)
    config["data_dir"] = str(second / "data")
    (second / "teleops.yaml").write_text(yaml.safe_dump(config))

    missing = _serve(second / "teleops.yaml", first.env)
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert "argv.key is missing, but the other replicas on this database have one" in missing.stderr
    assert not (second / "data" / "argv.key").exists()  # it made no key of its own

    (second / "data" / "argv.key").write_text("ab" * 32 + "\n")  # a key, but not theirs
    shutil.copy2(first.data_dir / "twofactor.key", second / "data" / "twofactor.key")
    different = _serve(second / "teleops.yaml", first.env)
    assert different.returncode == 1, different.stdout + different.stderr
    assert "argv.key is not the argv.key the other replicas on this database use" in different.stderr

    shutil.copy2(first.data_dir / "argv.key", second / "data" / "argv.key")
    agreed = start_teleops(second, database_url=url, config={"data_dir": str(second / "data")})
    stop_process(agreed.process)


# --- the schema version check ---------------------------------------------------------------------------------


def _serve(config_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "teleops.cli", "serve", "--config", str(config_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_replica_refuses_a_database_a_newer_teleops_migrated_and_changes_nothing(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = postgres_server.create_database()
    server = start_teleops(tmp_path / "a", database_url=url)
    stop_process(server.process)
    name = url.rsplit("/", 1)[1]
    _stamp(postgres_server, name, "9999_from_the_future")
    done = _serve(server.config_path, server.env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "revision 9999_from_the_future, which this TeleOps does not know" in done.stderr
    assert f"its newest is {newest_revision()}" in done.stderr
    assert "Upgrade this replica" in done.stderr
    assert _stamped(postgres_server, name) == ["9999_from_the_future"]  # nothing was changed


def test_a_running_replica_reports_a_newer_schema_on_readyz(postgres_server: PostgresServer, tmp_path: Path) -> None:
    url = postgres_server.create_database()
    server = start_teleops(tmp_path / "a", database_url=url)
    try:
        assert httpx.get(f"{server.url}/readyz", timeout=10).json()["status"] == "ready"
        _stamp(postgres_server, url.rsplit("/", 1)[1], "9999_from_the_future")
        ready = httpx.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 200  # it keeps serving: migrations stay compatible for one version
        body = ready.json()
        assert body["status"] == "degraded"
        assert any("9999_from_the_future" in p and "upgrade this replica" in p for p in body["problems"]), body
        assert "schema.newer_than_replica" in server.log.read_text()
    finally:
        stop_process(server.process)


def test_replicas_starting_together_on_an_empty_database_take_turns_migrating_it(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    name = f"empty_{tmp_path.name[-20:].lower()}".replace("-", "_")
    postgres_server.execute(f'CREATE DATABASE "{name}"')
    url = postgres_server.url(name)
    processes = []
    for n in range(3):
        workdir = tmp_path / f"r{n}"
        workdir.mkdir()
        config = workdir / "teleops.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "data_dir": str(workdir / "data"),
                    "server": {"listen": "127.0.0.1:0"},
                    "database": {"url": url},
                    "local_agent": {"enabled": False},
                }
            )
        )
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "teleops.cli", "db", "upgrade", "--config", str(config)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], outputs
    assert _stamped(postgres_server, name) == [newest_revision()]


def _stamp(postgres: PostgresServer, database: str, revision: str) -> None:
    _on(postgres, database, "UPDATE alembic_version SET version_num = $1", revision)


def _stamped(postgres: PostgresServer, database: str) -> list[str]:
    return [str(r[0]) for r in _on(postgres, database, "SELECT version_num FROM alembic_version")]


def _on(postgres: PostgresServer, database: str, query: str, *args: str) -> list[Any]:
    async def run() -> list[Any]:
        conn = await asyncpg.connect(postgres.url(database, driver="postgresql"))
        try:
            if args:
                await conn.execute(query, *args)
                return []
            return list(await conn.fetch(query))
        finally:
            await conn.close()

    return _run_coroutine(run)
