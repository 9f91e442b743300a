"""What bod-listener does with one BOD document, whether it came over HTTP (`/bods`) or from the inbound topic
`ion.bod.inbound.v1`: publish its normalized events once, or keep an unusable document as a dead letter whose
origin is the inbound topic, so that `m3bridge dead-letters replay` sends it back here. No HTTP or Kafka
wiring here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client import Counter
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.bod_listener.bods import BodError, ParsedBod, parse_bod
from shared.contracts.topics import BOD_INBOUND, dead_letter_topic
from shared.platform import dead_letters
from shared.platform.crash_points import crash_point
from shared.platform.metrics import messages_dead_lettered
from shared.platform.outbox import ClaimTakenError, Outbox
from shared.platform.state import deliveries
from shared.platform.state.models import SyncFingerprint

BOD_CLAIMS = "bod"
#: The newest variation published per BOD document (kind of SyncFingerprint rows).
VARIATIONS = "bod-variation"
#: IMS deliveries (ION Messaging Service) are also claimed by their messageId: a redelivered message is a duplicate
#: before its BOD is even read.
IMS_MESSAGE_CLAIMS = "ims-message"
# A dead letter must fit in one Kafka message; the start of a huge document says what it was.
DEAD_LETTER_PAYLOAD_BYTES = 256 * 1024

bods_total = Counter("m3bridge_bods_received_total", "ION BOD deliveries by noun and outcome.", ["noun", "outcome"])

Status = Literal["published", "recorded", "duplicate", "stale", "dead-lettered"]
"""recorded: the events are durable in the outbox; the relay publishes them (the broker was away)."""


@dataclass(frozen=True)
class Origin(dead_letters.Origin):
    """Where a BOD came from, for its dead letter. HTTP deliveries are kept as if they came from the inbound
    topic (partition and offset 0): that is where a replay sends them."""

    topic: str = BOD_INBOUND.name
    via: Literal["http", "kafka"] = "http"


@dataclass(frozen=True)
class Received:
    status: Status
    detail: str
    reason: str = ""


class BodReceiver:
    def __init__(self, engine: AsyncEngine, outbox: Outbox, *, service: str) -> None:
        self.engine = engine
        self.outbox = outbox
        self.service = service

    async def receive(
        self, body: bytes, origin: Origin, *, document_name: str | None = None, delivery_id: str | None = None
    ) -> Received:
        """One BOD document: its events published once, or the document kept as a dead letter.

        `document_name` (IMS `documentName`, e.g. `Sync.ItemMaster`) must name the BOD inside, else the document is
        dead-lettered (`document_mismatch`). `delivery_id` (IMS `messageId`) is claimed in the same transaction as
        what the BOD leads to (its events or its dead letter): a second delivery of one message is a duplicate, and
        a crash before that transaction leaves the message unclaimed for ION's redelivery."""
        claims = [(IMS_MESSAGE_CLAIMS, delivery_id)] if delivery_id is not None else []
        if delivery_id is not None and await deliveries.claimed(self.engine, IMS_MESSAGE_CLAIMS, [delivery_id]):
            bods_total.labels("-", "duplicate").inc()
            return Received("duplicate", f"message {delivery_id} was already received")
        try:
            bod = parse_bod(body)
        except BodError as exc:
            return await self.reject(body, origin, exc.reason, str(exc), claims=claims)
        if document_name is not None and document_name.casefold() != f"{bod.verb}.{bod.noun}".casefold():
            message = f"documentName {document_name!r} but the BOD inside is {bod.verb}{bod.noun} ({bod.bod_id})"
            return await self.reject(body, origin, "document_mismatch", message, claims=claims)
        status, detail = await self.process(bod, claims=claims)
        bods_total.labels(bod.noun, status).inc()
        return Received(status, detail)

    async def reject(
        self, body: bytes, origin: Origin, reason: str, message: str, *, claims: Sequence[tuple[str, str]] = ()
    ) -> Received:
        """A delivered document that cannot be used: kept as a dead letter with the reason, and counted."""
        letter = dead_letters.letter_of(
            body,
            service=self.service,
            error_class=reason,
            error_message=message,
            origin=origin,
            details={"bytes": len(body), "received_via": origin.via},
            payload_limit=DEAD_LETTER_PAYLOAD_BYTES,
        )
        try:
            async with self.outbox.recording() as recorded:
                for source, delivery_id in claims:
                    await recorded.claim(source, delivery_id)
                await recorded.add(dead_letter_topic(self.service), letter, key=letter.original_key or "")
        except ClaimTakenError:
            bods_total.labels("-", "duplicate").inc()
            return Received("duplicate", "this message was already received")
        await self.outbox.send(recorded)
        messages_dead_lettered.labels(self.service, letter.origin_topic, letter.error_class).inc()
        bods_total.labels("-", reason).inc()
        return Received("dead-lettered", message, reason)

    async def process(self, bod: ParsedBod, *, claims: Sequence[tuple[str, str]] = ()) -> tuple[Status, str]:
        """Publish the BOD's events once, in variation order per document. The BODID's claim, the newest variation
        and the events are recorded in one transaction, so of concurrent deliveries of one BOD exactly one records
        them, and a crash after the commit leaves the events to the outbox relay."""
        for attempt in (1, 2):
            try:
                return await self._record(bod, claims)
            except ClaimTakenError as taken:
                if taken.source == IMS_MESSAGE_CLAIMS:
                    return "duplicate", f"message {taken.delivery_id} was already received"
                return "duplicate", f"BOD {bod.bod_id} was already received"
            except IntegrityError:
                if attempt == 2:
                    raise  # two first variations of one document raced; the second try sees the first one's row
        raise AssertionError("unreachable")

    async def _record(self, bod: ParsedBod, claims: Sequence[tuple[str, str]]) -> tuple[Status, str]:
        entity = f"{bod.noun}:{bod.document_id}"
        async with self.outbox.recording() as recorded:
            for source, delivery_id in claims:
                await recorded.claim(source, delivery_id)
            await recorded.claim(BOD_CLAIMS, bod.bod_id)
            newest = await recorded.session.get(
                SyncFingerprint, (VARIATIONS, entity[:64]), with_for_update=True, populate_existing=True
            )
            if newest is not None and bod.variation and bod.variation < int(newest.fingerprint):
                # ION may deliver an older variation after a newer one: the newer state has been published already.
                return "stale", f"variation {bod.variation} of {entity} is older than {newest.fingerprint}"
            for event in bod.events:
                await recorded.add(event.topic, event.payload, key=event.key)
            if bod.variation:
                if newest is None:
                    recorded.session.add(SyncFingerprint(kind=VARIATIONS, entity_key=entity[:64],
                                                         fingerprint=str(bod.variation)))  # fmt: skip
                else:
                    newest.fingerprint = str(bod.variation)
                await recorded.session.flush()
        await crash_point("bod-listener.after-claim")
        if not await self.outbox.send(recorded):
            return "recorded", f"{len(bod.events)} events from {bod.noun} {bod.document_id}, to be published"
        return "published", f"{len(bod.events)} events from {bod.noun} {bod.document_id}"
