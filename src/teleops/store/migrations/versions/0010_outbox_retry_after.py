"""outbox: the platform's retry_after deadline kept on the row, so a restart honours it

When a platform answers 429 with `retry_after`, the deadline it asked for is stored on the outbox row
(`blocked_until`); the sender reads it back at start, so a restarted controller does not send to that chat
before the platform allows it.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("blocked_until", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("blocked_until")
