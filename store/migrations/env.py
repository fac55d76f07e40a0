"""Alembic environment: runs on the connection :mod:`store.migrate` hands over in ``config.attributes``.

No ``alembic.ini`` and no URL in the config: the caller opens the connection (so the password never passes
through Alembic's config or logs) and commits it. SQLite gets batch mode, because it cannot ALTER most things.
"""

from __future__ import annotations

from alembic import context

from store.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "store/migrations runs only through store.migrate (upgrade, ensure_schema, make_revision), "
        "which passes the database connection in"
    )

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
