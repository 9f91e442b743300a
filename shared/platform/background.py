"""Work a service runs as long as it does (a poller, a relay, a schedule): started as tasks, asked to end at shutdown
within the grace time, cancelled after it; a failure logged when it happens."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from shared.platform.settings import BridgeSettings

log = logging.getLogger("shared.platform.runtime")


class Background:
    """Part of `ServiceRuntime`: its background tasks, each with how to ask it to end."""

    settings: BridgeSettings
    _background: dict[asyncio.Task[object], Callable[[], None] | None]

    def in_background(
        self, work: Coroutine[Any, Any, object], *, name: str, stop: Callable[[], None] | None = None
    ) -> asyncio.Task[object]:
        """Run `work` as long as the service does. At shutdown, once the consumers have drained and before the
        shutdown hooks, it is asked to end with `stop()` and given M3B_SHUTDOWN_GRACE_S, or cancelled when it has
        no `stop` (or does not end in time). A failure is logged when it happens, not kept for the shutdown."""
        task = asyncio.create_task(work, name=name)
        self._background[task] = stop
        task.add_done_callback(self._background_done)
        return task

    def _background_done(self, task: asyncio.Task[object]) -> None:
        self._background.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("background work %s failed", task.get_name(), exc_info=task.exception())

    async def _stop_background(self) -> None:
        running = dict(self._background)
        for stop in running.values():
            if stop is not None:
                stop()
        graceful = [task for task, stop in running.items() if stop is not None]
        if graceful:
            await asyncio.wait(graceful, timeout=self.settings.shutdown_grace_s)
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(list(running), timeout=self.settings.shutdown_grace_s)
