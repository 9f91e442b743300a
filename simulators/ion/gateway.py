"""The ION API Gateway in front of the tenant's APIs: bearer check, throttling policy, latency and faults.

An ASGI middleware over everything under `/{tenant}/` except the authorization server (`/{tenant}/as/`).
In order: 401 `{"error":"Unauthorized"}` for a missing/unknown/expired/revoked token (else `request.state.user`
is the token's subject) → the tenant-wide throttling policy (429; `Retry-After` only when configured, since the
real Gateway documents none) → the rate-smoothing delay → added latency → injected faults → the API.
Everything runs on the event loop; throttling decisions are made before any await, so they are atomic.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from simulators.ion.auth import AuthServer
from simulators.ion.config import FaultProfile, IonSimConfig, LatencyProfile, ThrottlePolicy

#: How many accepted-request timestamps the stats keep (enough for long benchmarks at Gateway rates).
MAX_TIMESTAMPS = 200_000
MAX_WINDOWS = 10_000
LATE_LOOP_MS = 25.0
LOOP_PROBE_S = 0.01

_REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


class SimulatedConnectionDropError(ConnectionError):
    """Raised by the gateway after a partial response: the server closes the connection mid-response."""


@dataclass
class GatewayStats:
    started_at: float = field(default_factory=time.time)
    accepted: int = 0
    throttled: int = 0
    unauthorized: int = 0
    delayed: int = 0
    faults: Counter[str] = field(default_factory=Counter)  # "500", "502", "503", "504", "timeout", "drop"
    accepted_by_user: Counter[str] = field(default_factory=Counter)
    accepted_times: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_TIMESTAMPS))  # time.time()
    windows: deque[int] = field(default_factory=lambda: deque(maxlen=MAX_WINDOWS))  # accepted per closed period
    accepted_by_source: Counter[str] = field(default_factory=Counter)  # x-infor-ionapi-source → accepted requests
    in_flight_by_source: Counter[str] = field(default_factory=Counter)  # x-infor-ionapi-source → being answered
    most_in_flight_by_source: Counter[str] = field(default_factory=Counter)
    throttled_times: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_WINDOWS))  # time.time()
    # (time.time(), ms) whenever this process's event loop ran more than LATE_LOOP_MS late: a request that arrives
    # during such a stall is counted when the loop gets to it, possibly in a later period than it arrived in.
    late_loop: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=MAX_WINDOWS))

    def peak_in_period(self, period_s: float) -> int:
        """The most accepted requests in any sliding interval of `period_s` (from the kept timestamps)."""
        times = self.accepted_times
        best, lo = 0, 0
        for hi in range(len(times)):
            while times[hi] - times[lo] >= period_s:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    def snapshot(self, policy: ThrottlePolicy, *, include_times: bool = False) -> dict[str, Any]:
        period_s = policy.time_period_ms / 1000
        peak = self.peak_in_period(period_s)
        limit = policy.max_requests_per_period
        data: dict[str, Any] = {
            "started_at": self.started_at,
            "accepted": self.accepted,
            "throttled": self.throttled,
            "unauthorized": self.unauthorized,
            "delayed": self.delayed,
            "faults": dict(self.faults),
            "faults_total": sum(self.faults.values()),
            "accepted_by_user": dict(self.accepted_by_user),
            "accepted_by_source": dict(self.accepted_by_source),
            "most_in_flight_by_source": dict(self.most_in_flight_by_source),
            "period_ms": policy.time_period_ms,
            "max_requests_per_period": limit,
            "window": policy.window,
            # The most accepted in any interval shorter than one period (from accepted_times), whichever the window:
            # a fixed window lets it reach 2N-1 for a limit N (a burst at the end of one period and at the start of
            # the next), a sliding one keeps it within N.
            "peak_accepted_per_period": peak,
            "peak_share_of_limit": (peak / limit) if limit else None,
            # Accepted per ended period of a fixed window (the last 100); a sliding window never closes and adds none.
            "closed_windows": list(self.windows)[-100:],
        }
        if include_times:
            data["accepted_times"] = list(self.accepted_times)
            data["throttled_times"] = list(self.throttled_times)
            data["late_loop"] = [list(late) for late in self.late_loop]
        return data


class Throttle:
    """Shared (tenant-wide) state of the throttling policy.

    `fixed` window: `window_start`/`window_count`, a period starting at the first request after the previous one
    ended; each ended period's count goes to `closed` (the stats' `closed_windows`). `sliding` window: `recent`, the
    arrival times of the accepted requests in the last period (at most `max_requests_per_period` of them when spike
    arrest is windowed); nothing goes to `closed`, since a sliding window never closes.
    """

    def __init__(self, policy: ThrottlePolicy) -> None:
        self.policy = policy
        self.reset()

    def reset(self) -> None:
        self.window_start: float | None = None
        self.window_count = 0
        self.recent: deque[float] = deque()
        self.last_accepted: float | None = None

    def set_policy(self, policy: ThrottlePolicy) -> None:
        self.policy = policy
        self.reset()

    def _count_in_period(self, now: float, period: float, closed: deque[int]) -> int:
        """The accepted requests already in `now`'s period (fixed: rolling over to a new period first)."""
        if self.policy.window == "sliding":
            recent = self.recent
            while recent and now - recent[0] >= period:
                recent.popleft()
            return len(recent)
        if self.window_start is None or now - self.window_start >= period:
            if self.window_start is not None:
                closed.append(self.window_count)
            self.window_start, self.window_count = now, 0
        return self.window_count

    def admit(self, now: float, closed: deque[int]) -> tuple[bool, float]:
        """(accepted, delay in seconds) for a request arriving at `now` (seconds, monotonic).

        Synchronous, so the check and the count are atomic on the event loop. Rejected requests do not count against
        the period. The delay is the rate smoothing's: 0 up to `delay_after_count` accepted in the period, then
        `delay_factor_ms` (constant) or k * `delay_factor_ms` for the k-th request past the count (linear).
        """
        policy = self.policy
        if not policy.enabled:
            return True, 0.0
        period = policy.time_period_ms / 1000
        count = self._count_in_period(now, period, closed)
        limit = policy.max_requests_per_period
        if limit is not None:
            if policy.mode == "windowed":
                if count >= limit:
                    return False, 0.0
            elif self.last_accepted is not None and now - self.last_accepted < period / limit:
                return False, 0.0
        count += 1
        if policy.window == "sliding":
            self.recent.append(now)
        else:
            self.window_count = count
        self.last_accepted = now
        delay = 0.0
        if policy.delay_after_count is not None and count > policy.delay_after_count:
            past = count - policy.delay_after_count
            factor = policy.delay_factor_ms if policy.delay_growth == "constant" else past * policy.delay_factor_ms
            delay = factor / 1000
        return True, delay


async def _send_json(
    send: Send, status: int, body: dict[str, Any], extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    headers.extend(extra or [])
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


class Gateway:
    """Policies and counters of the Gateway; `IonGatewayMiddleware` applies them to requests."""

    def __init__(self, config: IonSimConfig, auth: AuthServer) -> None:
        self.config = config
        self.auth = auth
        self.tenant = config.tenant
        self.throttle = Throttle(config.throttle)
        self.latency: LatencyProfile = config.latency
        self.faults: FaultProfile = config.faults
        self.retry_after_s: float | None = config.retry_after_s
        self.rng = random.Random(config.seed)  # noqa: S311 - fault injection, not cryptography
        self.stats = GatewayStats()
        self._loop_probe: asyncio.Task[None] | None = None

    async def _probe_loop(self) -> None:
        """Record when this event loop runs late (stats `late_loop`)."""
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(LOOP_PROBE_S)
            late_ms = (loop.time() - before - LOOP_PROBE_S) * 1000
            if late_ms > LATE_LOOP_MS:
                self.stats.late_loop.append((time.time(), round(late_ms, 1)))

    def set_throttle(self, policy: ThrottlePolicy) -> None:
        self.throttle.set_policy(policy)

    def reset_stats(self) -> None:
        self.stats = GatewayStats()

    def snapshot(self, *, include_times: bool = False) -> dict[str, Any]:
        data = self.stats.snapshot(self.throttle.policy, include_times=include_times)
        data["throttle"] = self.throttle.policy.model_dump()
        data["latency"] = self.latency.model_dump()
        data["faults_profile"] = self.faults.model_dump()
        data["retry_after_s"] = self.retry_after_s
        return data

    def covers(self, path: str) -> bool:
        return path.startswith(f"/{self.tenant}/") and not path.startswith(f"/{self.tenant}/as/")

    def bearer_subject(self, scope: Scope) -> str | None:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                text = value.decode("latin-1")
                if text[:7].lower() != "bearer ":
                    return None
                record = self.auth.validate(text[7:].strip())
                return None if record is None else record.subject
        return None

    def _draw_status(self) -> int:
        weights = self.faults.status_weights
        statuses = list(weights)
        return self.rng.choices(statuses, weights=[weights[s] for s in statuses])[0]

    async def handle(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        if self.config.probe_loop and self._loop_probe is None:
            self._loop_probe = asyncio.create_task(self._probe_loop(), name="loop-probe")
        stats = self.stats
        subject = self.bearer_subject(scope)
        if subject is None:
            stats.unauthorized += 1
            await _send_json(send, 401, {"error": "Unauthorized"}, [(b"www-authenticate", b"Bearer")])
            return
        accepted, delay = self.throttle.admit(time.monotonic(), stats.windows)
        if not accepted:
            stats.throttled += 1
            stats.throttled_times.append(time.time())
            extra: list[tuple[bytes, bytes]] = []
            if self.retry_after_s is not None:
                extra.append((b"retry-after", str(math.ceil(self.retry_after_s)).encode()))
            await _send_json(send, 429, {"error": "Too Many Requests"}, extra)
            return
        stats.accepted += 1
        stats.accepted_by_user[subject] += 1
        stats.accepted_times.append(time.time())
        scope.setdefault("state", {})["user"] = subject
        source = _header(scope, b"x-infor-ionapi-source") or "-"
        stats.accepted_by_source[source] += 1
        stats.in_flight_by_source[source] += 1
        stats.most_in_flight_by_source[source] = max(
            stats.most_in_flight_by_source[source], stats.in_flight_by_source[source]
        )
        try:
            await self._answer(app, scope, receive, send, delay)
        finally:
            stats.in_flight_by_source[source] -= 1

    async def _answer(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send, delay: float) -> None:
        """An accepted request: the smoothing delay, the latency, any injected fault, then the API."""
        stats = self.stats
        if delay > 0:
            stats.delayed += 1
            await asyncio.sleep(delay)
        latency = self.latency.base_ms + (self.rng.uniform(0, self.latency.jitter_ms) if self.latency.jitter_ms else 0)
        if latency > 0:
            await asyncio.sleep(latency / 1000)

        faults = self.faults
        if faults.timeout_rate and self.rng.random() < faults.timeout_rate:
            stats.faults["timeout"] += 1

            async def discard(message: Message) -> None:
                return None

            await app(scope, receive, discard)  # the target processes the request, but too late
            await asyncio.sleep(faults.gateway_timeout_s)
            await _send_json(send, 504, {"error": _REASONS[504]})
            return
        if faults.error_rate and self.rng.random() < faults.error_rate:
            status = self._draw_status()
            stats.faults[str(status)] += 1
            await _send_json(send, status, {"error": _REASONS.get(status, "Server Error")})
            return
        if faults.drop_rate and self.rng.random() < faults.drop_rate:
            stats.faults["drop"] += 1
            await self._dropping(app, scope, receive, send)
            return
        await app(scope, receive, send)

    async def _dropping(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the API (its effects happen), send the headers and half the body, then cut the connection."""
        start: Message | None = None
        body = b""

        async def capture(message: Message) -> None:
            nonlocal start, body
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                body += message.get("body", b"")

        await app(scope, receive, capture)
        if start is not None:
            await send(start)
            await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
        raise SimulatedConnectionDropError("simulated: connection dropped mid-response")


class IonGatewayMiddleware:
    """ASGI middleware applying a `Gateway` to the tenant's API paths."""

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.gateway.covers(scope["path"]):
            await self.app(scope, receive, send)
            return
        await self.gateway.handle(self.app, scope, receive, send)
