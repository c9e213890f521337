"""commands: `sealed_argv`, the original of a redacted command line until it is dispatched (issue #17)

`commands.argv` keeps the argv with secrets masked; the original is sealed under `<data_dir>/argv.key`
(store/sealed_argv.py) and wiped once the command is dispatched or ends. Rows from before keep their argv.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


# Plain ALTER TABLE (SQLite >= 3.35 drops columns too): a batch table copy would drop the scenario-search
# triggers on `commands` (0006).
def upgrade() -> None:
    op.add_column("commands", sa.Column("sealed_argv", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("commands", "sealed_argv")
