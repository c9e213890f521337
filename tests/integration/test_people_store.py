"""Who sets a role, in the store (docs/access-control.md "Who sets a role"), on SQLite and PostgreSQL: the config's
`ensure` wins for declared people and says so in the audit log; `set_role` (the People page) is audited, ends the
person's web sessions, runs the notice in its transaction, never demotes the last admin; a 2FA reset and an unlink
are audited; the People read model shows 2FA, links and last sign-in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Connection

from teleops.store.audit import AuditEvent, iter_events
from teleops.store.database import Database
from teleops.store.identities import IdentityStore
from teleops.store.people import people, person
from teleops.store.twofactor import TwoFactorStore
from teleops.store.users import LastAdmin, UserStore

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


async def events(db: Database) -> list[AuditEvent]:
    def read(conn: Connection) -> list[AuditEvent]:
        return list(iter_events(conn))

    return await db.run_in_transaction(read)


async def test_a_config_role_wins_at_start_and_is_audited_not_silent(db: Database) -> None:
    store = UserStore(db)
    await store.ensure("olga", "operator", now=NOW)
    await store.set_role("olga", "admin", now=NOW, by="root", via="cli")
    await store.ensure("olga", "operator", now=NOW + timedelta(minutes=1))  # the next start, same config
    record = await store.get("olga")
    assert record is not None
    assert record.role == "operator"
    changes = [(e.actor, e.data) for e in await events(db) if e.action == "user.role_changed"]
    assert changes == [
        ("root", {"from": "operator", "to": "admin", "via": "cli"}),
        ("system", {"from": "admin", "to": "operator", "via": "config"}),
    ]


async def test_set_role_runs_the_notice_in_its_transaction_and_never_demotes_the_last_admin(db: Database) -> None:
    store = UserStore(db)
    await store.create("admin", "admin", now=NOW)
    await store.add("dave", "operator", now=NOW, by="admin", via="web")
    told: list[str] = []
    change = await store.set_role("dave", "admin", now=NOW, by="admin", via="web", also=lambda _c: told.append("x"))
    assert change is not None
    assert (change.before, change.after, told) == ("operator", "admin", ["x"])
    same = await store.set_role("dave", "admin", now=NOW, by="admin", via="web", also=lambda _c: told.append("y"))
    assert same is not None
    assert not same.changed
    assert told == ["x"]  # nothing changed: nobody told, nothing audited
    await store.set_role("dave", "operator", now=NOW, by="admin", via="web")
    with pytest.raises(LastAdmin, match="only admin"):
        await store.set_role("admin", "operator", now=NOW, by="admin", via="web")
    record = await store.get("admin")
    assert record is not None
    assert record.role == "admin"
    assert await store.set_role("nobody", "admin", now=NOW, by="admin", via="web") is None
    actions = [e.action for e in await events(db)]
    assert actions.count("user.role_changed") == 2
    assert actions.count("user.created") == 1


async def test_the_people_view_shows_2fa_links_and_a_reset_and_unlink_are_audited(db: Database, tmp_path: Path) -> None:
    users = UserStore(db)
    await users.add("dave", "operator", now=NOW, by="admin", via="web")
    identities = IdentityStore(db)
    code = await identities.invite("dave", now=NOW, by="admin")
    await identities.link("telegram", "2002", code, now=NOW)
    twofactor = TwoFactorStore(db, tmp_path)
    await twofactor.enroll("dave", now=NOW, by="cli")
    dave = await person(db, "dave")
    assert dave is not None
    assert dave.enrolled
    assert dave.last_login is None
    assert [(i.platform, i.external_id) for i in dave.identities] == [("telegram", "2002")]

    assert await twofactor.reset("dave", now=NOW, by="admin", via="web")
    assert not await twofactor.reset("dave", now=NOW, by="admin", via="web")  # nothing left: nothing audited
    assert await identities.unlink("dave", "telegram", "2002", now=NOW, by="admin")
    assert not await identities.unlink("dave", "telegram", "2002", now=NOW, by="admin")
    [after] = await people(db)
    assert (after.enrolled, after.identities) == (False, ())
    assert await identities.pending_invites(now=NOW) == []  # the code was spent by the link
    spare = await identities.invite("dave", now=NOW, by="admin")
    [pending] = await identities.pending_invites(now=NOW)
    assert await identities.revoke_invite(pending.id, now=NOW, by="admin") == "dave"
    assert await identities.pending_invites(now=NOW) == []
    with pytest.raises(ValueError, match="expired"):
        await identities.link("telegram", "3003", spare, now=NOW)
    actions = [e.action for e in await events(db)]
    for action in ("invite.created", "2fa.reset", "identity.unlinked", "invite.revoked"):
        assert action in actions, action
