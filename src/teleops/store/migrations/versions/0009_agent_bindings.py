"""agents: the host names each agent answers for, bound at enrolment (THREATS T32)

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
    # Agents known before this migration keep answering for what they claimed last (first come, first bound).
    taken: set[str] = set()
    for row in connection.execute(sa.select(agents.c.id, agents.c.hostname, agents.c.labels).order_by(agents.c.id)):
        hostname = row.hostname if row.hostname.lower() not in taken else None
        host = (row.labels or {}).get("host")
        host = host if isinstance(host, str) and host.lower() not in taken and host != hostname else None
        taken.update(name.lower() for name in (hostname, host) if name)
        connection.execute(
            sa.update(agents).where(agents.c.id == row.id).values(bound_hostname=hostname, bound_host=host)
        )


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("claim_conflict")
        batch.drop_column("bound_host")
        batch.drop_column("bound_hostname")
