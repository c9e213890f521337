"""chat: outbox references, identities, link codes, seen updates, refusals

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("ref_id", _ID, nullable=True))
        batch.add_column(sa.Column("purpose", sa.String(length=16), nullable=True))
        batch.create_index("ix_outbox_platform_status_chat_id", ["platform", "status", "chat_id", "id"])
        batch.create_index(
            "ix_outbox_platform_chat_id_platform_message_id", ["platform", "chat_id", "platform_message_id"]
        )
        batch.create_index("ix_outbox_ref_id", ["ref_id"])
        batch.create_index("ix_outbox_incident_id", ["incident_id"])
    op.create_table(
        "identities",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column("user_name", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("via", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identities")),
        sa.UniqueConstraint("platform", "external_id", name=op.f("uq_identities_platform")),
    )
    op.create_table(
        "link_codes",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("user_name", sa.String(length=64), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_link_codes")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_link_codes_code_hash")),
    )
    op.create_table(
        "chat_updates",
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("update_id", sa.String(length=128), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("platform", "update_id", name=op.f("pk_chat_updates")),
    )
    op.create_table(
        "chat_refusals",
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column("chat_id", sa.String(length=255), nullable=False),
        sa.Column("first_at", sa.DateTime(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("platform", "external_id", name=op.f("pk_chat_refusals")),
    )


def downgrade() -> None:
    op.drop_table("chat_refusals")
    op.drop_table("chat_updates")
    op.drop_table("link_codes")
    op.drop_table("identities")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_index("ix_outbox_incident_id")
        batch.drop_index("ix_outbox_ref_id")
        batch.drop_index("ix_outbox_platform_chat_id_platform_message_id")
        batch.drop_index("ix_outbox_platform_status_chat_id")
        batch.drop_column("purpose")
        batch.drop_column("ref_id")
