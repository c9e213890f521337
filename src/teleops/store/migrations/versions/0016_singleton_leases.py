"""singleton leases: which replica runs each singleton loop, until when, and under which fencing epoch (issue #23)

One row per singleton loop (the Telegram poller, housekeeping, the external heartbeat, …): `holder` is the replica
(`Database.replica`) holding it, `epoch` grows by one at every new holding (the fencing token every action
re-checks), `expires_at` is on the database's clock. `position` is the loop's durable progress where it has one (the
Telegram poller: the next getUpdates offset), written in the same fenced statement that checks the lease.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "singleton_leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=160), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("acquired_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=True),
        sa.Column("position_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_singleton_leases")),
    )


def downgrade() -> None:
    op.drop_table("singleton_leases")
