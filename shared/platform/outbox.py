"""Remember, then tell, with no gap between: the transactional outbox.

A step that decides something and must tell the bus (quote-ingest: an approval; bod-listener: a BOD's events)
records its state rows (the claim of the delivery, a fingerprint) and the messages to publish in ONE transaction
(`Outbox.recording`). After the commit it publishes them at once (`Outbox.send`), deleting each row once the broker
acknowledged it. A crash, OOM kill or broker outage at any instant therefore leaves either nothing (the transaction
did not commit: the delivery is not claimed and its retry is processed) or rows still in the outbox, which the
relay (`Outbox.relay`, in the background of every service that records) publishes: it takes the rows that were
already pending at its previous pass, so it does not race the immediate send of a healthy request.

A row may be published twice (the broker acknowledged, the process died before the delete): consumers are
idempotent (the order ledger, the claims, the fingerprints). A row is never lost.

Several replicas may relay: on PostgreSQL each takes its rows with `FOR UPDATE SKIP LOCKED`, so a row is published
by one replica at a time; SQLite (one writer) serialises them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from faststream.kafka import KafkaBroker
from prometheus_client import Counter, Gauge
from pydantic import BaseModel
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.contracts.topics import Topic, topic_named
from shared.platform.correlation import KAFKA_HEADER, current_correlation_id, new_correlation_id
from shared.platform.crash_points import crash_point
from shared.platform.kafka import encode, publish_raw
from shared.platform.state.models import OutboxMessage, SeenDelivery

log = logging.getLogger(__name__)

_MAX_DELIVERY_ID = 255  # SeenDelivery.delivery_id's length
#: Rows one relay pass takes (the rest waits for the next pass).
RELAY_BATCH = 200

outbox_published = Counter(
    "m3bridge_outbox_published_total", "Outbox rows published, by who published them (send: at once; relay).", ["by"]
)
outbox_pending = Gauge("m3bridge_outbox_pending", "Outbox rows not published yet, as the relay last counted them.")
outbox_oldest_pending = Gauge(
    "m3bridge_outbox_oldest_pending_seconds", "Age of the oldest outbox row not published yet (0: none pending)."
)


class ClaimTakenError(Exception):
    """The delivery was claimed before (by an earlier delivery or a concurrent replica): nothing was recorded."""

    def __init__(self, source: str, delivery_id: str) -> None:
        super().__init__(f"{source} {delivery_id} is already claimed")
        self.source = source
        self.delivery_id = delivery_id


@dataclass
class Recording:
    """One transaction's claims, state and messages. `session` is the transaction, for the caller's own rows."""

    session: AsyncSession
    max_bytes: int
    ids: list[int] = field(default_factory=list)

    async def claim(
        self, source: str, delivery_id: str, *, subject: str | None = None, stamp: str | None = None
    ) -> None:
        """Claim the delivery in this transaction; raises ClaimTakenError (and nothing is recorded) when it was.
        `subject` (what it is about, e.g. a DocNo) and its change `stamp` let a poll skip what it has seen."""
        claim = SeenDelivery(
            source=source,
            delivery_id=delivery_id[:_MAX_DELIVERY_ID],
            subject=subject[:64] if subject else None,
            subject_stamp=stamp[:64] if stamp else None,
        )
        self.session.add(claim)
        try:
            await self.session.flush()
        except IntegrityError:
            raise ClaimTakenError(source, delivery_id) from None

    async def add(
        self, topic: Topic, payload: BaseModel | bytes, *, key: str | None, headers: dict[str, str] | None = None
    ) -> None:
        """Record a message for `topic`, published after the commit in the order added (the correlation id of the
        running task travels with it)."""
        body = payload if isinstance(payload, bytes) else encode(topic, payload, max_bytes=self.max_bytes)
        stamped = {
            "content-type": topic.content_type,
            KAFKA_HEADER: current_correlation_id() or new_correlation_id(),
            **(headers or {}),
        }
        row = OutboxMessage(topic=topic.name, message_key=key, body=body, headers=json.dumps(stamped), attempts=0)
        self.session.add(row)
        await self.session.flush()
        self.ids.append(row.id)


RawPublisher = Callable[[Topic, bytes, "str | None", dict[str, str]], Awaitable[None]]
"""Publishes encoded bytes to a topic with a key and headers, returning once the broker acknowledged them."""


def broker_publisher(broker: KafkaBroker, *, max_bytes: int) -> RawPublisher:
    async def publish(topic: Topic, body: bytes, key: str | None, headers: dict[str, str]) -> None:
        await publish_raw(broker, topic, body, key=key, max_bytes=max_bytes, headers=headers)

    return publish


class Outbox:
    def __init__(self, engine: AsyncEngine, publisher: RawPublisher, *, max_bytes: int) -> None:
        self.engine = engine
        self.publisher = publisher
        self.max_bytes = max_bytes
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        #: (pending rows, age of the oldest in seconds) at the relay's last pass, for /healthz.
        self.last_census: tuple[int, float] = (0, 0.0)

    @contextlib.asynccontextmanager
    async def recording(self) -> AsyncIterator[Recording]:
        """One transaction: committed when the block ends, rolled back (nothing claimed, nothing to publish) when
        it raises."""
        async with self._sessions.begin() as session:
            yield Recording(session, self.max_bytes)

    async def send(self, recorded: Recording | Sequence[int]) -> bool:
        """Publish recorded rows now; False (logged) when the broker did not take them: they stay for the relay."""
        ids = recorded.ids if isinstance(recorded, Recording) else list(recorded)
        if not ids:
            return True
        try:
            await self._publish(select(OutboxMessage).where(OutboxMessage.id.in_(ids)), by="send")
        except Exception as exc:  # the rows are durable: the relay publishes them
            log.warning("outbox: %d message(s) not published now (%s); the relay will publish them", len(ids), exc)
            return False
        return True

    async def relay_once(self, seen_before: int) -> tuple[int, int]:
        """Publish the rows with an id up to `seen_before` (those pending at the previous pass) still here. Returns
        (how many were published, the newest id now in the outbox)."""
        published = 0
        if seen_before > 0:
            published = await self._publish(
                select(OutboxMessage).where(OutboxMessage.id <= seen_before).limit(RELAY_BATCH), by="relay"
            )
        newest, pending, oldest = await self._census()
        outbox_pending.set(pending)
        outbox_oldest_pending.set(oldest)
        self.last_census = (pending, oldest)
        return published, newest

    async def relay(self, stop: asyncio.Event, *, interval_s: float) -> None:
        """Until `stop`: every `interval_s`, publish what was already pending at the previous pass."""
        seen_before = 0
        while not stop.is_set():
            try:
                published, seen_before = await self.relay_once(seen_before)
                if published:
                    log.info("outbox relay: published %d message(s) left behind", published)
            except Exception as exc:  # the broker or the state store is away: try again next pass
                log.warning("outbox relay: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)

    async def pending(self) -> int:
        return (await self._census())[1]

    def describe(self) -> dict[str, float]:
        pending, oldest = self.last_census
        return {"pending": pending, "oldest_pending_s": round(oldest, 1)}

    async def _census(self) -> tuple[int, int, float]:
        async with self._sessions() as session:
            newest, count, first = (
                await session.execute(
                    select(func.max(OutboxMessage.id), func.count(), func.min(OutboxMessage.created_at))
                )
            ).one()
            age = 0.0
            if count:
                now = (await session.execute(select(func.now()))).scalar_one()
                age = _seconds_between(first, now)
        return int(newest or 0), int(count), age

    async def _publish(self, query: Any, *, by: str) -> int:
        """Publish the rows `query` selects, oldest first, each deleted once the broker acknowledged it; on
        PostgreSQL rows another replica is publishing are skipped."""
        published = 0
        async with self._sessions.begin() as session:
            locked = query.order_by(OutboxMessage.id).with_for_update(skip_locked=True)
            rows = list((await session.execute(locked)).scalars())
            try:
                for row in rows:
                    headers: dict[str, str] = json.loads(row.headers)
                    # The content type travels in the headers; a topic this version does not register is published
                    # by name all the same.
                    topic = topic_named(row.topic) or Topic(row.topic, BaseModel, "", "")
                    await self.publisher(topic, row.body, row.message_key, headers)
                    await crash_point("outbox.after-publish")
                    await session.execute(delete(OutboxMessage).where(OutboxMessage.id == row.id))
                    published += 1
                    outbox_published.labels(by).inc()
            except Exception as exc:
                failed = rows[published]
                await session.execute(
                    update(OutboxMessage)
                    .where(OutboxMessage.id == failed.id)
                    .values(attempts=OutboxMessage.attempts + 1, last_error=f"{type(exc).__name__}: {exc}"[:2000])
                )
                await session.commit()  # what went out is deleted; the failure is noted on the row
                raise
        return published


def _seconds_between(first: Any, now: Any) -> float:
    """Seconds from `first` to `now` as the database gives them (SQLite: naive UTC text or datetimes)."""

    def moment(value: Any) -> datetime:
        parsed: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)

    try:
        return max((moment(now) - moment(first)).total_seconds(), 0.0)
    except (TypeError, ValueError, AttributeError):
        return 0.0
