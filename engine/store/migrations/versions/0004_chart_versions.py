"""Chart versions: each job records the version of its chart it last moved under, and the
database keeps the structure of every version it has seen; job kinds: each kind's app and
payload schema; the trace context a job was enqueued in.

Revision ID: 0004_chart_versions
Revises: 0003_rate_slots
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import engine.store.schema

revision = "0004_chart_versions"
down_revision = "0003_rate_slots"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("chart_version", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("trace_context", sa.String(length=100), nullable=True))
    op.create_table(
        "chart_versions",
        sa.Column("chart", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=16), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=True),
        sa.Column("markup", engine.store.schema.JSONDocument(), nullable=False),
        sa.Column("first_seen_at", engine.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("chart", "version"),
    )
    op.create_table(
        "job_kinds",
        sa.Column("kind", sa.String(length=200), nullable=False),
        sa.Column("app", sa.String(length=300), nullable=False),
        sa.Column("schema_hash", sa.String(length=16), nullable=False),
        sa.Column("payload_schema", engine.store.schema.JSONDocument(), nullable=False),
        sa.Column("updated_at", engine.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kind"),
    )


def downgrade() -> None:
    op.drop_table("job_kinds")
    op.drop_table("chart_versions")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("trace_context")
        batch.drop_column("chart_version")
