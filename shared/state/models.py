"""Tables of the state store. A change here needs a migration in `migrations/versions/`
(a test compares these models with the migrated schema)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Integer, String, Text, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class OrderLedgerEntry(Base):
    """Progress of one approved quote (revision) towards one M3 order: the idempotency record."""

    __tablename__ = "order_ledger"

    doc_no: Mapped[str] = mapped_column(String(50), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, primary_key=True, default=0)
    state: Mapped[str] = mapped_column(String(32), index=True)
    customer_number: Mapped[str | None] = mapped_column(String(10))
    order_number: Mapped[str | None] = mapped_column(String(10))
    batch_order_number: Mapped[str | None] = mapped_column(String(10))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    payload_fingerprint: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class CustomerLink(Base):
    """A QuoteWerks customer and the M3 customer it is, once established."""

    __tablename__ = "customer_links"

    quotewerks_customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    m3_customer_number: Mapped[str] = mapped_column(String(10), unique=True)
    email: Mapped[str | None] = mapped_column(String(255), index=True)
    company: Mapped[str | None] = mapped_column(String(255), index=True)
    last_written_by: Mapped[str | None] = mapped_column(String(32))
    linked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class SyncFingerprint(Base):
    """What was last pushed for an entity (item, price, stock, customer), so only changes are pushed."""

    __tablename__ = "sync_fingerprints"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    entity_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    synced_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SeenDelivery(Base):
    """Deliveries already accepted (webhook ids, BODIDs), to recognise replays and duplicates."""

    __tablename__ = "seen_deliveries"

    source: Mapped[str] = mapped_column(String(32), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), index=True)
