"""Alembic environment: runs jobcharts' migrations on the connection it is handed.

``engine.store.migrate`` opens the connection (a write transaction; on PostgreSQL under an
advisory lock, so racing workers migrate once) and passes it in ``config.attributes``.
"""

from __future__ import annotations

from alembic import context

from engine.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - always called through engine.store.migrate
    raise RuntimeError("run jobcharts migrations with `jobcharts migrate`")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,
    version_table=context.config.attributes["version_table"],  # not the app's alembic_version
)
with context.begin_transaction():
    context.run_migrations()
