"""Security-relevant actions outside commands are in the audit chain, written with the action itself:
token created/revoked (never the secret), chat identity linked."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import Connection

from teleops.store.audit import AuditEvent, iter_events
from teleops.store.audit_checkpoints import CheckpointLog
from teleops.store.audit_verify import verify_audit
from teleops.store.database import Database
from teleops.store.identities import IdentityStore
from teleops.store.tokens import TokenKind, TokenStore
from teleops.store.users import UserStore

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


async def events(db: Database) -> list[AuditEvent]:
    def read(conn: Connection) -> list[AuditEvent]:
        return list(iter_events(conn))

    return await db.run_in_transaction(read)


async def test_tokens_and_links_are_audited_without_secrets(db_url: str, tmp_path: Path) -> None:
    db = Database(db_url)
    await db.migrate()
    try:
        tokens = TokenStore(db)
        secret = await tokens.create(TokenKind.API, "ci", now=NOW, user_name="alice", by="cli")
        assert await tokens.revoke(TokenKind.API, "ci", now=NOW, by="cli")
        assert not await tokens.revoke(TokenKind.API, "ci", now=NOW, by="cli")  # nothing live: nothing audited
        await UserStore(db).ensure("bob", "operator", now=NOW)
        identities = IdentityStore(db)
        code = await identities.invite("bob", now=NOW)
        assert await identities.link("telegram", "2002", code, now=NOW) == "bob"
        found = await events(db)
        assert [(e.actor, e.action, e.subject) for e in found] == [
            ("cli", "token.created", "token:api:ci"),
            ("cli", "token.revoked", "token:api:ci"),
            ("bob", "identity.linked", "user:bob"),
        ]
        assert found[2].data == {"platform": "telegram", "external_id": "2002"}
        assert all(secret not in repr(e.to_json()) for e in found)
        log = CheckpointLog(tmp_path / "data")
        await log.checkpoint(db)
        assert (await verify_audit(db, log)).ok
    finally:
        await db.close()
