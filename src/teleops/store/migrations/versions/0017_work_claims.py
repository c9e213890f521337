"""work claims: outbox rows and heartbeat checks claimed by one replica under a lease that expires (issue #23)

`outbox.claimed_by`, `lease_until`, `claim_epoch`: the replica delivering the row, until when (the database's clock),
and the claim's epoch, which the write of the outcome must name, so a replica that stalled past its lease cannot
overwrite the result of the one that took the row over. `heartbeats.check_claimed_by`, `check_lease_until`: the
replica that opens the incident of a missed heartbeat, so two replicas watching it open one.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("lease_until", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("claim_epoch", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("heartbeats") as batch:
        batch.add_column(sa.Column("check_claimed_by", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("check_lease_until", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("heartbeats") as batch:
        batch.drop_column("check_lease_until")
        batch.drop_column("check_claimed_by")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("claim_epoch")
        batch.drop_column("lease_until")
        batch.drop_column("claimed_by")
