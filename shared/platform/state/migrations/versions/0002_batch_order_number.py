"""Order ledger: the M3 batch (temporary) order number, recorded as soon as AddBatchHead returns it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("order_ledger") as table:
        table.add_column(sa.Column("batch_order_number", sa.String(10)))


def downgrade() -> None:
    with op.batch_alter_table("order_ledger") as table:
        table.drop_column("batch_order_number")
