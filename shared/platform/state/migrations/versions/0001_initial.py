"""Initial state store: order ledger, customer links, sync fingerprints, seen deliveries.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "order_ledger",
        sa.Column("doc_no", sa.String(50), primary_key=True),
        sa.Column("revision", sa.Integer, primary_key=True),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("customer_number", sa.String(10)),
        sa.Column("order_number", sa.String(10)),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("payload_fingerprint", sa.String(64)),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_index("ix_order_ledger_state", "order_ledger", ["state"])
    op.create_table(
        "customer_links",
        sa.Column("quotewerks_customer_id", sa.String(64), primary_key=True),
        sa.Column("m3_customer_number", sa.String(10), nullable=False, unique=True),
        sa.Column("email", sa.String(255)),
        sa.Column("company", sa.String(255)),
        sa.Column("last_written_by", sa.String(32)),
        sa.Column("linked_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_index("ix_customer_links_email", "customer_links", ["email"])
    op.create_index("ix_customer_links_company", "customer_links", ["company"])
    op.create_table(
        "sync_fingerprints",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("entity_key", sa.String(64), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_table(
        "seen_deliveries",
        sa.Column("source", sa.String(32), primary_key=True),
        sa.Column("delivery_id", sa.String(255), primary_key=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_index("ix_seen_deliveries_seen_at", "seen_deliveries", ["seen_at"])


def downgrade() -> None:
    op.drop_table("seen_deliveries")
    op.drop_table("sync_fingerprints")
    op.drop_table("customer_links")
    op.drop_table("order_ledger")
