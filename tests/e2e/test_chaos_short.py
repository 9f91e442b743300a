"""The chaos suite's short lane (`make chaos` runs the full scenarios): a few dozen quotes through the real
processes under M3 faults (answers dropped after M3 processed them, late 504s, 5xx), one SIGKILL of order-writer
mid-run and a few malformed or oversized messages on the quote topic. Every defect column must be zero: each
approved quote one correct confirmed order (or held with its reason), no second customer, no orphan batch order,
no false failure, every poison message dead-lettered."""

import asyncio
from pathlib import Path

from tests.chaos.measure import DEFECTS
from tests.chaos.run import Options, run_scenario, short_lane
from tests.chaos.stack import require_postgres

QUOTES = 30
POISON = 4


def test_exactly_once_under_faults_a_kill_and_poison(tmp_path: Path) -> None:
    require_postgres()
    options = Options(quotes=QUOTES, rate=3.0, poison=POISON, drain_timeout_s=90, run_dir=tmp_path)
    row = asyncio.run(run_scenario("short", options, builder=short_lane, label="faults + kill + poison"))
    chaos = "\n".join(row.chaos_log)
    assert row.sent == QUOTES
    assert row.poison_sent == POISON, row.notes
    defects = {name: getattr(row, name) for name in DEFECTS}
    assert defects == dict.fromkeys(DEFECTS, 0), f"{row.summary()}\nchaos:\n{chaos}"
