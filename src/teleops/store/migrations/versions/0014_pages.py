"""pages: every page is a delivery with a deadline, a state and a reason (issue #20)

A page is queued, then delivered (a chat platform accepted it), sent (handed to a mail server or webhook) or
failed, with the reason. Escalations that ran before this migration have no page rows: their pages are not tracked.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "pages",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("incident_id", _ID, nullable=False),
        sa.Column("escalation_id", _ID, nullable=True),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(length=160), nullable=False),
        sa.Column("user_name", sa.String(length=64), nullable=True),
        sa.Column("method", sa.Integer(), nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("chat_id", sa.String(length=255), nullable=False),
        sa.Column("outbox_id", _ID, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("deadline_at", sa.DateTime(), nullable=False),
        sa.Column("settled_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"], name=op.f("fk_pages_incident_id_incidents")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pages")),
    )
    op.create_index("ix_pages_state_deadline_at", "pages", ["state", "deadline_at"])
    op.create_index("ix_pages_incident_id_step", "pages", ["incident_id", "step", "round"])


def downgrade() -> None:
    op.drop_index("ix_pages_incident_id_step", table_name="pages")
    op.drop_index("ix_pages_state_deadline_at", table_name="pages")
    op.drop_table("pages")
