"""Every command an operator or developer runs answers `--help` with its usage (argparse %-formats help texts: a
stray "%" in one crashes the help instead of printing it). Each parser is built in this process, as its entry point
builds it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bench.month_end import main as month_end_main
from m3bridge.cli import main as m3bridge_main
from simulators.ion.__main__ import main as ion_simulator_main
from simulators.quotewerks.__main__ import main as quotewerks_simulator_main
from tests.chaos.__main__ import main as chaos_main
from tests.fuzz.__main__ import main as fuzz_main

pytestmark = pytest.mark.unit

COMMANDS: dict[str, tuple[Callable[[list[str]], Any], list[str]]] = {
    "m3bridge": (m3bridge_main, []),
    "m3bridge serve": (m3bridge_main, ["serve"]),
    "m3bridge run": (m3bridge_main, ["run"]),
    "m3bridge dead-letters": (m3bridge_main, ["dead-letters"]),
    "m3bridge dry-run": (m3bridge_main, ["dry-run"]),
    "make chaos": (chaos_main, []),
    "make fuzz": (fuzz_main, []),
    "python -m bench month-end": (month_end_main, []),
    "ION simulator": (ion_simulator_main, []),
    "QuoteWerks simulator": (quotewerks_simulator_main, []),
}


@pytest.mark.parametrize(("main", "arguments"), COMMANDS.values(), ids=COMMANDS.keys())
def test_help_prints_usage(
    main: Callable[[list[str]], Any], arguments: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*arguments, "--help"])
    assert exited.value.code == 0
    printed = capsys.readouterr()
    assert printed.out.startswith("usage:"), printed.out[:500]
    assert "Traceback" not in printed.err
