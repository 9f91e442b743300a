"""The customer merge: a last-synced snapshot per linked customer, and the review queue of customer work items
(fields changed on both sides that a person settles, records deleted on one side, ambiguous matches).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "customer_snapshots",
        sa.Column("m3_customer_number", sa.String(10), primary_key=True),
        sa.Column("quotewerks_customer_id", sa.String(64), nullable=False),
        sa.Column("agreed", sa.Text(), nullable=False),
        sa.Column("pending", sa.Text()),
        sa.Column("m3_event_hash", sa.String(64)),
        sa.Column("m3_event_at", sa.DateTime(timezone=True)),
        sa.Column("version", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_table(
        "customer_work_items",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("m3_customer_number", sa.String(10), nullable=False),
        sa.Column("quotewerks_customer_id", sa.String(64), nullable=False),
        sa.Column("field", sa.String(16), nullable=False),
        sa.Column("m3_value", sa.Text(), nullable=False),
        sa.Column("quotewerks_value", sa.Text(), nullable=False),
        sa.Column("agreed_m3", sa.Text()),
        sa.Column("agreed_quotewerks", sa.Text()),
        sa.Column("m3_changed_at", sa.DateTime(timezone=True)),
        sa.Column("quotewerks_changed_at", sa.DateTime(timezone=True)),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("decision", sa.String(16)),
        sa.Column("decided_value", sa.Text()),
        sa.Column("decided_by", sa.String(64)),
        sa.Column("outcome", sa.Text()),
        sa.Column("opened_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_customer_work_items_status", "customer_work_items", ["status"])
    op.create_index("ix_customer_work_items_customer", "customer_work_items", ["m3_customer_number", "field"])


def downgrade() -> None:
    op.drop_index("ix_customer_work_items_customer", "customer_work_items")
    op.drop_index("ix_customer_work_items_status", "customer_work_items")
    op.drop_table("customer_work_items")
    op.drop_table("customer_snapshots")
