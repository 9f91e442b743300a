"""inventory-query's Kafka request/reply step: answering an availability request and sending the reply (or the
refusal) to the request's `reply_to` topic the way every bridge message is sent, through `shared.platform.kafka`."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from faststream.kafka import KafkaBroker
from faststream.kafka.message import KafkaMessage
from prometheus_client import Counter

from services.inventory_query.availability import Availability
from services.inventory_query.messages import refusal
from shared.contracts import AvailabilityReply, AvailabilityRequest
from shared.contracts.topics import Topic
from shared.platform.consuming import INVALID, UNDECODABLE, Failure
from shared.platform.correlation import KAFKA_HEADER
from shared.platform.kafka import encode, publish_raw

log = logging.getLogger(__name__)

#: The `topic` label of replies in m3bridge_messages_published_total: each requester names its own reply topic.
REPLIES_COUNTED_AS = "reply_to"

replies_refused = Counter(
    "m3bridge_inventory_replies_refused_total",
    "Availability requests not answered because their reply_to is not a reply topic (M3B_REPLY_TOPIC_PREFIX).",
)


class ReplyTopicRefusedError(Exception):
    """The request names a reply topic outside the allowed prefix: it is not answered at all (not retryable)."""

    retryable = False


def reply_topic(name: str) -> Topic:
    """The requester's own topic, registered nowhere, as a Topic carrying `AvailabilityReply`: so a reply gets the
    contract check, size limit, content type and count of any other publish."""
    return Topic(
        name, AvailabilityReply, "the request's correlation id", "Replies to availability requests (the requester's)."
    )


class Replier:
    """Sends replies on `broker`, each at most `max_bytes` (the producer's limit), and only to topics whose name starts
    with `allowed_prefix`: the reply is written with inventory-query's own credentials, so a requester naming
    `quotewerks.quote.approved.v1` or a dead-letter topic as its `reply_to` must not get a message put there."""

    def __init__(self, broker: KafkaBroker, *, max_bytes: int, allowed_prefix: str) -> None:
        if not allowed_prefix:
            raise ValueError("replies need a topic prefix of their own")
        self.broker = broker
        self.max_bytes = max_bytes
        self.allowed_prefix = allowed_prefix

    def check_reply_to(self, message: KafkaMessage) -> None:
        """Raises ReplyTopicRefusedError when the request's reply topic is not one replies may go to."""
        if message.reply_to and not message.reply_to.startswith(self.allowed_prefix):
            replies_refused.inc()
            raise ReplyTopicRefusedError(
                f"reply_to {message.reply_to[:249]!r} is not a reply topic: replies go only to topics starting with "
                f"{self.allowed_prefix!r} (M3B_REPLY_TOPIC_PREFIX)"
            )

    async def answer(self, availability: Availability, request: AvailabilityRequest, message: KafkaMessage) -> None:
        """Answers every line and sends the reply; the broker has it when this returns. A reply that cannot be sent
        (too large, broker error) raises, so the request is dead-lettered and refused instead; so does a reply topic
        outside the allowed prefix, before anything is asked of M3."""
        self.check_reply_to(message)
        lines = await availability.check_many(request.lines)
        reply = AvailabilityReply(
            correlation_id=message.correlation_id or None, lines=lines, answered_at=datetime.now(UTC)
        )
        await self.send(message, reply)

    async def send(self, message: KafkaMessage, reply: AvailabilityReply) -> None:
        if not message.reply_to:
            log.warning("availability request %s has no reply_to: its reply goes nowhere", message.correlation_id)
            return
        topic = reply_topic(message.reply_to)
        body = encode(topic, reply, max_bytes=self.max_bytes)
        correlation_id = message.correlation_id or None
        # Requesters match the reply by faststream's correlation id; set it explicitly, else the correlation
        # middleware would stamp the request's own `correlation-id` header (a tracing id that may differ).
        headers = {KAFKA_HEADER: correlation_id} if correlation_id else None
        await publish_raw(
            self.broker, topic, body, key=correlation_id, max_bytes=self.max_bytes, headers=headers,
            counted_as=REPLIES_COUNTED_AS,
        )  # fmt: skip

    async def refuse(self, message: KafkaMessage, failure: Failure) -> None:
        """A request that was dead-lettered still gets a reply: why it was not answered. The request's offset is
        committed either way (a request is answered once or not at all)."""
        if message.reply_to and not message.reply_to.startswith(self.allowed_prefix):
            log.warning("availability request %s: no refusal sent to %r, not a reply topic", message.correlation_id,
                        message.reply_to[:249])  # fmt: skip
            return
        unreadable = failure.error_class in (UNDECODABLE, INVALID)
        reason = f"{'not an availability request' if unreadable else 'not answered'}: {failure.error_message}"
        try:
            await self.send(message, refusal(message.correlation_id or None, reason))
        except Exception:  # the request is dead-lettered already; only the requester's answer is lost
            log.exception("the refusal of availability request %s could not be sent", message.correlation_id)
