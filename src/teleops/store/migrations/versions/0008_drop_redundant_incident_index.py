"""drop ix_incidents_name_host: ix_incidents_name_host_id (0006) starts with the same columns and serves
every query it did, and each incident insert paid for both

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_incidents_name_host", table_name="incidents")


def downgrade() -> None:
    op.create_index("ix_incidents_name_host", "incidents", ["name", "host"])
