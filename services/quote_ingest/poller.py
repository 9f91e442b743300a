"""The safety-net poll: approved quotes whose webhook never arrived (quote-ingest down, QuoteWerks gave up, a
wrong secret) are found in QuoteWerks and published through the same claim as a webhook delivery.

Webhooks stay the fast path; this runs every `M3B_POLL_INTERVAL_S`. Cheap by construction: it lists only
approved quotes changed since the last poll (minus an overlap against clock skew and late commits), checks
their claims in one query and fetches only the unclaimed ones in full. The `since` point is kept in the state
store, so a restart resumes where the last poll got to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncEngine

from services.quote_ingest.ingest import Ingest
from shared.platform.state import fingerprints

log = logging.getLogger(__name__)

SINCE_KIND = "quotewerks-poll"
SINCE_KEY = "approved-quotes"

polls_total = Counter("m3bridge_quote_polls_total", "Safety-net polls for approved quotes, by outcome.", ["outcome"])
poll_published_total = Counter(
    "m3bridge_quote_poll_published_total", "Approved quotes published by the poll (their webhook did not arrive)."
)


class Poller:
    def __init__(
        self,
        ingest: Ingest,
        engine: AsyncEngine,
        *,
        interval_s: float,
        overlap_s: float,
        first_lookback_s: float,
        webhooks: bool = True,
    ) -> None:
        self.ingest = ingest
        self.webhooks = webhooks
        self.engine = engine
        self.interval_s = interval_s
        self.overlap = timedelta(seconds=overlap_s)
        self.first_lookback = timedelta(seconds=first_lookback_s)
        self.polls = 0
        self.published = 0
        self.failures = 0
        self.last_error = ""
        self._stop = asyncio.Event()

    async def _stored(self) -> datetime | None:
        stored = await fingerprints.get(self.engine, SINCE_KIND, SINCE_KEY)
        if stored:
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(stored)
        return None

    async def poll_once(self) -> int:
        """One poll; returns how many approvals it published. It starts at the newest change seen by earlier
        polls (QuoteWerks' clock) minus the overlap; at the very first start, `first_lookback` before now. Raises
        what went wrong (nothing is skipped then: the next poll starts from the same point)."""
        stored = await self._stored()
        since = stored - self.overlap if stored is not None else datetime.now(UTC) - self.first_lookback
        if stored is None:
            # The first poll of this installation: say where it starts, so an older approval not ordered has a why.
            log.info("the first poll looks back to %s (M3B_POLL_FIRST_LOOKBACK_S): quotes approved before then are not "
                     "picked up by the poll; approve such a quote again to have it ordered",
                     since.isoformat(timespec="seconds"))  # fmt: skip
        published, newest = await self.ingest.poll(since)
        if newest is not None and (stored is None or newest > stored):
            await fingerprints.put(self.engine, SINCE_KIND, SINCE_KEY, newest.astimezone(UTC).isoformat())
        return published

    async def run(self) -> None:
        """Poll every interval until `stop()` (the first one an interval after start, when the broker is up); a
        failed poll is one log line, and the next one tries again from the same point."""
        while not await self._stopped_within(self.interval_s):
            self.polls += 1
            try:
                published = await self.poll_once()
            except Exception as exc:  # QuoteWerks, the broker or the state store away: try again next interval
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                polls_total.labels("failed").inc()
                log.warning("poll for approved quotes failed (next in %gs): %s", self.interval_s, self.last_error)
                continue
            polls_total.labels("ok").inc()
            poll_published_total.inc(published)
            self.last_error = ""
            self.published += published
            if published:
                why = " whose webhook did not arrive" if self.webhooks else ""
                log.info("poller published %d approved quotes%s", published, why)

    async def _stopped_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()

    def figures(self) -> dict[str, object]:
        return {
            "interval_s": self.interval_s,
            "polls": self.polls,
            "published": self.published,
            "failures": self.failures,
            "last_error": self.last_error,
        }
