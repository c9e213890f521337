"""oncall overrides and calendar feeds: cover changes made in the web UI, and iCal feed tokens (issue #24)

`oncall_overrides`: someone covers a rotation for a window; removing one keeps the row (removed_at/removed_by), so
the page and the audit log agree on what was in force when. `calendar_feeds`: a read-only iCal feed of a rotation or
a person, found by the SHA-256 of its secret (the secret itself is shown once and never stored).

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "oncall_overrides",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("rotation", sa.String(length=128), nullable=False),
        sa.Column("user_name", sa.String(length=64), nullable=False),
        sa.Column("starts_at", sa.DateTime(), nullable=False),
        sa.Column("ends_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("removed_by", sa.String(length=64), nullable=True),
        sa.Column("removed_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oncall_overrides")),
    )
    op.create_index("ix_oncall_overrides_ends_at", "oncall_overrides", ["ends_at"])
    op.create_table(
        "calendar_feeds",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=128), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_by", sa.String(length=64), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calendar_feeds")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_calendar_feeds_secret_hash")),
    )
    op.create_index("ix_calendar_feeds_kind", "calendar_feeds", ["kind", "subject"])


def downgrade() -> None:
    op.drop_index("ix_calendar_feeds_kind", table_name="calendar_feeds")
    op.drop_table("calendar_feeds")
    op.drop_index("ix_oncall_overrides_ends_at", table_name="oncall_overrides")
    op.drop_table("oncall_overrides")
