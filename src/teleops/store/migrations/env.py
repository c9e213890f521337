"""Alembic environment: migrations run on the connection TeleOps hands over (see database._upgrade)."""

from __future__ import annotations

from alembic import context

from teleops.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `teleops db upgrade`, which passes the connection")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
