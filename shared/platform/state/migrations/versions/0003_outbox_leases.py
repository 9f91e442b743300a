"""Exactly once by construction: the outbox, leases with fencing tokens on ledger entries, the batch orders an
entry ever started, claimed customer creations, the subject of a claim, replayed dead letters.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("topic", sa.String(249), nullable=False),
        sa.Column("message_key", sa.String(255)),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text()),
    )
    op.create_table(
        "customer_creations",
        sa.Column("identity", sa.String(300), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("m3_customer_number", sa.String(10)),
        sa.Column("fields", sa.Text(), nullable=False),
        sa.Column("owner", sa.String(128)),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_table(
        "replayed_letters",
        sa.Column("letter_id", sa.String(255), primary_key=True),
        sa.Column("replayed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("times", sa.Integer(), nullable=False),
        sa.Column("replayed_to", sa.String(249), nullable=False),
    )
    with op.batch_alter_table("order_ledger") as table:
        table.add_column(sa.Column("batch_order_history", sa.Text()))
        table.add_column(sa.Column("owner", sa.String(128)))
        table.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True)))
        table.add_column(sa.Column("fence", sa.Integer(), server_default="0", nullable=False))
    with op.batch_alter_table("seen_deliveries") as table:
        table.add_column(sa.Column("subject", sa.String(64)))
        table.add_column(sa.Column("subject_stamp", sa.String(64)))
        table.create_index("ix_seen_deliveries_subject", ["subject"])


def downgrade() -> None:
    with op.batch_alter_table("seen_deliveries") as table:
        table.drop_index("ix_seen_deliveries_subject")
        table.drop_column("subject_stamp")
        table.drop_column("subject")
    with op.batch_alter_table("order_ledger") as table:
        for column in ("fence", "lease_expires_at", "owner", "batch_order_history"):
            table.drop_column(column)
    op.drop_table("replayed_letters")
    op.drop_table("customer_creations")
    op.drop_table("outbox")
