"""The processes of a local run: started with their output prefixed and coloured, restarted when they crash, stopped
with a signal and a grace time, waited for until they answer ready."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import signal
import time
from dataclasses import dataclass, field

import httpx

from m3bridge import restarts

COLOURS = ("\033[36m", "\033[35m", "\033[33m", "\033[32m", "\033[34m", "\033[91m", "\033[96m", "\033[95m")
RESET = "\033[0m"
PR_SET_PDEATHSIG = 1
#: In the state directory: this run's keys and secrets (JSON, mode 0600).


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel sends SIGTERM to it when the supervisor goes away."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    command: list[str]
    env: dict[str, str]
    port: int | None = None
    ready_path: str = "/readyz"
    process: asyncio.subprocess.Process | None = None
    tail: list[str] = field(default_factory=list)
    index: int = 0  # picks its colour, the same across restarts
    started_s: float = 0.0  # on time.monotonic(), of the running process
    pump: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Children:
    """Every process of the run, in the order they were started (`children`); `stopping` ends restarts."""

    def __init__(self, *, colour: bool, width: int) -> None:
        self.colour = colour
        self.width = width
        self.children: list[Child] = []
        self._pumps: set[asyncio.Task[None]] = set()
        self._keepers: list[asyncio.Task[None]] = []
        self.restart_policy = restarts.RestartPolicy()
        self.stopping = asyncio.Event()

    # --- output --------------------------------------------------------------------------------------

    def say(self, name: str, line: str, index: int = -1) -> None:
        prefix = f"{name:<{self.width}} |"
        if self.colour:
            colour = COLOURS[index % len(COLOURS)] if index >= 0 else "\033[1m"
            prefix = f"{colour}{prefix}{RESET}"
        print(f"{prefix} {line}", flush=True)

    async def _pump(self, child: Child, index: int) -> None:
        assert child.process is not None
        assert child.process.stdout is not None
        async for raw in child.process.stdout:
            line = raw.decode(errors="replace").rstrip()
            child.tail = [*child.tail[-19:], line]
            self.say(child.name, line, index)

    # --- processes -----------------------------------------------------------------------------------

    async def _spawn(self, child: Child, index: int) -> None:
        child.index, child.started_s = index, time.monotonic()
        child.process = await asyncio.create_subprocess_exec(
            *child.command,
            env=child.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        pump = asyncio.create_task(self._pump(child, index), name=f"pump-{child.name}")
        self._pumps.add(pump)
        pump.add_done_callback(self._pumps.discard)
        child.pump = pump

    async def start(self, child: Child) -> None:
        self.children.append(child)
        await self._spawn(child, len(self.children))

    def keep_running(self, child: Child) -> None:
        """From now on `child` is started again whenever it exits, until the run stops."""

        async def ended() -> int:
            assert child.process is not None
            code = await child.process.wait()
            if child.pump is not None:
                # Its last lines (a traceback, usually) come before the line saying it exited.
                await asyncio.wait({child.pump}, timeout=1)
            return code

        keeper = restarts.keep_running(
            child.name,
            ended=ended,
            restart=functools.partial(self._spawn, child, child.index),
            started_s=child.started_s,
            stopping=self.stopping,
            say=functools.partial(self.say, "supervisor"),
            policy=self.restart_policy,
        )
        self._keepers.append(asyncio.create_task(keeper, name=f"keep-{child.name}"))

    async def stop(self) -> None:
        """Stops every child; nothing is restarted from the moment this is called."""
        self.stopping.set()
        # Each keeper returns as soon as stopping is set, but never halfway through a start: once they are all done,
        # every process there is is in self.children, and none comes after.
        await asyncio.gather(*self._keepers, return_exceptions=True)
        await self._stop_all()

    async def _stop_all(self) -> None:
        for child in reversed(self.children):
            await self._stop(child, 10)

    async def _stop(self, child: Child, grace_s: float) -> None:
        process = child.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace_s)
        except TimeoutError:
            self.say("supervisor", f"{child.name} did not stop within {grace_s:.0f}s: killing it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    async def _wait_ready(self, child: Child, client: httpx.AsyncClient, deadline: float, timeout_s: float) -> None:
        assert child.process is not None
        while time.monotonic() < deadline:
            if child.process.returncode is not None:
                raise RuntimeError(f"{child.name} exited with code {child.process.returncode} while starting")
            with contextlib.suppress(httpx.HTTPError):
                response = await client.get(f"{child.url}{child.ready_path}", timeout=2)
                if response.status_code == 200:
                    return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"{child.name} was not ready within {timeout_s:.0f}s")
