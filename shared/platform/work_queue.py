"""Changes a service could not apply, on the work queue beside their dead letters.

A subscriber declared with `work_kind` (catalog-sync's item, price, stock and customer changes, order-writer's
QuoteWerks customers) keeps what it gives up on twice: the dead letter on the broker (the raw message, for replay
tooling) and a work item in the state store (`m3bridge work list`), one per kind and business key (the message key),
with the reason and the message to send again. A message `m3bridge work retry` sent again (its replay header names
the item) that is then applied closes its item; one that fails again brings the same item up to date. Messages
that are not even a valid payload stay dead letters only: there is nothing a person can retry.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from shared.platform.consuming import INVALID, UNDECODABLE
from shared.platform.kafka import REPLAY_HEADER

if TYPE_CHECKING:
    # The database libraries only where a service has a state store (token-service and inventory-query do not).
    from sqlalchemy.ext.asyncio import AsyncEngine

    from shared.platform.state import work_items

log = logging.getLogger(__name__)

#: What `m3bridge work retry` puts in the replay header: the item it sends again.
WORK_ITEM_REF = "work-item:"

# Set when the message being handled was dead-lettered, so a retried change that failed again is not closed.
_dead_lettered: contextvars.ContextVar[bool] = contextvars.ContextVar("dead_lettered", default=False)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _origin(message: Any) -> tuple[str, str, str]:
    """(topic, key, value) of a consumed message."""
    raw = getattr(message, "raw_message", None)
    return _text(getattr(raw, "topic", "")), _text(getattr(raw, "key", b"")), _text(getattr(message, "body", b""))


def retried_item(message: Any) -> int | None:
    """The work item a message was sent again for, from its replay header."""
    reference = _text((getattr(message, "headers", None) or {}).get(REPLAY_HEADER))
    number = reference.removeprefix(WORK_ITEM_REF)
    return int(number) if reference.startswith(WORK_ITEM_REF) and number.isdigit() else None


class ChangeWorkQueue:
    """One service's change subscribers' work items (`kinds`: topic name → kind) in `engine`'s store."""

    def __init__(self, service: str, engine: Callable[[], AsyncEngine | None]) -> None:
        self.service = service
        self._engine = engine
        self.kinds: dict[str, str] = {}
        self._count: work_items.OpenCount | None = None  # imported once a store is there

    def declare(self, topic: str, kind: str) -> None:
        self.kinds[topic] = kind

    async def refresh_count(self) -> None:
        engine = self._engine()
        if engine is None or not self.kinds:
            return
        from shared.platform.state import work_items

        if self._count is None:
            self._count = work_items.OpenCount(engine, sorted(set(self.kinds.values())))
        await self._count.refresh()

    async def dead_lettered(self, message: Any, *, error_class: str, reason: str) -> None:
        """Called once the message's dead letter is on the broker: its work item, when its topic has a kind. A
        store that fails here costs the item, not the message (its letter is kept): logged, not raised."""
        _dead_lettered.set(True)
        topic, key, value = _origin(message)
        kind, engine = self.kinds.get(topic), self._engine()
        if kind is None or engine is None or error_class in (UNDECODABLE, INVALID):
            return
        from shared.platform.state import work_items

        try:
            change = work_items.Change(topic=topic, key=key, value=value)
            item_id, new = await work_items.open_change(engine, kind=kind, change=change, service=self.service,
                                                        error_class=error_class, reason=reason)  # fmt: skip
            await self.refresh_count()
        except Exception:
            log.exception("the %s change %s was dead-lettered but could not be put on the work queue", kind, key)
            return
        log.info("%s change %s is work item %d%s", kind, key, item_id, "" if new else " (again)")

    def closing(self, handler: Callable[[Any, Any], Awaitable[Any]]) -> Callable[[Any, Any], Awaitable[Any]]:
        """`handler`, which closes the work item a retried message was sent for once it is applied."""

        async def handle(payload: Any, message: Any) -> Any:
            flag = _dead_lettered.set(False)
            try:
                result = await handler(payload, message)
                item_id, engine = retried_item(message), self._engine()
                if item_id is not None and engine is not None and not _dead_lettered.get():
                    from shared.platform.state import work_items

                    try:
                        await work_items.note(engine, item_id, "resolved", "sent again and applied", resolve=True)
                    except LookupError:
                        return result  # a header naming no item of this store (another environment's replay)
                    await self.refresh_count()
                    log.info("work item %d resolved: its change was sent again and applied", item_id)
                return result
            finally:
                _dead_lettered.reset(flag)

        handle.__name__ = getattr(handler, "__name__", "handle")
        return handle
