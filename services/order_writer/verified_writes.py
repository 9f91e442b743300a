"""How the order path calls M3: at transactional priority, and a write whose answer was lost verified, not re-sent."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from prometheus_client import Counter as MetricCounter

from shared.m3 import M3OutcomeUnknownError
from shared.m3.lease import Priority

PRIORITY = Priority.TRANSACTIONAL
#: How often one step sends a write again after M3 was read and had provably not done it.
WRITE_ROUNDS = 3

unknown_outcomes = MetricCounter(
    "m3bridge_m3_unknown_outcomes_total",
    "Writes to M3 whose answer was lost, by transaction and what reading M3 found (done, not_done; read_again: the "
    "lines are compared again).",
    ["transaction", "found"],
)

T = TypeVar("T")

Guard = Callable[[], Awaitable[None]]
"""Called right before each M3 write: raises (LeaseLostError) when this worker must not write any more."""


async def no_guard() -> None:
    return None


def text(record: Mapping[str, object] | None, name: str) -> str:
    return str((record or {}).get(name) or "").strip()


async def settle(settle_s: float) -> None:
    """A write whose answer was lost may still be running in M3: give it a moment before reading."""
    if settle_s > 0:
        await asyncio.sleep(settle_s)


async def write_verified(
    transaction: str,
    write: Callable[[], Awaitable[T]],
    done: Callable[[], Awaitable[T | None]],
    *,
    settle_s: float,
    guard: Guard = no_guard,
) -> T:
    """Run `write` (after `guard`); when its answer is lost, `done()` reads M3 for its effect, and only when there is
    none is the write sent again (at most WRITE_ROUNDS times, then the unknown outcome is raised for a later
    retry)."""
    last: M3OutcomeUnknownError | None = None
    for _round in range(WRITE_ROUNDS):
        try:
            await guard()
            return await write()
        except M3OutcomeUnknownError as lost:
            last = lost
            await settle(settle_s)
            found = await done()
            unknown_outcomes.labels(transaction, "done" if found is not None else "not_done").inc()
            if found is not None:
                return found
    assert last is not None
    raise last
