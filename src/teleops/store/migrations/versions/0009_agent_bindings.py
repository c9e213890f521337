"""agents: the host names each agent answers for, bound at enrolment (docs/threat-model.md T32)

`hostname` and `labels` stay what the agent last claimed; `bound_hostname` and `bound_host` (the `host=`
label) are what host resolution uses, set at the agent's first connection and changed only by an admin
(`teleops agents bind`). `claim_conflict` says why a claim was not taken, for admins to see.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("bound_hostname", sa.String(255), nullable=True))
        batch.add_column(sa.Column("bound_host", sa.String(255), nullable=True))
        batch.add_column(sa.Column("claim_conflict", sa.String(1024), nullable=True))
    agents = sa.table(
        "agents",
        sa.column("id", sa.BigInteger),
        sa.column("hostname", sa.String),
        sa.column("labels", sa.JSON),
        sa.column("bound_hostname", sa.String),
        sa.column("bound_host", sa.String),
    )
    connection = op.get_bind()
    # Agents known before this migration keep answering for what they claimed last, with the rules a first
    # connection follows (store/agents.py): a hostname is taken once, and never one that is another agent's
    # name; a `host` label may be shared (a group), but not be another agent's name or hostname.
    # (The embedded local agent is unbound again at its next connection: it answers only to its name.)
    query = sa.select(agents.c.id, sa.column("name"), agents.c.hostname, agents.c.labels).select_from(agents)
    rows = list(connection.execute(query.order_by(agents.c.id)))
    hostnames: set[str] = set()
    bound: dict[int, tuple[str | None, str | None]] = {}
    for row in rows:
        names = {str(other.name).lower() for other in rows if other.id != row.id}
        hostname = row.hostname if row.hostname.lower() not in hostnames | names else None
        if hostname:
            hostnames.add(hostname.lower())
        bound[row.id] = (hostname, None)
    for row in rows:
        names = {str(other.name).lower() for other in rows if other.id != row.id}
        host = (row.labels or {}).get("host")
        hostname = bound[row.id][0]
        if not isinstance(host, str) or not host or host.lower() in hostnames | names:
            continue
        bound[row.id] = (hostname, host if host.lower() != (hostname or "").lower() else None)
    for agent_id, (hostname, host) in bound.items():
        connection.execute(
            sa.update(agents).where(agents.c.id == agent_id).values(bound_hostname=hostname, bound_host=host)
        )


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("claim_conflict")
        batch.drop_column("bound_host")
        batch.drop_column("bound_hostname")
