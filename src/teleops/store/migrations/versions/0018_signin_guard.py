"""signin_failures, signin_lockouts: the web sign-in's throttle and lockout in the database (issue #23)

Both used to be counted in each controller's memory, so N replicas behind a load balancer gave an attacker N
times the tries, and a restart forgot them. `signin_failures` holds one row per failed password of a (user,
address) pair inside the throttle window; `signin_lockouts` one row per user name with its failures in a row and
the lock's end. Both are keyed by SHA-256 digests, never the name or address typed.

Revision ID: 0018
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0015"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "signin_failures",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("pair", sa.String(length=64), nullable=False),
        sa.Column("failed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signin_failures")),
    )
    op.create_index("ix_signin_failures_pair", "signin_failures", ["pair", "failed_at"])
    op.create_index("ix_signin_failures_failed_at", "signin_failures", ["failed_at"])
    op.create_table(
        "signin_lockouts",
        sa.Column("user_key", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failed_at", sa.DateTime(), nullable=False),
        sa.Column("locked_until", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("user_key", name=op.f("pk_signin_lockouts")),
    )
    op.create_index("ix_signin_lockouts_last_failed_at", "signin_lockouts", ["last_failed_at"])


def downgrade() -> None:
    op.drop_index("ix_signin_lockouts_last_failed_at", table_name="signin_lockouts")
    op.drop_table("signin_lockouts")
    op.drop_index("ix_signin_failures_failed_at", table_name="signin_failures")
    op.drop_index("ix_signin_failures_pair", table_name="signin_failures")
    op.drop_table("signin_failures")
