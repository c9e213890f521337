"""First start of the embedded default: an admin with a generated password and an ingest token.

The credentials are written to `<data_dir>/first-start-credentials.txt`, created 0600, and only its path goes
to the service log; `teleops serve` prints the text itself only when its stdout is a terminal (a person is
watching), never into a log file or the journal. Read the file, keep the secrets somewhere safe, delete it.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from teleops.commands.authorize import use_policy
from teleops.server.sample_alert import sample_alert_json
from teleops.server.services import Services
from teleops.store.audit import record
from teleops.store.tokens import TokenKind
from teleops.store.users import UserExists

__all__ = [
    "CREDENTIALS_FILE",
    "FirstStart",
    "first_start",
    "sync_configured_users",
    "welcome_text",
    "write_credentials",
]

ADMIN = "admin"
CREDENTIALS_FILE = "first-start-credentials.txt"


@dataclass(frozen=True, slots=True)
class FirstStart:
    admin_password: str
    ingest_token: str
    api_token: str


async def first_start(services: Services) -> FirstStart | None:
    """Create the admin and a default ingest token when the database has no admin yet; else None."""
    if await services.users.get(ADMIN) is not None:
        return None
    now = services.clock()
    password = secrets.token_urlsafe(12)
    try:
        await services.users.create(ADMIN, "admin", now=now, password=password)
    except UserExists:  # another replica won the race; it prints the credentials
        return None
    ingest = await services.tokens.create(TokenKind.INGEST, "default", now=now)
    api = await services.tokens.create(TokenKind.API, "admin", now=now, user_name=ADMIN)
    return FirstStart(password, ingest, api)


async def sync_configured_users(services: Services) -> None:
    """Users declared in config exist in the database with their configured role, and the configured policy
    is the one the authorize step applies (audited as `policy.loaded`)."""
    now = services.clock()
    for user in services.settings.users:
        await services.users.ensure(user.name, user.role, now=now)
    use_policy(services.settings.access_policy())
    rules = services.settings.policy.model_dump(mode="json")
    digest = hashlib.sha256(json.dumps(rules, sort_keys=True).encode()).hexdigest()
    await record(services.db, at=now, actor="system", action="policy.loaded", subject="policy", data={"sha256": digest})


def welcome_text(base_url: str, first: FirstStart, host: str = "localhost") -> str:
    """What the first start prints: the credentials, and a `curl` that fires the sample alert about `host`."""
    curl = (
        f"curl -sS -X POST {base_url}/api/v1/alerts/generic \\\n"
        f"    -H 'Authorization: Bearer {first.ingest_token}' -H 'Content-Type: application/json' \\\n"
        f"    -d '{sample_alert_json(host)}'"
    )
    return (
        "\nTeleOps is ready — first start, keep these (they are not shown again):\n"
        f"  Web console : {base_url}/ui/console\n"
        f"  Login       : {ADMIN} / {first.admin_password}\n"
        f"  Ingest token: {first.ingest_token}   (for monitoring senders)\n"
        f"  API token   : {first.api_token}   (acts as {ADMIN})\n"
        "  Fire a test alert:\n"
        f"    {curl}\n"
        "  Then list incidents:\n"
        f"    curl -sS {base_url}/api/v1/incidents -H 'Authorization: Bearer {first.api_token}'\n"
    )


def write_credentials(data_dir: Path, text: str) -> Path:
    """Write the first-start text to `<data_dir>/first-start-credentials.txt`, mode 0600 (also when the file was
    there before), and return its path. Raises OSError when it cannot be written."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / CREDENTIALS_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text.lstrip("\n"))
        handle.flush()
        os.fsync(handle.fileno())
    return path
