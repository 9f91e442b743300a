"""What each subscriber of a service is doing: the messages it is on, since when, at which attempt; which are
stalled (/healthz `consumers`, the `m3bridge_consumer_busy_seconds` gauge behind ConsumerStalled)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.platform.metrics import consumer_busy_seconds


@dataclass
class Progress:
    """What one subscriber is doing, for /healthz and the busy gauge: the messages it is on (several with lanes),
    since when and at which attempt."""

    subscriber: str
    topic: str
    clock: Callable[[], float] = time.monotonic
    active: dict[int, list[float]] = field(default_factory=dict)
    """Message token → [started, attempt]."""
    handled: int = 0
    retried: int = 0
    dead_lettered: int = 0
    last_finished: float | None = None
    _tokens: int = 0

    def begin(self) -> int:
        self._tokens += 1
        self.active[self._tokens] = [self.clock(), 0]
        return self._tokens

    def attempted(self, token: int, attempt: int) -> None:
        if token in self.active:
            self.active[token][1] = attempt

    def end(self, token: int) -> None:
        self.active.pop(token, None)
        self.handled += 1
        self.last_finished = self.clock()

    @property
    def started(self) -> float | None:
        """When the oldest message it is on arrived; None when idle."""
        return min((started for started, _ in self.active.values()), default=None)

    @property
    def attempt(self) -> int:
        """The highest attempt among the messages it is on; 0 when idle."""
        return int(max((attempt for _, attempt in self.active.values()), default=0))

    def busy_s(self) -> float:
        """Seconds on the oldest current message, retries included; 0 when idle."""
        started = self.started
        return 0.0 if started is None else max(0.0, self.clock() - started)

    def stalled(self, after_s: float) -> bool:
        """Not advancing: retrying a message, or on one for `after_s` or longer."""
        return self.started is not None and (self.attempt > 1 or self.busy_s() >= after_s)

    def snapshot(self) -> dict[str, Any]:
        since = None if self.last_finished is None else round(self.clock() - self.last_finished, 1)
        return {
            "topic": self.topic,
            "state": "idle" if self.started is None else ("retrying" if self.attempt > 1 else "handling"),
            "in_flight": len(self.active),
            "busy_s": round(self.busy_s(), 1),
            "attempt": self.attempt,
            "handled": self.handled,
            "retried": self.retried,
            "dead_lettered": self.dead_lettered,
            "last_finished_s_ago": since,
        }


class Consumers:
    """Every subscriber of one service: which ones are stalled, and the busy gauge."""

    def __init__(self, service: str, *, stall_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.service = service
        self.stall_after_s = stall_after_s
        self.clock = clock
        self.progress: dict[str, Progress] = {}

    def add(self, subscriber: str, topic: str) -> Progress:
        if subscriber in self.progress:
            raise ValueError(f"{self.service} declares subscriber {subscriber!r} twice")
        progress = Progress(subscriber, topic, clock=self.clock)
        self.progress[subscriber] = progress
        consumer_busy_seconds.labels(self.service, subscriber).set_function(progress.busy_s)
        return progress

    def stalled(self) -> list[str]:
        return sorted(name for name, p in self.progress.items() if p.stalled(self.stall_after_s))

    def describe(self) -> dict[str, Any]:
        return {
            "stalled": self.stalled(),
            "stall_after_s": self.stall_after_s,
            "subscribers": {name: p.snapshot() for name, p in sorted(self.progress.items())},
        }
