"""The chaos suite's short lane (`make chaos` runs the full scenarios): a few dozen quotes through the real
processes under M3 faults (answers dropped after M3 processed them, late 504s, 5xx), one SIGKILL of order-writer
mid-run and a few malformed or oversized messages on the quote topic. Every defect column must be zero: each
approved quote one correct confirmed order (or held with its reason), no second customer, no orphan batch order,
no false failure, every poison message dead-lettered."""

import asyncio
import re
from pathlib import Path

from tests.chaos.measure import DEFECTS
from tests.chaos.run import Options, run_scenario, short_lane
from tests.chaos.stack import KEYS, QW_API_KEY, WEBHOOK_SECRET, require_postgres

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
    assert_no_secret_or_e_mail_in_the_logs(tmp_path)


SECRETS = (WEBHOOK_SECRET, QW_API_KEY, *KEYS.values())
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)*\.(example|com|org|net)\b")
BEARER = re.compile(r"Bearer [A-Za-z0-9._~+/-]{16,}")


def assert_no_secret_or_e_mail_in_the_logs(run_dir: Path) -> None:
    """After faults, a kill and poison: no key, secret, bearer token or customer e-mail in any process's log."""
    logs = [path for path in run_dir.rglob("*.log") if path.name != "tansu.log"]
    assert len(logs) >= 4, sorted(p.name for p in run_dir.rglob("*"))
    assert sum(path.stat().st_size for path in logs) > 10_000, "the processes said next to nothing: nothing checked"
    found: list[str] = []
    for path in logs:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if any(secret in line for secret in SECRETS) or EMAIL.search(line) or BEARER.search(line):
                found.append(f"{path.name}: {line[:300]}")
    assert found == [], "\n".join(found[:10])
