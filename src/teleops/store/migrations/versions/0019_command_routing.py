"""command routing across controller replicas: where each agent is connected, and the hand-over of execs (#23)

`agent_connections`: one row per agent connected to a replica, refreshed by that replica every few seconds; a row
not refreshed for a while belongs to a replica that died or froze, and counts as no connection. `command_relays`:
an exec or a cancel one replica hands to the replica the command's agent is connected to, until it is taken.
Both are used on PostgreSQL only (one SQLite process has every agent itself) but exist everywhere, like every table.

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "agent_connections",
        sa.Column("agent_name", sa.String(length=128), nullable=False),
        sa.Column("replica", sa.String(length=255), nullable=False),
        sa.Column("connected_at", sa.DateTime(), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("agent_name", name=op.f("pk_agent_connections")),
    )
    op.create_index("ix_agent_connections_replica", "agent_connections", ["replica"])
    op.create_table(
        "command_relays",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("command_id", _ID, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("replica", sa.String(length=255), nullable=False),
        sa.Column("origin", sa.String(length=255), nullable=False),
        sa.Column("sealed_argv", sa.Text(), nullable=True),
        sa.Column("output_cap_bytes", sa.Integer(), nullable=True),
        sa.Column("tag", sa.String(length=80), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_command_relays")),
    )
    op.create_index("ix_command_relays_replica", "command_relays", ["replica"])


def downgrade() -> None:
    op.drop_index("ix_command_relays_replica", table_name="command_relays")
    op.drop_table("command_relays")
    op.drop_index("ix_agent_connections_replica", table_name="agent_connections")
    op.drop_table("agent_connections")
