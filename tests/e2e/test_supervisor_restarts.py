"""`make run`'s supervisor with real child processes (tiny Python ones, no broker): a child that crashes, or that
someone kills, is started again with the same command and environment, and `stop()` ends every child without
starting any again, even one in the middle of its crash loop. The policy alone: tests/unit/test_supervisor_restarts.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from m3bridge.restarts import RestartPolicy
from m3bridge.supervisor import Child, Supervisor
from m3bridge.tansu import port_open
from simulators.processes import alive, wait_ready
from simulators.stack import start_local_run as start_stack, started
from tests.e2e.test_make_run import assert_all_gone, assert_all_ready

# Each start prints the port it was given, so that the output shows every start had the same environment.
UP = "import os; print('up on', os.environ['M3B_HTTP_PORT'], flush=True); "
CRASHES = UP + "import sys; print('Traceback: boom', flush=True); sys.exit(86)"
RUNS = UP + "import time; time.sleep(300)"


async def until(what: str, check: Callable[[], object], lines: list[str], timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n" + "\n".join(lines[-40:]))
        await asyncio.sleep(0.02)


async def test_a_crashed_child_is_started_again_and_stop_restarts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    supervisor = Supervisor(argparse.Namespace(color="never", state_dir=str(tmp_path), grace=5.0))
    supervisor.restart_policy = RestartPolicy(first_s=0.05, longest_s=0.4)
    lines: list[str] = []
    monkeypatch.setattr(supervisor, "say", lambda name, line, index=-1: lines.append(f"{name} | {line}"))
    crashing = Child("order-writer", [sys.executable, "-c", CRASHES], {**os.environ, "M3B_HTTP_PORT": "18104"})
    steady = Child("token-service", [sys.executable, "-c", RUNS], {**os.environ, "M3B_HTTP_PORT": "18101"})
    pids: dict[str, set[int]] = {"order-writer": set(), "token-service": set()}

    def seen() -> None:
        for child in (crashing, steady):
            if child.process is not None:
                pids[child.name].add(child.process.pid)

    try:
        for child in (crashing, steady):
            await supervisor.start(child)
            supervisor.keep_running(child)
        seen()

        def restarted_twice() -> bool:
            seen()
            return any("order-writer exited with code 86" in line and "(restart 2)" in line for line in lines)

        await until("order-writer restarted twice", restarted_twice, lines)
        assert len(pids["order-writer"]) >= 2
        assert lines.count("order-writer | up on 18104") >= 2
        # The crash's last lines come before the line saying it exited.
        first_exit = next(i for i, line in enumerate(lines) if "(restart 1)" in line)
        assert "order-writer | Traceback: boom" in lines[:first_exit]

        # A process that was running fine and is killed comes back too, with the same environment.
        assert steady.process is not None
        killed = steady.process.pid
        os.kill(killed, signal.SIGKILL)

        def steady_back() -> bool:
            seen()
            return (
                steady.process is not None
                and steady.process.pid != killed
                and lines.count("token-service | up on 18101") == 2
            )

        await until("token-service started again", steady_back, lines)
        assert any(line.startswith("supervisor | token-service was killed by SIGKILL after") for line in lines)

        # Stop in the middle of order-writer's crash loop: everything ends, and nothing is started again.
        said_before_stop, stopped_at = len(lines), time.monotonic()
        await asyncio.wait_for(supervisor.stop(), 30)
        assert time.monotonic() - stopped_at < 10
        seen()
        assert all(keeper.done() for keeper in supervisor._keepers)  # nothing left that could start a process
        assert all(c.process is not None and c.process.returncode is not None for c in (crashing, steady))
        leftovers = [pid for name in pids for pid in pids[name] if alive(pid)]
        assert leftovers == [], "\n".join(lines[-40:])
        after_stop = lines[said_before_stop:]
        assert not [line for line in after_stop if "restarting in" in line], "\n".join(after_stop)
        assert lines[-1] == "supervisor | all stopped"
    finally:
        for child in (crashing, steady):
            if child.process is not None and child.process.returncode is None:
                child.process.kill()
                await child.process.wait()


@pytest.mark.slow
def test_a_killed_service_of_a_whole_run_comes_back_on_its_port(tmp_path: Path) -> None:
    """`m3bridge run` itself: order-writer killed under it is started again, answers ready on the same port, and the
    run still stops clean (`make test-all`)."""
    stack = start_stack([sys.executable, "-m", "m3bridge.cli", "run", "--no-demo"], tmp_path)
    try:
        children = started(stack)
        pid, url = children["order-writer"]
        os.killpg(pid, signal.SIGKILL)
        stack.wait_for_line("| order-writer was killed by SIGKILL after", 30)
        stack.wait_for_line("restarting in 1 s (restart 1)", 5)
        wait_ready(url, 60)  # the same port: it was started with the same environment
        assert_all_ready(children, stack)
        stack.process.send_signal(signal.SIGTERM)
        stack.process.wait(60)
        assert "| all stopped" in stack.output
        assert stack.process.returncode == 0, stack.output[-3000:]
        assert_all_gone(stack, children)
        assert not port_open("127.0.0.1", int(url.rsplit(":", 1)[1])), "the restarted order-writer is still there"
    finally:
        stack.kill_all()
