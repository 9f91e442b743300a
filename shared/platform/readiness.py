"""What a service checks about its dependencies: the broker reachable, the state store open, the topics it reads
there at all."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from faststream.kafka import KafkaBroker

from shared.platform.settings import BridgeSettings

if TYPE_CHECKING:
    # The database libraries only where a service has a state store.
    from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("shared.platform.runtime")


class Readiness:
    """Part of `ServiceRuntime`: the readiness checks of its broker and state store."""

    name: str
    settings: BridgeSettings
    broker: KafkaBroker
    engine: AsyncEngine | None
    _subscribed_topics: set[str]

    async def _say_missing_topics(self) -> None:
        """One warning naming the topics this service reads that the broker does not have (it waits on them)."""
        from aiokafka.admin import AIOKafkaAdminClient

        from shared.platform.kafka import aiokafka_client_options

        if not self._subscribed_topics:
            return
        admin = AIOKafkaAdminClient(**aiokafka_client_options(self.settings), client_id=f"{self.name}-topics")
        try:
            await asyncio.wait_for(admin.start(), 10)
            existing = set(await asyncio.wait_for(admin.list_topics(), 10))
        except Exception as exc:  # the broker's health is /readyz's to say; this is only a hint
            log.info("could not check the topics: %s", type(exc).__name__)
            return
        finally:
            await admin.close()
        missing = sorted(self._subscribed_topics - existing)
        if missing:
            log.warning("topics %s do not exist: this service waits for them (create them with `m3bridge topics`)",
                        ", ".join(missing))  # fmt: skip

    async def _kafka_ready(self) -> str | None:
        return None if await self.broker.ping(timeout=2.0) else "broker not reachable"

    async def _state_ready(self) -> str | None:
        if self.engine is None:
            return "state store not open"
        from shared.platform.state import db

        await db.ping(self.engine)
        return None
