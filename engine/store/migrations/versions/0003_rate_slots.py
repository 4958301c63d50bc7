"""Rate limits: the slots of each limited scope, with the time each was last used.

Revision ID: 0003_rate_slots
Revises: 0002_schedules_cancel
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import engine.store.schema

revision = "0003_rate_slots"
down_revision = "0002_schedules_cancel"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_slots",
        sa.Column("scope", sa.String(length=300), nullable=False),
        sa.Column("slot", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("used_at", engine.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", "slot"),
    )


def downgrade() -> None:
    op.drop_table("rate_slots")
