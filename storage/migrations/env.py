"""Alembic environment for Parley's SQL backends, run programmatically by ``storage._sql``.

The caller passes an open SQLAlchemy (sync-facade) connection in ``config.attributes``; there is
no alembic.ini and no engine of our own here.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
