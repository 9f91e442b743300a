"""Liveness and readiness, with details a person on call can read.

`/healthz` answers whether the process is alive and says what it is doing (including parts not built yet);
`/readyz` is 200 only when every readiness check passes (broker connected, state store reachable, ...).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from shared.platform.metrics import health_check_ok, service_ready

ReadinessCheck = Callable[[], Awaitable[str | None]]
"""Returns None when healthy, or a short reason why not."""


@dataclass
class Health:
    service: str
    started_at: float = field(default_factory=time.time)
    checks: dict[str, ReadinessCheck] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    stopping: bool = False

    def add_check(self, name: str, check: ReadinessCheck) -> None:
        self.checks[name] = check

    def set_detail(self, key: str, value: Any) -> None:
        """`value` may be a callable, read each time /healthz is asked (for live figures)."""
        self.details[key] = value

    async def readiness(self, timeout_s: float = 2.0) -> tuple[bool, dict[str, str]]:
        results: dict[str, str] = {}
        for name, check in self.checks.items():
            try:
                problem = await asyncio.wait_for(check(), timeout_s)
            except TimeoutError:
                problem = f"check timed out after {timeout_s:g}s"
            except Exception as exc:  # a failing check is a reading, not a crash of the health endpoint
                problem = f"{type(exc).__name__}: {exc}"
            results[name] = "ok" if problem is None else problem
            health_check_ok.labels(self.service, name).set(1 if problem is None else 0)
        ready = not self.stopping and all(value == "ok" for value in results.values())
        if self.stopping:
            results["shutdown"] = "draining in-flight work"
        service_ready.labels(self.service).set(1 if ready else 0)
        return ready, results

    def liveness(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "status": "stopping" if self.stopping else "alive",
            "uptime_s": round(time.time() - self.started_at, 1),
            **{key: value() if callable(value) else value for key, value in self.details.items()},
        }
