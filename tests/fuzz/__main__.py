"""`make fuzz`: every service's OpenAPI fuzzed on a local run, a table of requests, 5xx and crashes per service;
exit 1 on any. Options: `python -m tests.fuzz --help` (FUZZ_ARGS in make)."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from services import SERVICES
from tests.fuzz.engine import ServiceResult
from tests.fuzz.run import CANARY_QUOTE, fuzz_everything


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("-n", "--examples", type=int, default=200, help="most test cases per operation and phase")
    parser.add_argument("--seed", type=int, default=int(time.time()), help="schemathesis' seed (printed)")
    parser.add_argument("-s", "--services", default="", help=f"comma-separated subset of {', '.join(SERVICES)}")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (HAR reports, state)")
    options = parser.parse_args(argv)
    services = [s for s in options.services.split(",") if s] or list(SERVICES)
    unknown = set(services) - set(SERVICES)
    if unknown:
        parser.error(f"unknown services: {', '.join(sorted(unknown))}")
    console = Console(width=max(132, shutil.get_terminal_size().columns))
    console.print(f"fuzzing {', '.join(services)}: up to {options.examples} cases per operation and phase, "
                  f"seed {options.seed}")  # fmt: skip

    def progress(result: ServiceResult, elapsed_s: float) -> None:
        console.print(f"  {result.service}: {result.requests} requests, {result.server_errors} 5xx, "
                      f"{'alive' if result.alive_after else 'DEAD'}, {elapsed_s:.0f} s")  # fmt: skip

    tmp = Path(tempfile.mkdtemp(prefix="m3bridge-fuzz-"))
    run = fuzz_everything(tmp, examples=options.examples, seed=options.seed, services=services, progress=progress)
    table = Table(title=f"fuzzing (seed {options.seed})")
    for column in ("service", "requests", "with keys", "without keys", "5xx", "crashes", "ready after", "answers"):
        table.add_column(column, justify="left" if column in ("service", "answers") else "right")
    for result in run.results:
        answers = sum((p.statuses for p in result.passes), start=type(result.passes[0].statuses)())
        table.add_row(
            result.service,
            str(result.requests),
            str(result.passes[0].requests),
            str(result.passes[1].requests),
            str(result.server_errors),
            "0" if result.alive_after else "1",
            "yes" if result.ready_after else "NO",
            " ".join(f"{status}:{n}" for status, n in sorted(answers.items())),
        )
    console.print(table)
    console.print(f"canary quote {CANARY_QUOTE}: {'written back: ' if run.canary_ok else ''}{run.canary}")
    if options.keep:
        console.print(f"run directory kept: {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    problems = run.problems
    for problem in problems:
        console.print(f"[red]{problem}[/red]")
    console.print("no 5xx, no crash, nothing lost" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
