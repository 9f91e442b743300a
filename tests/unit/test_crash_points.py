"""Named crash points: parsed strictly, passed exactly where the code says, and when armed they end the process
at once (as SIGKILL would) or stall there for good."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shared.platform import crash_points
from shared.platform.crash_points import CRASH_EXIT_CODE, POINTS, Armed, CrashPointError, crash_point, parse

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_a_spec_names_points_actions_and_passes() -> None:
    assert parse("") == {}
    assert parse("order-writer.after-confirm, outbox.after-publish:stall@3") == {
        "order-writer.after-confirm": Armed("exit", 1),
        "outbox.after-publish": Armed("stall", 3),
    }


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("order-writer.after-lunch", "unknown crash point"),
        ("order-writer.after-confirm:explode", "neither 'exit' nor 'stall'"),
        ("order-writer.after-confirm@x", "not a pass number"),
        ("order-writer.after-confirm@0", "start at 1"),
    ],
)
def test_a_wrong_spec_is_refused_saying_what_is_wrong(spec: str, says: str) -> None:
    with pytest.raises(CrashPointError, match=says):
        parse(spec)


def test_the_code_passes_exactly_the_named_points() -> None:
    passed: set[str] = set()
    for folder in ("shared", "services"):
        for path in (ROOT / folder).rglob("*.py"):
            passed |= set(re.findall(r'crash_point\("([a-z0-9.-]+)"\)', path.read_text(encoding="utf-8")))
    assert passed == set(POINTS)


async def test_an_unarmed_point_does_nothing_and_a_stall_never_returns() -> None:
    crash_points.arm("")
    await crash_point("order-writer.after-confirm")
    crash_points.arm("order-writer.after-confirm:stall@2")
    try:
        await crash_point("order-writer.after-confirm")  # the first pass goes by
        stalled = asyncio.create_task(crash_point("order-writer.after-confirm"))
        done, _ = await asyncio.wait([stalled], timeout=0.3)
        assert not done, "the second pass stalls"
        stalled.cancel()
    finally:
        crash_points.arm("")


def test_an_armed_exit_ends_the_process_at_once_with_its_code() -> None:
    program = (
        "import asyncio, atexit\n"
        "from shared.platform import crash_points\n"
        "atexit.register(lambda: print('atexit ran'))\n"
        "crash_points.arm('quote-ingest.after-claim')\n"
        "asyncio.run(crash_points.crash_point('quote-ingest.after-claim'))\n"
        "print('after the point')\n"
    )
    done = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip
    assert done.returncode == CRASH_EXIT_CODE, done.stderr
    assert "crash point quote-ingest.after-claim: exiting now" in done.stderr
    assert "after the point" not in done.stdout
    assert "atexit ran" not in done.stdout, "no clean-up runs, as after SIGKILL"
