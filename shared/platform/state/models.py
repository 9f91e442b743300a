"""Tables of the state store. A change here needs a migration in `migrations/versions/`
(a test compares these models with the migrated schema)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, Integer, LargeBinary, String, Text, func
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
    #: Every batch order the entry ever started, space-separated: what M3 may hold for it is never forgotten.
    batch_order_history: Mapped[str | None] = mapped_column(Text)
    #: The order-writer working on the entry, until when, and the fencing token of that lease: every ledger write
    #: of a worker compares its token, so one whose lease was taken over stops before its next M3 write.
    owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    fence: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class CustomerCreation(Base):
    """A new M3 customer being created for a QuoteWerks party: claimed before CRS610MI/Add is sent, so a crash
    after it, or two quotes of the same new customer, resume the one creation instead of making a second."""

    __tablename__ = "customer_creations"

    identity: Mapped[str] = mapped_column(String(300), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))  # pending | created
    m3_customer_number: Mapped[str | None] = mapped_column(String(10))
    #: What was sent (the CRS610MI/Add fields, JSON), so the resume reads M3 for exactly that.
    fields: Mapped[str] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(String(128))
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class OutboxMessage(Base):
    """A message recorded in the same transaction as the state that decided it, published afterwards (at once, or
    by the relay after a crash or a broker outage) and then deleted: "remember, then tell" without a gap."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(249))
    message_key: Mapped[str | None] = mapped_column(String(255))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    #: The Kafka headers (JSON object), the correlation id among them.
    headers: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)


class ReplayedLetter(Base):
    """A dead letter that was replayed, so replaying it again is a decision (`--again`), not an accident."""

    __tablename__ = "replayed_letters"

    letter_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    replayed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    times: Mapped[int] = mapped_column(Integer, default=1)
    replayed_to: Mapped[str] = mapped_column(String(249))


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


class CustomerSnapshot(Base):
    """What a linked customer's synced fields were when both systems last agreed (`agreed`, JSON: field → the M3
    and the QuoteWerks spelling), the writes of a merge under way (`pending`, same shape: a merge interrupted between
    its writes finds here what it was writing), and the newest M3 change event seen (its state hash and time)."""

    __tablename__ = "customer_snapshots"

    m3_customer_number: Mapped[str] = mapped_column(String(10), primary_key=True)
    quotewerks_customer_id: Mapped[str] = mapped_column(String(64))
    agreed: Mapped[str] = mapped_column(Text)
    pending: Mapped[str | None] = mapped_column(Text)
    m3_event_hash: Mapped[str | None] = mapped_column(String(64))
    m3_event_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: Raised by every save: a save that read an older version lost a race and merges again.
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class CustomerWorkItem(Base):
    """A customer decision for a person: a field changed on both sides (`conflict`), a linked record gone from one
    side (`deleted`). Open until settled: `decided` (by a person, waiting to be applied), then `closed`."""

    __tablename__ = "customer_work_items"
    __table_args__ = (Index("ix_customer_work_items_customer", "m3_customer_number", "field"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    m3_customer_number: Mapped[str] = mapped_column(String(10))
    quotewerks_customer_id: Mapped[str] = mapped_column(String(64))
    field: Mapped[str] = mapped_column(String(16))
    m3_value: Mapped[str] = mapped_column(Text)
    quotewerks_value: Mapped[str] = mapped_column(Text)
    agreed_m3: Mapped[str | None] = mapped_column(Text)
    agreed_quotewerks: Mapped[str | None] = mapped_column(Text)
    m3_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    quotewerks_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)
    decision: Mapped[str | None] = mapped_column(String(16))
    decided_value: Mapped[str | None] = mapped_column(Text)
    decided_by: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str | None] = mapped_column(Text)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WorkItem(Base):
    """Something a person has to look at: a quote held or failed (`kind` "quote", `subject` its DocNo), with the
    reason, the first problem's class, the payload to retry it with, and its history (JSON list of events)."""

    __tablename__ = "work_items"
    __table_args__ = (Index("ix_work_items_subject", "kind", "subject", "revision", unique=True),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(64))
    revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    service: Mapped[str] = mapped_column(String(32))
    #: held or failed
    state: Mapped[str] = mapped_column(String(16))
    error_class: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    customer: Mapped[str | None] = mapped_column(String(64))
    #: The items of the quote, space-separated, to search by item.
    items: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    #: open or resolved
    status: Mapped[str] = mapped_column(String(16), index=True)
    history: Mapped[str] = mapped_column(Text)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


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
    #: What the delivery is about (a quote's DocNo), for "when was this quote last claimed" without parsing ids.
    subject: Mapped[str | None] = mapped_column(String(64), index=True)
    #: The subject's change stamp (a document's LastModified, as its source gives it) when claimed or last seen
    #: unchanged: the poll skips a listed document whose stamp it knows.
    subject_stamp: Mapped[str | None] = mapped_column(String(64))
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), index=True)
