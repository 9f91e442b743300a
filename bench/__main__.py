"""`make bench`: the benchmarks, printing figures and ratios (never pass/fail in the test suite).

`python -m bench` runs the quick ones; `python -m bench NAME [options]` one of them, `month-end` included (it runs
for a quarter of an hour: `python -m bench month-end --help`)."""

import sys

from bench import availability, full_load, m3_path, month_end, quote_to_order

BENCHMARKS = {
    "m3-path": m3_path.main,
    "quote-to-order": quote_to_order.main,
    "availability": availability.main,
    "full-load": full_load.main,
}

if len(sys.argv) > 1 and sys.argv[1] == "month-end":
    raise SystemExit(month_end.main(sys.argv[2:]))
chosen = sys.argv[1:] or list(BENCHMARKS)
unknown = [name for name in chosen if name not in BENCHMARKS]
if unknown:
    raise SystemExit(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join([*BENCHMARKS, 'month-end'])}")
for name in chosen:
    print(f"=== {name} ===")
    if BENCHMARKS[name]() != 0:
        raise SystemExit(1)
    print()
