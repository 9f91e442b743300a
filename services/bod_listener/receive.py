"""What bod-listener does with one BOD document, whether it came over HTTP (`/bods`) or from the inbound topic
`ion.bod.inbound.v1`: publish its normalized events once, or keep an unusable document as a dead letter whose
origin is the inbound topic, so that `m3bridge dead-letters replay` sends it back here. No HTTP or Kafka
wiring here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from faststream.kafka import KafkaBroker
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import dead_letters
from shared.bods import BodError, ParsedBod, parse_bod
from shared.dead_letters import send_to_dead_letters
from shared.kafka import publish
from shared.state import deliveries, fingerprints
from shared.topics import BOD_INBOUND

BOD_CLAIMS = "bod"
#: IMS deliveries (ION Messaging Service) are also claimed by their messageId: a redelivered message is a duplicate
#: before its BOD is even read.
IMS_MESSAGE_CLAIMS = "ims-message"
# A dead letter must fit in one Kafka message; the start of a huge document says what it was.
DEAD_LETTER_PAYLOAD_BYTES = 256 * 1024

bods_total = Counter("m3bridge_bods_received_total", "ION BOD deliveries by noun and outcome.", ["noun", "outcome"])

Status = Literal["published", "duplicate", "stale", "dead-lettered"]


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
    def __init__(self, engine: AsyncEngine, broker: KafkaBroker, *, service: str, max_request_size: int) -> None:
        self.engine = engine
        self.broker = broker
        self.service = service
        self.max_request_size = max_request_size

    async def receive(
        self, body: bytes, origin: Origin, *, document_name: str | None = None, delivery_id: str | None = None
    ) -> Received:
        """One BOD document: its events published once, or the document kept as a dead letter.

        `document_name` (IMS `documentName`, e.g. `Sync.ItemMaster`) must name the BOD inside, else the document is
        dead-lettered (`document_mismatch`). `delivery_id` (IMS `messageId`) is claimed before the BOD is read: a
        second delivery of one message is a duplicate, and the claim is released when publishing fails."""
        if delivery_id is None:
            return await self._receive(body, origin, document_name)
        async with deliveries.claiming(self.engine, IMS_MESSAGE_CLAIMS, delivery_id) as won:
            if not won:
                bods_total.labels("-", "duplicate").inc()
                return Received("duplicate", f"message {delivery_id} was already received")
            return await self._receive(body, origin, document_name)

    async def _receive(self, body: bytes, origin: Origin, document_name: str | None) -> Received:
        try:
            bod = parse_bod(body)
        except BodError as exc:
            return await self.reject(body, origin, exc.reason, str(exc))
        if document_name is not None and document_name.casefold() != f"{bod.verb}.{bod.noun}".casefold():
            message = f"documentName {document_name!r} but the BOD inside is {bod.verb}{bod.noun} ({bod.bod_id})"
            return await self.reject(body, origin, "document_mismatch", message)
        status, detail = await self.process(bod)
        bods_total.labels(bod.noun, status).inc()
        return Received(status, detail)

    async def reject(self, body: bytes, origin: Origin, reason: str, message: str) -> Received:
        """A delivered document that cannot be used: kept as a dead letter with the reason, and counted."""
        await self.dead_letter(body, origin, reason, message)
        bods_total.labels("-", reason).inc()
        return Received("dead-lettered", message, reason)

    async def process(self, bod: ParsedBod) -> tuple[Status, str]:
        """Publish the BOD's events once, in variation order per document. The BODID is claimed (one insert)
        before anything is published, so of concurrent deliveries of one BOD exactly one publishes; when
        publishing fails the claim is released and the error goes on, so the redelivery publishes."""
        async with deliveries.claiming(self.engine, BOD_CLAIMS, bod.bod_id) as won:
            if not won:
                return "duplicate", f"BOD {bod.bod_id} was already received"
            entity = f"{bod.noun}:{bod.document_id}"
            newest = await fingerprints.get(self.engine, "bod-variation", entity)
            if newest is not None and bod.variation and bod.variation < int(newest):
                # ION may deliver an older variation after a newer one: the newer state has been published already.
                return "stale", f"variation {bod.variation} of {entity} is older than {newest}"
            for event in bod.events:
                await publish(self.broker, event.topic, event.payload, key=event.key, max_bytes=self.max_request_size)
            if bod.variation:
                await fingerprints.put(self.engine, "bod-variation", entity, str(bod.variation))
        return "published", f"{len(bod.events)} events from {bod.noun} {bod.document_id}"

    async def dead_letter(self, body: bytes, origin: Origin, reason: str, message: str) -> None:
        """Kept, not dropped: a person can read why and replay it (to the inbound topic) once the cause is fixed."""
        letter = dead_letters.letter_of(
            body,
            service=self.service,
            error_class=reason,
            error_message=message,
            origin=origin,
            details={"bytes": len(body), "received_via": origin.via},
            payload_limit=DEAD_LETTER_PAYLOAD_BYTES,
        )
        await send_to_dead_letters(self.broker, letter, max_bytes=self.max_request_size)
