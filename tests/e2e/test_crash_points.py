"""The crash-point matrix's short lane (`make chaos -s p` runs every point): order-writer and quote-ingest killed
at a crash point of each kind — recorded but not told, M3 did it but not recorded — started again, and each quote
still one correct order, one customer, no batch order left."""

import asyncio
from pathlib import Path

from tests.chaos.crash_matrix import SHORT_LANE, run_matrix
from tests.chaos.stack import require_postgres


def test_a_kill_at_each_kind_of_crash_point_still_leaves_one_order_per_quote(tmp_path: Path) -> None:
    require_postgres()
    result = asyncio.run(run_matrix(tmp_path, SHORT_LANE))
    assert [run.point for run in result.points] == list(SHORT_LANE)
    assert result.problems == [], "\n".join(result.problems) + f"\nlogs: {tmp_path}"
