"""Ground truth after a chaos run, and the one row per scenario computed from it.

Read, never inferred from the bridge's own view: the M3 simulator's data (`/__admin/m3/orders`, `batch-orders`,
`customers`), what was written back on each QuoteWerks quote (CustomText01 order number, CustomText02 outcome),
the results on `m3.order.result.v1` and every `dlq.*.v1` topic (read from the beginning until quiet: the embedded
broker's end offsets are not trusted).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from shared.contracts import DeadLetter, OrderResult
from shared.contracts.topics import DEAD_LETTER_SERVICES, ORDER_RESULT, dead_letter_topic
from tests.chaos.quotes import CENT, PlannedQuote
from tests.chaos.stack import qw_headers

ORDER_FIELD = "CustomText01"
STATUS_FIELD = "CustomText02"
DEFECTS = (
    "no_outcome", "multi_order", "lines_differ", "dup_customers", "orphan_batches", "false_failures",
    "wrong_outcome", "poison_lost",
)  # fmt: skip


@dataclass
class Row:
    scenario: str
    sent: int = 0
    poison_sent: int = 0
    confirmed: int = 0  # quotes with at least one confirmed M3 order
    held_ok: int = 0  # quotes that had to be held and were, with the reason
    must_hold: int = 0
    no_outcome: int = 0
    multi_order: int = 0
    lines_differ: int = 0  # orders whose lines (item, quantity, net price) differ from the quote's
    dup_customers: int = 0
    orphan_batches: int = 0
    false_failures: int = 0
    # An orderable quote held/failed without an order, an unorderable one not held, a wrong order number on it.
    wrong_outcome: int = 0
    poison_lost: int = 0  # poison messages not dead-lettered
    dead_letters: dict[str, int] = field(default_factory=dict)  # "service:class" -> count
    drain_s: float | None = None  # None: the deadline passed first
    drain_deadline_s: float = 0.0
    examples: dict[str, list[str]] = field(default_factory=dict)  # defect -> a few DocNos with details
    chaos_log: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def defects(self) -> int:
        return sum(int(getattr(self, name)) for name in DEFECTS)

    def summary(self) -> str:
        """One line: every column, then examples per non-zero defect."""
        parts = [f"{name}={getattr(self, name)}" for name in ("sent", "poison_sent", "confirmed", *DEFECTS)]
        parts.append(f"held={self.held_ok}/{self.must_hold}")
        parts.append(f"dead_letters={self.dead_letters}")
        drain = f">{self.drain_deadline_s:.0f}" if self.drain_s is None else f"{self.drain_s:.1f}"
        parts.append(f"drain={drain}s")
        text = f"[{self.scenario}] " + " ".join(parts)
        for name, shown in self.examples.items():
            text += f"\n  {name}: " + "; ".join(shown)
        for note in self.notes:
            text += f"\n  note: {note}"
        return text

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- reading -------------------------------------------------------------------------------------------------------
async def quote_headers(http: httpx.AsyncClient, qw_url: str) -> dict[str, dict[str, Any]]:
    response = await http.get(
        f"{qw_url}/api/v1/documents", params={"DocType": "QUOTE", "limit": 10_000}, headers=qw_headers(), timeout=30
    )
    response.raise_for_status()
    return {str(row["DocNo"]): row for row in response.json()["documents"]}


async def wait_drained(
    http: httpx.AsyncClient, qw_url: str, quotes: list[PlannedQuote], last_approval: float, deadline_s: float
) -> float | None:
    """Seconds from the last approval until every quote carries an outcome, or None when `deadline_s` passed."""
    wanted = {quote.doc_no for quote in quotes}
    while True:
        try:
            headers = await quote_headers(http, qw_url)
        except httpx.HTTPError:
            headers = {}
        if headers and all(headers.get(doc, {}).get(STATUS_FIELD) for doc in wanted):
            return time.monotonic() - last_approval
        if time.monotonic() - last_approval > deadline_s:
            return None
        await asyncio.sleep(0.5)  # polling interval of the condition


async def wait_m3_quiet(http: httpx.AsyncClient, ion_url: str, *, quiet_s: float = 3.0, cap_s: float = 60.0) -> bool:
    """Until no MI call reached M3 for `quiet_s` (work still in flight after the last outcome, e.g. a redelivery,
    is measured too); False when M3 was still busy after `cap_s`."""
    started = time.monotonic()
    last: Any = None
    quiet_since = started
    while time.monotonic() - started < cap_s:
        response = await http.get(f"{ion_url}/__admin/stats", timeout=10)
        calls = response.json().get("m3")
        if calls != last:
            last, quiet_since = calls, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            return True
        await asyncio.sleep(0.25)  # polling interval of the condition
    return False


async def ion_admin(http: httpx.AsyncClient, ion_url: str, path: str) -> Any:
    response = await http.get(f"{ion_url}/__admin/m3/{path}", timeout=30)
    response.raise_for_status()
    return response.json()


async def read_topics(bootstrap: str, topics: list[str], *, idle_s: float = 2.0, cap_s: float = 60.0) -> list[Any]:
    """Every record of `topics` from the beginning, until none arrived for `idle_s` (at most `cap_s`)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                max_partition_fetch_bytes=8 * 1024 * 1024)  # fmt: skip
    await consumer.start()
    try:
        await consumer.topics()
        assigned = [
            TopicPartition(topic, partition)
            for topic in topics
            for partition in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not assigned:
            return []
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        records: list[Any] = []
        started = quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < idle_s and time.monotonic() - started < cap_s:
            batches = await consumer.getmany(timeout_ms=250)
            for batch in batches.values():
                if batch:
                    quiet_since = time.monotonic()
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


@dataclass
class Truth:
    headers: dict[str, dict[str, Any]]
    orders: list[dict[str, Any]]
    batch_orders: list[dict[str, Any]]
    customers: list[dict[str, Any]]
    results: dict[str, list[OrderResult]]
    dead_letters: list[DeadLetter]


async def collect(http: httpx.AsyncClient, stack_urls: dict[str, str], bootstrap: str) -> Truth:
    headers = await quote_headers(http, stack_urls["quotewerks"])
    orders = (await ion_admin(http, stack_urls["ion"], "orders"))["orders"]
    batches = (await ion_admin(http, stack_urls["ion"], "batch-orders?unconfirmed=true"))["batch_orders"]
    customers = (await ion_admin(http, stack_urls["ion"], "customers"))["customers"]
    results: dict[str, list[OrderResult]] = defaultdict(list)
    for record in await read_topics(bootstrap, [ORDER_RESULT.name]):
        try:
            result = OrderResult.model_validate_json(record.value or b"")
        except ValidationError:
            continue
        results[result.doc_no].append(result)
    letters: list[DeadLetter] = []
    dlq = [dead_letter_topic(service).name for service in DEAD_LETTER_SERVICES]
    for record in await read_topics(bootstrap, dlq):
        try:
            letters.append(DeadLetter.model_validate_json(record.value or b""))
        except ValidationError:
            continue
    return Truth(headers, orders, batches, customers, dict(results), letters)


# --- judging -------------------------------------------------------------------------------------------------------
def _net(line: dict[str, Any]) -> Decimal:
    price = Decimal(line.get("SAPR") or "0")
    discount = Decimal(line.get("DIP1") or "0")
    return (price * (100 - discount) / 100).quantize(CENT, ROUND_HALF_UP)


def order_lines(order: dict[str, Any]) -> Counter[tuple[str, Decimal, Decimal]]:
    return Counter((str(line["ITNO"]), Decimal(str(line["ORQT"])), _net(line)) for line in order["lines"])


def judge(
    row: Row,
    quotes: list[PlannedQuote],
    truth: Truth,
    baseline_customers: set[str],
    poison_keys: set[str],
) -> Row:
    examples: dict[str, list[str]] = defaultdict(list)

    def example(defect: str, text: str) -> None:
        if len(examples[defect]) < 6:
            examples[defect].append(text)

    by_cuor: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for order in truth.orders:
        by_cuor[str(order.get("CUOR", ""))].append(order)
    row.sent = len(quotes)
    for quote in quotes:
        header = truth.headers.get(quote.doc_no, {})
        status = str(header.get(STATUS_FIELD) or "")
        number = str(header.get(ORDER_FIELD) or "")
        orders = by_cuor.get(quote.doc_no, [])
        results = truth.results.get(quote.doc_no, [])
        if orders:
            row.confirmed += 1
        if len(orders) > 1:
            row.multi_order += 1
            example("multi_order", f"{quote.doc_no}: {[o['ORNO'] for o in orders]}")
        expected = Counter(quote.expected)
        for order in orders:
            got = order_lines(order)
            if got != expected:
                row.lines_differ += 1
                extra = sum((got - expected).values())
                missing = sum((expected - got).values())
                example("lines_differ", f"{quote.doc_no} order {order['ORNO']}: {sum(got.values())} lines for "
                        f"{sum(expected.values())} (+{extra} -{missing})")  # fmt: skip
        if not status:
            row.no_outcome += 1
            example("no_outcome", f"{quote.doc_no} ({len(quote.lines)} lines, orders {[o['ORNO'] for o in orders]})")
        failed_results = [r for r in results if r.outcome == "failed"]
        false_failure = bool(orders) and (status.startswith("M3 failed") or bool(failed_results))
        if false_failure:
            row.false_failures += 1
            why = status if status.startswith("M3 failed") else failed_results[0].problems[:1]
            example("false_failures", f"{quote.doc_no}: {str(why)[:120]}")
        if quote.must_hold:
            row.must_hold += 1
            held = status.startswith("M3 held") and all(item in status for item in quote.bad_items)
            if held and not orders:
                row.held_ok += 1
            elif status:
                row.wrong_outcome += 1
                example("wrong_outcome", f"{quote.doc_no} must be held for {quote.bad_items}: {status[:100]!r}, "
                        f"orders {[o['ORNO'] for o in orders]}")  # fmt: skip
        elif status and not orders:
            row.wrong_outcome += 1
            example("wrong_outcome", f"{quote.doc_no} orderable, no order: {status[:120]!r}")
        elif orders and status and not false_failure and number not in {str(o["ORNO"]) for o in orders}:
            row.wrong_outcome += 1
            numbers = [o["ORNO"] for o in orders]
            example("wrong_outcome", f"{quote.doc_no}: quote says order {number!r}, M3 has {numbers}")
    # Customers: a new customer created more than once, or an existing one created again.
    emails = {str(c["MAIL"]).casefold(): c["CUNO"] for c in truth.customers if c["CUNO"] in baseline_customers}
    names = {str(c["CUNM"]).casefold(): c["CUNO"] for c in truth.customers if c["CUNO"] in baseline_customers}
    ours = {quote.new_customer_email for quote in quotes if quote.customer is None}
    created = [c for c in truth.customers if c["CUNO"] not in baseline_customers]
    groups: dict[str, list[str]] = defaultdict(list)
    for customer in created:
        email, name = str(customer["MAIL"]).casefold(), str(customer["CUNM"]).casefold()
        if email in emails or (not email and name in names):
            row.dup_customers += 1
            example("dup_customers", f"{customer['CUNO']} duplicates existing {emails.get(email) or names.get(name)}")
            continue
        groups[email or f"name:{name}"].append(str(customer["CUNO"]))
    for identity, numbers in groups.items():
        if len(numbers) > 1:
            row.dup_customers += len(numbers) - 1
            example("dup_customers", f"{identity}: {numbers}")
        if identity not in ours:
            row.notes.append(f"customer {numbers} ({identity}) created for no quote of this run")
    # Batch orders nobody will confirm any more.
    row.orphan_batches = len(truth.batch_orders)
    for batch in truth.batch_orders[:6]:
        text = f"{batch['ORNO']} CUOR {batch['CUOR']} status {batch['STATUS']!r} {batch['LINES']} lines"
        example("orphan_batches", text)
    # Dead letters, and the poison that never became one.
    letters: Counter[str] = Counter()
    lettered_keys = set()
    for letter in truth.dead_letters:
        letters[f"{letter.service}:{letter.error_class}"] += 1
        if letter.original_key:
            lettered_keys.add(letter.original_key)
    row.dead_letters = dict(sorted(letters.items()))
    lost = sorted(poison_keys - lettered_keys)
    row.poison_lost = len(lost)
    for key in lost[:6]:
        example("poison_lost", key)
    row.examples = dict(examples)
    return row
