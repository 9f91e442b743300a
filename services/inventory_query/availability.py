"""Availability answers from a short cache in front of M3, one M3 call per key at a time, and the last known
figure when M3 cannot answer.

Pure logic: M3 is reached through a `Reader` (the M3 adapter lives in `m3_reader.py`), time through a clock,
so all of it is unit tested without a network.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Generic, Protocol, TypeVar

from prometheus_client import Counter

from services.inventory_query.messages import AvailabilityAnswer, AvailabilityQuery, LineProblem, LineResult, Source
from shared.contracts import InventoryChanged, PriceChanged

log = logging.getLogger(__name__)

cache_hits = Counter("m3bridge_inventory_cache_hits_total", "Figures answered from the cache.", ["figure"])
cache_misses = Counter("m3bridge_inventory_cache_misses_total", "Figures not (freshly) cached: M3 asked.", ["figure"])
stale_answers = Counter(
    "m3bridge_inventory_stale_answers_total", "Figures answered from the last known value: M3 could not answer.",
    ["figure"],
)  # fmt: skip
unavailable_answers = Counter(
    "m3bridge_inventory_unavailable_total", "Figures neither M3 nor the cache could give.", ["figure"]
)
price_lists_read = Counter(
    "m3bridge_inventory_price_lists_read_total",
    "Reads of the whole price list (OIS017MI/LstBasePrice), by outcome.",
    ["outcome"],
)
calls_saved = Counter(
    "m3bridge_inventory_m3_calls_saved_total", "M3 calls saved by joining a read already in flight.", ["figure"]
)
events_applied = Counter(
    "m3bridge_inventory_events_total", "m3.inventory.changed events by what they did to the cache.", ["outcome"]
)

STOCK, PRICE = "stock", "price"


# --- what the reader gives -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StockReading:
    on_hand: Decimal
    allocatable: Decimal


@dataclass(frozen=True)
class PriceReading:
    amount: Decimal | None
    currency: str | None
    note: str | None = None  # why there is no amount


class NotFoundError(Exception):
    """M3 does not know the item (or warehouse); the message is M3's."""


class InvalidQueryError(Exception):
    """M3's metadata refused a value before any call."""


class UnreachableError(Exception):
    """M3 or the rate budget cannot answer now (transient, throttled, lease refused, denied, timeout)."""


class UnavailableError(Exception):
    """M3 cannot answer and no figure is known: the caller gets a 503 with this reason."""


class Reader(Protocol):
    async def stock(self, item: str, warehouse: str) -> StockReading: ...

    async def price(self, item: str) -> PriceReading: ...


# --- building blocks -------------------------------------------------------------------------------------

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True)
class Figure(Generic[V]):
    value: V
    as_of: datetime


class LastKnown(Generic[K, V]):
    """The newest figure per key, least recently used dropped beyond `max_entries`. Figures are kept past
    the TTL: they are what a rep gets, marked stale, while M3 is away."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._entries: OrderedDict[K, Figure[V]] = OrderedDict()

    def get(self, key: K) -> Figure[V] | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def put(self, key: K, figure: Figure[V]) -> bool:
        """Keep `figure` unless a newer one is known (a read started before an event must not undo it)."""
        current = self._entries.get(key)
        if current is not None and current.as_of > figure.as_of:
            return False
        self._entries[key] = figure
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._entries)


class SingleFlight(Generic[K, V]):
    """Concurrent callers for one key share one call. The call runs as its own task, so a caller that gives
    up (a closed HTTP request) does not cancel it for the others."""

    def __init__(self) -> None:
        self._flights: dict[K, asyncio.Task[V]] = {}

    async def run(self, key: K, call: Callable[[], Awaitable[V]]) -> tuple[V, bool]:
        """The call's result and whether this caller joined a call already in flight."""
        task = self._flights.get(key)
        joined = task is not None
        if task is None:
            task = asyncio.ensure_future(call())
            self._flights[key] = task
            task.add_done_callback(lambda done: self._landed(key, done))
        return await asyncio.shield(task), joined

    def _landed(self, key: K, task: asyncio.Task[V]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]
        if not task.cancelled():
            task.exception()  # retrieved here, so an error nobody awaited any more is not reported as lost

    def __len__(self) -> int:
        return len(self._flights)


def utc_now() -> datetime:
    return datetime.now(UTC)


# --- the service logic -----------------------------------------------------------------------------------


class Availability:
    def __init__(
        self,
        reader: Reader,
        *,
        ttl_s: float = 30.0,
        price_ttl_s: float | None = None,
        deadline_s: float = 2.0,
        max_entries: int = 100_000,
        outage_backoff_s: float = 5.0,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._reader = reader
        self._ttl = timedelta(seconds=ttl_s)
        # Prices read with the whole list stay fresh until the next read of it (events keep them current between).
        self._price_ttl = timedelta(seconds=price_ttl_s if price_ttl_s is not None else ttl_s)
        self._deadline_s = deadline_s
        self._backoff = timedelta(seconds=outage_backoff_s)
        self._clock = clock
        self._stock: LastKnown[tuple[str, str], StockReading] = LastKnown(max_entries)
        self._price: LastKnown[str, PriceReading] = LastKnown(max_entries)
        self._stock_flights: SingleFlight[tuple[str, str], Figure[StockReading]] = SingleFlight()
        self._price_flights: SingleFlight[str, Figure[PriceReading]] = SingleFlight()
        # After M3 failed to answer, answer from what is known for a moment instead of making every rep wait
        # out the deadline again: figure → (until, reason).
        self._outage: dict[str, tuple[datetime, str]] = {}

    # --- answers -----------------------------------------------------------------------------------------

    async def check(self, query: AvailabilityQuery) -> AvailabilityAnswer:
        """Raises NotFoundError (unknown item/warehouse), UnavailableError (M3 away, nothing known) or
        InvalidQueryError."""
        stock_result, price_result = await asyncio.gather(
            self._stock_figure(query.item, query.warehouse), self._price_figure(query.item), return_exceptions=True
        )
        if isinstance(stock_result, BaseException):
            raise stock_result
        stock, stock_source = stock_result
        source: Source = stock_source
        price_as_of: datetime | None = None
        if isinstance(price_result, UnavailableError):
            price = PriceReading(None, None, f"price unavailable: {price_result}")
        elif isinstance(price_result, BaseException):
            if not isinstance(price_result, NotFoundError | InvalidQueryError):
                raise price_result
            price = PriceReading(None, None, str(price_result))
        else:
            price_figure, price_source = price_result
            price, price_as_of = price_figure.value, price_figure.as_of
            if price_source == "stale":
                source = "stale"
        return AvailabilityAnswer(
            item=query.item,
            warehouse=query.warehouse,
            on_hand=stock.value.on_hand,
            allocatable=stock.value.allocatable,
            quantity=query.quantity,
            available=stock.value.allocatable >= query.quantity,
            price=price.amount,
            currency=price.currency,
            price_note=price.note,
            source=source,
            as_of=stock.as_of,
            age_s=self._age_s(stock.as_of),
            price_as_of=price_as_of,
        )

    async def check_many(self, queries: list[AvailabilityQuery]) -> list[LineResult]:
        """One result per line, in order; a line that has no answer says why instead of failing the rest."""
        return list(await asyncio.gather(*(self._line(q) for q in queries)))

    async def _line(self, query: AvailabilityQuery) -> LineResult:
        problem = {"item": query.item, "warehouse": query.warehouse, "quantity": query.quantity}
        try:
            return await self.check(query)
        except NotFoundError as exc:
            return LineProblem(outcome="not_found", detail=str(exc), **problem)
        except UnavailableError as exc:
            return LineProblem(outcome="unavailable", detail=str(exc), **problem)
        except InvalidQueryError as exc:
            return LineProblem(outcome="invalid", detail=str(exc), **problem)

    # --- events ------------------------------------------------------------------------------------------

    def apply_change(self, event: InventoryChanged) -> bool:
        """Take the figures of an `m3.inventory.changed` event as the newest known; an event older than
        what is cached (redelivered, out of order) changes nothing."""
        now = self._clock()
        # M3's clock may run ahead of ours: a figure from "the future" would never expire.
        as_of = min(event.changed_at if event.changed_at.tzinfo else event.changed_at.replace(tzinfo=UTC), now)
        reading = StockReading(on_hand=event.on_hand, allocatable=event.allocatable)
        applied = self._stock.put((event.item_number, event.warehouse), Figure(reading, as_of))
        events_applied.labels("applied" if applied else "older_than_cache").inc()
        return applied

    def apply_price_list(self, prices: Mapping[str, PriceReading], as_of: datetime) -> int:
        """The whole price list as read at `as_of`: every price the newest known unless a newer one is cached
        (a price event that arrived while the list was read). Returns how many were taken."""
        return sum(self._price.put(item, Figure(reading, as_of)) for item, reading in prices.items())

    def apply_price_change(self, event: PriceChanged, *, price_list: str, currency: str) -> bool:
        """A price event of the configured list and currency (not a customer's own price) is the newest known
        price; an older one than what is cached changes nothing."""
        if event.customer_number or event.price_list != price_list or (event.currency or currency) != currency:
            return False
        changed = event.changed_at if event.changed_at.tzinfo else event.changed_at.replace(tzinfo=UTC)
        reading = PriceReading(event.sales_price, currency)
        return self._price.put(event.item_number, Figure(reading, min(changed, self._clock())))

    # --- figures -----------------------------------------------------------------------------------------

    async def _stock_figure(self, item: str, warehouse: str) -> tuple[Figure[StockReading], Source]:
        key = (item, warehouse)

        async def read() -> Figure[StockReading]:
            started = self._clock()
            reading = await self._within_deadline(self._reader.stock(item, warehouse))
            self._stock.put(key, Figure(reading, started))
            return self._stock.get(key) or Figure(reading, started)

        return await self._figure(STOCK, self._stock, self._stock_flights, key, read, self._ttl)

    async def _price_figure(self, item: str) -> tuple[Figure[PriceReading], Source]:
        async def read() -> Figure[PriceReading]:
            started = self._clock()
            reading = await self._within_deadline(self._reader.price(item))
            self._price.put(item, Figure(reading, started))
            return self._price.get(item) or Figure(reading, started)

        return await self._figure(PRICE, self._price, self._price_flights, item, read, self._price_ttl)

    async def _figure(
        self,
        kind: str,
        known: LastKnown[K, V],
        flights: SingleFlight[K, Figure[V]],
        key: K,
        read: Callable[[], Awaitable[Figure[V]]],
        ttl: timedelta,
    ) -> tuple[Figure[V], Source]:
        cached = known.get(key)
        if cached is not None and self._clock() - cached.as_of < ttl:
            cache_hits.labels(kind).inc()
            return cached, "cache"
        cache_misses.labels(kind).inc()
        outage = self._outage.get(kind)
        if outage is not None and self._clock() < outage[0]:
            return self._fallback(kind, known, key, outage[1])
        try:
            figure, joined = await flights.run(key, read)
        except UnreachableError as exc:
            reason = str(exc)
            self._outage[kind] = (self._clock() + self._backoff, reason)
            log.warning("M3 could not answer a %s read of %s: %s", kind, key, reason)
            return self._fallback(kind, known, key, reason)
        self._outage.pop(kind, None)
        if joined:
            calls_saved.labels(kind).inc()
        return figure, "m3"

    def _fallback(self, kind: str, known: LastKnown[K, V], key: K, reason: str) -> tuple[Figure[V], Source]:
        last = known.get(key)
        if last is None:
            unavailable_answers.labels(kind).inc()
            raise UnavailableError(f"M3 cannot answer and no {kind} figure is known: {reason}")
        stale_answers.labels(kind).inc()
        return last, "stale"

    async def _within_deadline(self, call: Awaitable[V]) -> V:
        try:
            return await asyncio.wait_for(call, self._deadline_s)
        except TimeoutError:
            raise UnreachableError(f"no answer from M3 within {self._deadline_s:g}s") from None

    def _age_s(self, as_of: datetime) -> float:
        return round(max(0.0, (self._clock() - as_of).total_seconds()), 3)

    # --- for /healthz ------------------------------------------------------------------------------------

    def describe(self) -> dict[str, object]:
        return {
            "stock_figures_known": len(self._stock),
            "price_figures_known": len(self._price),
            "outage": {kind: reason for kind, (until, reason) in self._outage.items() if self._clock() < until},
        }


class PriceLists(Protocol):
    async def price_list(self) -> dict[str, PriceReading]: ...


async def read_price_lists(
    availability: Availability, reader: PriceLists, *, interval_s: float, stop: asyncio.Event
) -> None:
    """The whole price list into the cache at once and every `interval_s`; a failed read is logged and the prices
    are then read item by item when asked, as without the list."""
    while not stop.is_set():
        started = utc_now()
        try:
            taken = availability.apply_price_list(await reader.price_list(), started)
            price_lists_read.labels("ok").inc()
            log.info("price list read: %d prices", taken)
        except UnreachableError as exc:
            price_lists_read.labels("failed").inc()
            log.warning("price list not read (prices are read per item until the next try): %s", exc)
        try:
            await asyncio.wait_for(stop.wait(), interval_s)
        except TimeoutError:
            continue
