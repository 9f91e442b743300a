"""What goes wrong during a chaos run, and when: a timeline of actions relative to the first approval.

- M3 faults through the ION simulator's admin API (`PUT /__admin/faults`): answers cut off after M3 processed the
  request (drop_rate), late 504s after processing (timeout_rate; the Gateway's wait alternates between shorter
  and longer than the services' M3 timeout, so both a 504 that arrives and a client that gives up first happen),
  plain 5xx (error_rate).
- SIGKILL of order-writer, quote-ingest and token-service at random moments, each started again at once.
- A 429 storm (the Gateway policy lowered for 10 s) and every token expired.
- Poison: malformed and oversized messages produced straight onto the quote topic.
- Zombies: an order-writer replica frozen (SIGSTOP) past the consumer session timeout, then resumed (SIGCONT).
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer

from shared.contracts.topics import QUOTE_APPROVED
from tests.chaos.stack import M3_TIMEOUT_S, THROTTLE_MAX_REQUESTS, THROTTLE_PERIOD_MS, ChaosStack

#: Scenario (a): 15 % dropped mid-answer, 5 % late 504, 5 % 5xx.
M3_FAULTS = {"drop_rate": 0.15, "timeout_rate": 0.05, "error_rate": 0.05}
#: The late 504 comes before the client's timeout (the answer arrives) or after it (the client gives up first).
LATE_504_S = (M3_TIMEOUT_S / 2, M3_TIMEOUT_S * 1.5)
FAULT_FLIP_S = 8.0
STORM_S = 10.0
STORM_POLICY = {"time_period_ms": 1000, "max_requests_per_period": 3}
NORMAL_POLICY = {"time_period_ms": THROTTLE_PERIOD_MS, "max_requests_per_period": THROTTLE_MAX_REQUESTS}
POISON_KINDS = ("not-utf8", "not-json", "json-array", "missing-fields", "wrong-types", "oversized")


def poison_payload(kind: str, key: str) -> bytes:
    if kind == "not-utf8":
        return b"\xff\xfe\x00\x9c binary \xc3\x28 garbage"
    if kind == "not-json":
        return b'{"doc_no": "' + key.encode() + b'", this is not json'
    if kind == "json-array":
        return b"[1, 2, 3]"
    if kind == "missing-fields":
        return json.dumps({"doc_no": key, "approval_event": "chaos"}).encode()
    if kind == "wrong-types":
        return json.dumps({"doc_no": key, "revision": "seven", "lines": "many", "approved_at": 12}).encode()
    if kind == "oversized":  # ~900 KB: far over every field limit, still under the broker's message limit
        line = {"line_type": 1, "manufacturer_part_number": "ITM000001", "qty_total": "1", "unit_price": "1",
                "description": "X" * 90_000}  # fmt: skip
        return json.dumps({
            "doc_no": key, "approved_at": "2026-01-01T00:00:00Z", "approval_event": "chaos", "lines": [line] * 10,
        }).encode()  # fmt: skip
    raise ValueError(kind)


@dataclass
class Action:
    at_s: float  # seconds after the first approval
    label: str
    run: Callable[[], Awaitable[None]]
    lane: str = "gateway"  # actions of one lane run one after the other; lanes run side by side


@dataclass
class Chaos:
    """The actions of one scenario and what happened when they ran."""

    stack: ChaosStack
    http: httpx.AsyncClient
    rng: random.Random
    actions: list[Action] = field(default_factory=list)
    log: list[tuple[float, str]] = field(default_factory=list)
    poison_sent: dict[str, str] = field(default_factory=dict)  # key -> kind (accepted by the broker)
    poison_refused: dict[str, str] = field(default_factory=dict)  # key -> why the broker refused it
    _producer: AIOKafkaProducer | None = None

    # --- building blocks ---------------------------------------------------------------------------------------
    async def ion(self, method: str, path: str, body: Any = None) -> None:
        response = await self.http.request(method, f"{self.stack.ion_url}/__admin/{path}", json=body, timeout=10)
        response.raise_for_status()

    def add(self, at_s: float, label: str, run: Callable[[], Awaitable[None]], lane: str = "gateway") -> None:
        self.actions.append(Action(at_s, label, run, lane))

    def m3_faults(self, window_s: float, late_504: str = "both") -> None:
        """The faults of scenario (a) from the start. `late_504`: "arrives" (the Gateway's 504 comes before the
        client's timeout), "client-timeout" (after it) or "both" (flipping every FAULT_FLIP_S)."""
        choices = {"arrives": LATE_504_S[:1], "client-timeout": LATE_504_S[1:], "both": LATE_504_S}[late_504]
        flips = max(2, int(window_s / FAULT_FLIP_S) + 1) if len(choices) > 1 else 1
        for n in range(flips):
            late = choices[n % len(choices)]
            profile = {**M3_FAULTS, "gateway_timeout_s": late}
            self.add(n * FAULT_FLIP_S, f"faults {M3_FAULTS} late-504 {late:.1f}s", self._put_faults(profile))

    def _put_faults(self, profile: dict[str, Any]) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            await self.ion("PUT", "faults", profile)

        return run

    async def clear_faults(self) -> None:
        await self.ion("PUT", "faults", {})
        await self.ion("PUT", "throttle", NORMAL_POLICY)

    def kills(self, window_s: float, services: dict[str, int], max_down_s: float = 0.0) -> None:
        """`services`: name -> how many SIGKILLs, each at a random moment of the window; each process stays down
        for a random 0.5-1 x `max_down_s` (a crash-looping pod's restart backoff; with the start-up time quote-ingest
        is then unreachable for longer than QuoteWerks retries a webhook), then is started again."""
        for name, times in services.items():
            for _ in range(times):
                down = self.rng.uniform(0.5, 1.0) * max_down_s
                label = f"SIGKILL {name}, down {down:.1f}s + restart"
                self.add(self.rng.uniform(0.1, 0.9) * window_s, label, self.restart_action(name, down), lane=name)

    def restart_action(self, name: str, down_s: float = 0.0) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            await asyncio.to_thread(self.stack.kill, name)
            if down_s > 0:
                await asyncio.sleep(down_s)  # the outage itself (part of the fault), not a synchronisation
            await asyncio.to_thread(self.stack.start_again, name)

        return run

    def freezes(self, window_s: float, replicas: list[str], times: int, frozen_s: float) -> None:
        """`times` freezes (SIGSTOP, then SIGCONT after `frozen_s`, longer than the consumer session timeout) of a
        random order-writer replica at random moments: the group gives its partitions to the others while it is
        frozen mid-quote, then it wakes up as a zombie that still thinks it owns them."""
        for _ in range(times):
            name = self.rng.choice(replicas)
            at = self.rng.uniform(0.1, 0.8) * window_s
            self.add(at, f"SIGSTOP {name} for {frozen_s:.0f}s, then SIGCONT", self._freeze(name, frozen_s), lane=name)

    def _freeze(self, name: str, frozen_s: float) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            self.stack.signal(name, signal.SIGSTOP)
            try:
                await asyncio.sleep(frozen_s)  # the freeze itself (part of the fault), not a synchronisation
            finally:
                self.stack.signal(name, signal.SIGCONT)

        return run

    def storm_and_expiry(self, window_s: float) -> None:
        async def lower() -> None:
            await self.ion("PUT", "throttle", STORM_POLICY)

        async def restore() -> None:
            await self.ion("PUT", "throttle", NORMAL_POLICY)

        async def expire() -> None:
            await self.ion("POST", "tokens/expire")

        start = 0.3 * window_s
        self.add(start, f"429 storm: policy {STORM_POLICY} for {STORM_S:.0f}s", lower)
        self.add(start + STORM_S, f"policy back to {NORMAL_POLICY}", restore)
        self.add(0.6 * window_s, "all tokens expired", expire)

    def poison(self, window_s: float, count: int) -> None:
        for n in range(count):
            kind = POISON_KINDS[n % len(POISON_KINDS)]
            key = f"POISON-{n + 1:03d}"
            self.add((n + 0.5) / count * window_s, f"poison {kind} {key}", self._produce(kind, key), lane="poison")

    def _produce(self, kind: str, key: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            if self._producer is None:
                self._producer = AIOKafkaProducer(
                    bootstrap_servers=self.stack.bootstrap, max_request_size=4 * 1024 * 1024, acks="all"
                )
                await self._producer.start()
            try:
                await self._producer.send_and_wait(QUOTE_APPROVED.name, poison_payload(kind, key), key=key.encode())
            except Exception as exc:  # the broker refusing a message is an observation, not a crash
                self.poison_refused[key] = f"{kind}: {type(exc).__name__}: {exc}"
            else:
                self.poison_sent[key] = kind

        return run

    # --- running -----------------------------------------------------------------------------------------------
    async def play(self, started: float) -> None:
        """Run the actions, each at its moment after `started` (time.monotonic()); within a lane (the Gateway,
        one process, the poison) in time order, an action starting late when the one before it took longer (a
        restart takes seconds)."""
        lanes = sorted({action.lane for action in self.actions})
        await asyncio.gather(*(self._play_lane(started, lane) for lane in lanes))
        self.log.sort()

    async def _play_lane(self, started: float, lane: str) -> None:
        for action in sorted((a for a in self.actions if a.lane == lane), key=lambda a: a.at_s):
            delay = started + action.at_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # waiting for the moment of the action, not for a result
            began = time.monotonic()
            try:
                await action.run()
            except Exception as exc:
                self.log.append((began - started, f"{action.label} FAILED: {type(exc).__name__}: {exc}"))
                continue
            self.log.append((began - started, f"{action.label} ({time.monotonic() - began:.1f}s)"))

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
