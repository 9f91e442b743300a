"""Driving real processes: start, wait for a line or a URL, stop with a signal, prove nothing is left."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx


class Captured:
    """A child process whose merged output is collected line by line in the background."""

    def __init__(self, command: list[str], *, env: dict[str, str], cwd: Path) -> None:
        self.lines: list[str] = []
        # The commands are this repository's own processes (simulators, services), built by the harness.
        self.process = subprocess.Popen(  # noqa: S603
            command,
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, text: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.process.poll() is not None:
                raise AssertionError(f"exited with {self.process.returncode} before {text!r}:\n{self.output[-5000:]}")
            time.sleep(0.1)
        raise AssertionError(f"no {text!r} within {timeout_s:.0f}s:\n{self.output[-5000:]}")

    def signal_group(self, signum: int) -> None:
        os.killpg(self.process.pid, signum)

    def kill_all(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def wait_until(
    what: str, check: Callable[[], Any], timeout_s: float = 60, *, dump: Callable[[], str] = lambda: ""
) -> Any:
    """The first truthy value of `check()`, polled every 0.2 s; fails naming `what` (and `dump()`: logs, state)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n{dump()}")


def wait_ready(url: str, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{url}/readyz", timeout=2)
            if response.status_code == 200:
                return response.json()
            last = response.text
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready within {timeout_s:.0f}s: {last}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent has not collected it yet.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ", 1)[1][0] != "Z"
