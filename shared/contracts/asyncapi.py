"""The AsyncAPI document of the bridge's topics, generated from the contracts in `shared.contracts`."""

from __future__ import annotations

import json
from pathlib import Path

from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI

import shared
from shared.contracts.topics import ALL_TOPICS

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.json"

DESCRIPTION = """\
Topics of M3 Bridge, the QuoteWerks <-> Infor M3 integration. Every message is JSON with headers
`correlation-id` (end-to-end trace id; set it when you produce) and `source` (the producing system), and is
keyed as each channel says so that per-entity order holds. Decimal amounts are JSON strings.
Any system may produce approved quotes to `quotewerks.quote.approved.v1`: key = DocNo, payload below.
"""


def build() -> str:
    broker = KafkaBroker("kafka:9092", description="Apache Kafka (KRaft) of the M3 Bridge deployment")
    for topic in ALL_TOPICS:
        broker.publisher(
            topic.name,
            schema=topic.payload,
            title=topic.name,
            description=f"{topic.description} Key: {topic.key}.",
        )
    spec = AsyncAPI(broker, title="M3 Bridge", version=shared.__version__, description=DESCRIPTION)
    return json.dumps(spec.to_specification().to_jsonable(), indent=2, sort_keys=True) + "\n"
