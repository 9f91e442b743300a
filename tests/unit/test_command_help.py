"""Every command an operator or developer runs answers `--help` with its usage (argparse %-formats help texts: a
stray "%" in one crashes the help instead of printing it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = {
    "m3bridge": ["-m", "m3bridge.cli"],
    "m3bridge serve": ["-m", "m3bridge.cli", "serve"],
    "m3bridge run": ["-m", "m3bridge.cli", "run"],
    "m3bridge dead-letters": ["-m", "m3bridge.cli", "dead-letters"],
    "m3bridge dry-run": ["-m", "m3bridge.cli", "dry-run"],
    "make chaos": ["-m", "tests.chaos"],
    "make fuzz": ["-m", "tests.fuzz"],
    "ION simulator": ["-m", "simulators.ion"],
    "QuoteWerks simulator": ["-m", "simulators.quotewerks"],
}


@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS.keys())
def test_help_prints_usage(command: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, *command, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage:"), done.stdout[:500]
    assert "Traceback" not in done.stderr
