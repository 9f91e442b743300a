"""The catalog's timers: the full load at first start and on the schedule, and the change poll."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from shared.contracts import CatalogSyncReport

log = logging.getLogger(__name__)


class Runs(Protocol):
    """What the timers start: `sync.CatalogSync`."""

    @property
    def full_load_running(self) -> bool: ...
    async def full_load(self) -> CatalogSyncReport: ...
    async def reconcile(self, *, dry_run: bool = False) -> CatalogSyncReport: ...
    async def poll_changes(self) -> CatalogSyncReport: ...


async def full_loads(sync: Runs, *, first: bool, interval_s: float) -> None:
    """A full load at once when `first`, then one every `interval_s` (0 = none); a failed one is logged and the
    schedule goes on. Started once the broker is (`ServiceRuntime.after_broker_start`): a run publishes its report."""
    if first:
        try:
            await sync.full_load()
        except Exception:
            log.exception("first full load failed")
    while interval_s > 0:
        await asyncio.sleep(interval_s)
        try:
            await sync.full_load()
        except Exception:
            log.exception("scheduled full load failed")


async def polls(sync: Runs, *, interval_s: float) -> None:
    """A change poll every `interval_s`, skipped while a full load runs (it reads everything anyway)."""
    while True:
        await asyncio.sleep(interval_s)
        if sync.full_load_running:
            continue
        try:
            await sync.poll_changes()
        except Exception:
            log.exception("change poll failed")


async def reconciles(sync: Runs, *, interval_s: float) -> None:
    """The catalog compared with what QuoteWerks holds, and repaired, every `interval_s` (the first one interval
    after start: a start's own full load has just pushed everything)."""
    while interval_s > 0:
        await asyncio.sleep(interval_s)
        try:
            await sync.reconcile()
        except Exception:
            log.exception("scheduled catalog reconciliation failed")
