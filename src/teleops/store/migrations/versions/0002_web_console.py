"""web console: server keys (session signing) and console messages

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "server_keys",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_server_keys")),
    )
    op.create_table(
        "console_messages",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("author", sa.String(length=64), nullable=True),
        sa.Column("incident_id", _ID, nullable=True),
        sa.Column("reply_to", _ID, nullable=True),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name=op.f("fk_console_messages_incident_id_incidents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_messages")),
    )


def downgrade() -> None:
    op.drop_table("console_messages")
    op.drop_table("server_keys")
