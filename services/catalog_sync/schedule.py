"""The catalog's timers: the full load at first start and on the schedule, and the change poll."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from fastapi import FastAPI

from shared.contracts import CatalogSyncReport

log = logging.getLogger(__name__)


class Runs(Protocol):
    """What the timers start: `sync.CatalogSync`."""

    @property
    def full_load_running(self) -> bool: ...
    async def full_load(self) -> CatalogSyncReport: ...
    async def poll_changes(self) -> CatalogSyncReport: ...


class AfterStart:
    """Awaitable from the start-up hooks: done once `app`'s lifespan has started, i.e. after `ServiceRuntime` ran
    its `on_startup` hooks and then started the broker (the runtime has no hook for after the broker start)."""

    def __init__(self, app: FastAPI) -> None:
        self._started = asyncio.Event()
        inner = app.router.lifespan_context

        @contextlib.asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
            self._started = asyncio.Event()  # one per start, in the loop that runs it
            async with inner(app) as state:
                self._started.set()
                yield state

        app.router.lifespan_context = lifespan

    async def wait(self) -> None:
        await self._started.wait()


async def full_loads(sync: Runs, *, first: bool, interval_s: float, started: Callable[[], Awaitable[object]]) -> None:
    """Once `started` is done (reports need the producer, and the broker starts after the start-up hooks): a full
    load at once when `first`, then one every `interval_s` (0 = none); a failed scheduled one is logged."""
    await started()
    if first:
        await sync.full_load()
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
