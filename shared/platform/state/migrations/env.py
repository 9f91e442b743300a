"""Alembic environment: migrations run on a connection the caller opened (see `shared.platform.state.db.migrate`)."""

from alembic import context

from shared.platform.state.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `m3bridge migrate` (shared.platform.state.db.migrate), not the alembic CLI")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
