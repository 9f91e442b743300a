"""The topic registry: every topic the bridge uses, its key, its payload contract, and who produces it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pydantic import BaseModel, RootModel

from shared import contracts

log = logging.getLogger(__name__)

# Kafka error code for "topic already exists": creating topics is idempotent for us.
_TOPIC_ALREADY_EXISTS = 36
# Dead letters wait for a person (list, fix, replay): keep them longer than Kafka's default week.
DEFAULT_DEAD_LETTER_RETENTION_MS = 30 * 24 * 60 * 60 * 1000


@dataclass(frozen=True)
class Topic:
    name: str
    payload: type[BaseModel]
    key: str
    description: str
    #: What the messages are: JSON of `payload`, or (for raw documents) the bytes as received.
    content_type: str = "application/json"


class BodDocument(RootModel[str]):
    """An Infor BOD exactly as ION sends it: the XML document itself (content type `application/xml`), not JSON."""


QUOTE_APPROVED = Topic(
    "quotewerks.quote.approved.v1",
    contracts.QuoteApproved,
    "DocNo",
    "Full approved QuoteWerks quote (header, parties, lines). Any system may produce here.",
)
QUOTEWERKS_CUSTOMER_CHANGED = Topic(
    "quotewerks.customer.changed.v1",
    contracts.QuoteWerksCustomerChanged,
    "QuoteWerks customer id",
    "A customer created or updated in QuoteWerks.",
)
ORDER_RESULT = Topic(
    "m3.order.result.v1",
    contracts.OrderResult,
    "DocNo",
    "What became of an approved quote in M3: created (with order number), held (with reason) or failed.",
)
ORDER_STATUS = Topic(
    "m3.order.status.v1", contracts.OrderStatusChanged, "M3 order number", "An M3 order changed status."
)
ITEM_CHANGED = Topic("m3.item.changed.v1", contracts.ItemChanged, "M3 item number", "An M3 item changed.")
PRICE_CHANGED = Topic("m3.price.changed.v1", contracts.PriceChanged, "M3 item number", "An M3 sales price changed.")
INVENTORY_CHANGED = Topic(
    "m3.inventory.changed.v1",
    contracts.InventoryChanged,
    "M3 item number + warehouse",
    "The stock balance of an item in a warehouse changed.",
)
M3_CUSTOMER_CHANGED = Topic(
    "m3.customer.changed.v1", contracts.M3CustomerChanged, "M3 customer number", "An M3 customer changed."
)
CATALOG_SYNC_REPORT = Topic(
    "catalog.sync.report.v1",
    contracts.CatalogSyncReport,
    "run id",
    "What one catalog synchronisation run did.",
)
AVAILABILITY_REQUEST = Topic(
    "inventory.availability.request.v1",
    contracts.AvailabilityRequest,
    "any (the requester's choice)",
    "Availability and price questions for inventory-query; set `reply_to` and `correlation_id`: the "
    "AvailabilityReply goes to `reply_to` with the same correlation id. `reply_to` must start with inventory-query's "
    "M3B_REPLY_TOPIC_PREFIX (`inventory.availability.reply.` by default); a request naming another topic is "
    "dead-lettered unanswered.",
)
BOD_INBOUND = Topic(
    "ion.bod.inbound.v1",
    BodDocument,
    "BODID (any key works)",
    "Raw ION BOD documents (XML, as ION sends them to /bods) for bod-listener, which treats them like HTTP "
    "deliveries; a BOD dead-lettered by bod-listener is replayed here.",
    content_type="application/xml",
)
HEARTBEAT = Topic(
    "m3bridge.heartbeat.v1",
    contracts.Heartbeat,
    "service name",
    "Each service announces itself periodically; every service's /healthz lists the peers it hears.",
)

AUDIT = Topic(
    "m3bridge.audit.v1",
    contracts.AuditEvent,
    "the first business key of the write (a CUNO, ORNO, DocNo, …)",
    "Every write the bridge makes to M3 (MI transactions that change data) and to QuoteWerks, with its business "
    "keys, outcome, service and correlation id: the audit trail.",
)

# Services whose failures go to a dead-letter topic of their own.
DEAD_LETTER_SERVICES = ("order-writer", "bod-listener", "catalog-sync", "quote-ingest", "inventory-query")


def topic_named(name: str) -> Topic | None:
    """The registered topic of that name (dead-letter topics included), None for one the bridge does not know."""
    return next((topic for topic in ALL_TOPICS if topic.name == name), None)


def dead_letter_topic(service: str) -> Topic:
    return Topic(
        f"dlq.{service}.v1",
        contracts.DeadLetter,
        "key of the original message",
        f"Messages {service} could not process, with the error and their origin, for listing and replay.",
    )


ALL_TOPICS: tuple[Topic, ...] = (
    QUOTE_APPROVED,
    QUOTEWERKS_CUSTOMER_CHANGED,
    ORDER_RESULT,
    ORDER_STATUS,
    ITEM_CHANGED,
    PRICE_CHANGED,
    INVENTORY_CHANGED,
    M3_CUSTOMER_CHANGED,
    CATALOG_SYNC_REPORT,
    AVAILABILITY_REQUEST,
    BOD_INBOUND,
    HEARTBEAT,
    AUDIT,
    *(dead_letter_topic(service) for service in DEAD_LETTER_SERVICES),
)


def is_dead_letter_topic(topic: Topic) -> bool:
    return topic.payload is contracts.DeadLetter


def topic_configs(topic: Topic, *, dead_letter_retention_ms: int) -> dict[str, str]:
    """The topic-level configuration a topic is created with: dead-letter topics keep their messages
    `dead_letter_retention_ms` (-1: forever), the others get the broker's defaults."""
    if is_dead_letter_topic(topic):
        return {"retention.ms": str(dead_letter_retention_ms)}
    return {}


def new_topics(
    topics: tuple[Topic, ...], *, partitions: int, replication: int, dead_letter_retention_ms: int
) -> list[NewTopic]:
    """The CreateTopics request for `topics`."""
    return [
        NewTopic(
            topic.name,
            num_partitions=partitions,
            replication_factor=replication,
            topic_configs=topic_configs(topic, dead_letter_retention_ms=dead_letter_retention_ms),
        )
        for topic in topics
    ]


async def ensure_topics(
    bootstrap_servers: str,
    *,
    partitions: int,
    replication: int,
    topics: tuple[Topic, ...] = ALL_TOPICS,
    client_options: Mapping[str, Any] | None = None,
    dead_letter_retention_ms: int = DEFAULT_DEAD_LETTER_RETENTION_MS,
) -> list[str]:
    """Create the missing topics with a fixed partition count (partitions cannot be added later) and the
    dead-letter topics with their retention; returns the names created. Safe to run concurrently and repeatedly.
    `client_options`: the connection's security options, `shared.platform.kafka.aiokafka_client_options(settings)`.
    Topics that exist are left as they are (their configuration included)."""
    options = {"bootstrap_servers": bootstrap_servers, **(client_options or {})}
    admin = AIOKafkaAdminClient(**options, client_id="m3bridge-topics")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = tuple(t for t in topics if t.name not in existing)
        if not missing:
            return []
        response = await admin.create_topics(
            new_topics(
                missing,
                partitions=partitions,
                replication=replication,
                dead_letter_retention_ms=dead_letter_retention_ms,
            )
        )
        created = []
        for name, code, *_ in response.topic_errors:
            if code == 0:
                created.append(name)
            elif code != _TOPIC_ALREADY_EXISTS:
                raise RuntimeError(f"could not create topic {name}: Kafka error code {code}")
        if created:
            log.info("created topics %s", ", ".join(sorted(created)))
        return created
    finally:
        await admin.close()
