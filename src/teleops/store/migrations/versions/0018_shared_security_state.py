"""signin_failures, signin_lockouts, duo_pushes: per-person security state every replica shares (issue #23)

The web sign-in's throttle and lockout, and Duo's one-push-at-a-time slot and push elevation, used to live in each
controller's memory, so N replicas behind a load balancer gave an attacker N times the tries (and a person N
pushes at once), and a restart forgot them. `signin_failures` holds one row per failed password of a (user,
address) pair inside the throttle window; `signin_lockouts` one row per user name with its failures in a row and
the lock's end, both keyed by SHA-256 digests, never the name or address typed. `duo_pushes` holds one row per
person who steps up with Duo: the push waiting on their phone (until `waiting_until`, so a replica that died
mid-push frees the slot) and the elevation an approved push gives.

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
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
    op.create_table(
        "duo_pushes",
        sa.Column("user_name", sa.String(length=64), nullable=False),
        sa.Column("command", sa.Text(), nullable=True),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("waiting_until", sa.DateTime(), nullable=True),
        sa.Column("elevated_until", sa.DateTime(), nullable=True),
        sa.Column("grant_once", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("user_name", name=op.f("pk_duo_pushes")),
    )


def downgrade() -> None:
    op.drop_table("duo_pushes")
    op.drop_index("ix_signin_lockouts_last_failed_at", table_name="signin_lockouts")
    op.drop_table("signin_lockouts")
    op.drop_index("ix_signin_failures_failed_at", table_name="signin_failures")
    op.drop_index("ix_signin_failures_pair", table_name="signin_failures")
    op.drop_table("signin_failures")
