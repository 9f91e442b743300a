"""`make bench`: the benchmarks, printing figures and ratios (never pass/fail in the test suite)."""

from bench import m3_path

raise SystemExit(m3_path.main())
