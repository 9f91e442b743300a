"""`python -m tests.chaos [-s a,e,p] [-n 300]`: run chaos scenarios, print one table row each; exit 1 on any defect.
Scenario p is the crash-point matrix: a kill at every named crash point, one quote each."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from tests.chaos.crash_matrix import MATRIX_POINTS, run_matrix
from tests.chaos.run import SCENARIOS, Options, run_scenario, say
from tests.chaos.table import render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    # argparse %-formats help texts, and the titles say "15 % of answers".
    listing = "; ".join(f"{key}: {title}" for key, (title, _) in SCENARIOS.items()).replace("%", "%%")
    listing += f"; p: a kill at each of the {len(MATRIX_POINTS)} crash points"
    parser.add_argument("-s", "--scenarios", default="a,b,c,d,e,f,p", help=f"comma-separated, of: {listing}")
    parser.add_argument("-n", "--quotes", type=int, default=300, help="approved quotes per scenario (default 300)")
    parser.add_argument("--rate", type=float, default=4.0, help="approvals per second (default 4)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--poison", type=int, default=12, help="poison messages in scenarios d and e (default 12)")
    parser.add_argument(
        "--drain-timeout", type=float, help="seconds after the last approval (default 60 + 8 per quote)"
    )
    parser.add_argument("--run-dir", type=Path, default=Path("var/chaos"), help="logs and row.json per scenario")
    parser.add_argument(
        "--late-504",
        choices=("both", "arrives", "client-timeout"),
        default="both",
        help="the Gateway's late 504 (timeout_rate) comes before the services' M3 timeout (arrives), after it "
        "(client-timeout), or alternating (both, default)",
    )
    parser.add_argument(
        "--max-down", type=float, default=12.0, help="a killed process stays down 0.5-1 x this long (default 12 s)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print the chaos actions as they ran")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCENARIOS and name != "p"]
    if unknown or not names:
        parser.error(f"unknown scenarios {unknown}; choose from {', '.join(SCENARIOS)}")
    if args.quotes < 1 or args.rate <= 0:
        parser.error("--quotes must be >= 1 and --rate > 0")
    options = Options(
        quotes=args.quotes, rate=args.rate, seed=args.seed, poison=args.poison,
        drain_timeout_s=args.drain_timeout if args.drain_timeout is not None else 60 + 8 * args.quotes,
        run_dir=args.run_dir, verbose=args.verbose, late_504=args.late_504, max_down_s=args.max_down,
    )  # fmt: skip
    rows = []
    problems: list[str] = []
    try:
        for name in names:
            if name == "p":
                matrix = asyncio.run(run_matrix(options.run_dir, seed=options.seed))
                for point in matrix.points:
                    crashed = "died there" if point.exit_code is not None else "DID NOT STOP"
                    say(
                        f"  {point.point}: {point.doc_no} {crashed}, then {point.outcome[:60]!r} ({point.seconds:.0f}s)"
                    )
                problems += [p for p in matrix.problems if not p.startswith("[")]
                rows.append(matrix.row)
            else:
                rows.append(asyncio.run(run_scenario(name, options)))
    finally:
        if rows:
            render(rows)
    for problem in problems:
        say(problem)
    defects = sum(row.defects for row in rows) + len(problems)
    say(f"{defects} defect(s) in {len(rows)} scenario(s)" + ("" if defects else ": exactly once held"))
    return 1 if defects else 0


if __name__ == "__main__":
    sys.exit(main())
