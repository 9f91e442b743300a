"""The crash-point matrix's short lane (`make chaos -s p` runs every point): order-writer and quote-ingest killed
at a crash point of each kind — recorded but not told, M3 did it but not recorded — started again, and each quote
still one correct order, one customer, no batch order left."""

import asyncio
import os
from pathlib import Path

import asyncpg
import pytest

from tests.chaos.crash_matrix import SHORT_LANE, run_matrix
from tests.chaos.stack import PG_ADMIN_DSN


async def _postgres_problem() -> str:
    try:
        connection = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return str(exc)
    await connection.close()
    return ""


def test_a_kill_at_each_kind_of_crash_point_still_leaves_one_order_per_quote(tmp_path: Path) -> None:
    problem = asyncio.run(_postgres_problem())
    if problem:
        message = f"PostgreSQL at {PG_ADMIN_DSN} is not usable: {problem}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    result = asyncio.run(run_matrix(tmp_path, SHORT_LANE))
    assert [run.point for run in result.points] == list(SHORT_LANE)
    assert result.problems == [], "\n".join(result.problems) + f"\nlogs: {tmp_path}"
