"""`make bench`: the benchmarks, printing figures and ratios (never pass/fail in the test suite)."""

import sys

from bench import availability, full_load, m3_path, quote_to_order

BENCHMARKS = {
    "m3-path": m3_path.main,
    "quote-to-order": quote_to_order.main,
    "availability": availability.main,
    "full-load": full_load.main,
}

chosen = sys.argv[1:] or list(BENCHMARKS)
for name in chosen:
    print(f"=== {name} ===")
    if BENCHMARKS[name]() != 0:
        raise SystemExit(1)
    print()
