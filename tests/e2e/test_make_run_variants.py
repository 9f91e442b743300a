"""The other ways to start the local run (`make test-all`; `make test` runs `make run` itself, in
test_make_run.py): `m3bridge run` stopped by SIGTERM as a process manager stops it, and `make run QUOTEWERKS=db`
against a local QuoteWerks database instead of the simulator."""

import contextlib
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT
from tests.e2e.test_make_run import assert_all_gone, assert_all_ready, assert_bods_went_through_ims
from tests.processes import Captured, wait_until
from tests.stack import start_local_run as start_stack
from tests.stack import started

pytestmark = pytest.mark.slow


def test_a_supervisors_sigterm_stops_a_healthy_run_clean(tmp_path: Path) -> None:
    stack = start_stack([sys.executable, "-m", "m3bridge.cli", "run"], tmp_path)
    try:
        children = started(stack)
        assert_all_ready(children)
        stack.wait_for_line("written back on the quote: CustomText01='1", 60)
        assert_bods_went_through_ims(stack, children)
        stack.process.send_signal(signal.SIGTERM)  # what a process manager sends
        stack.process.wait(60)
        assert "| all stopped" in stack.output
        assert_all_gone(stack, children)
    finally:
        stack.kill_all()


def quote_header(database: Path, doc_no: str) -> dict[str, Any]:
    with contextlib.closing(sqlite3.connect(database, timeout=10)) as connection:
        connection.row_factory = sqlite3.Row
        row = connection.execute("SELECT * FROM DocumentHeaders WHERE DocNo = ?", (doc_no,)).fetchone()
    return dict(row) if row is not None else {}


def assert_ordered_in_m3(stack: Captured, ion: str, database: Path, doc_no: str, customer: str) -> str:
    """The quote's row carries the M3 order number, and the M3 simulator holds that order for the quote."""

    def written_back() -> dict[str, Any] | None:
        row = quote_header(database, doc_no)
        return row if row.get("CustomText02") else None

    row = wait_until(f"{doc_no}'s M3 outcome written back", written_back, 60, dump=lambda: stack.output[-3000:])
    order_number = row["CustomText01"]
    assert order_number, row
    assert order_number.startswith("1"), row
    orders = httpx.get(f"{ion}/__admin/m3/orders", params={"cuor": doc_no}, timeout=5).json()["orders"]
    assert [(o["ORNO"], o["CUNO"]) for o in orders] == [(order_number, customer)], orders
    return str(order_number)


def approve_by_hand(stack: Captured, database: Path) -> str:
    """Runs what the banner says approves another quote by hand (a sqlite3 command, or the SQL without sqlite3);
    returns that quote's DocNo."""
    line = next(line for line in stack.lines if "approve another quote by hand: " in line)
    how = line.split("approve another quote by hand: ", 1)[1]
    doc_no = re.findall(r"DocNo = '([^']+)'", how)[-1]
    if how.startswith("sqlite3 "):
        subprocess.run(how, shell=True, check=True, cwd=ROOT, timeout=30)  # the banner's own command
    else:
        with contextlib.closing(sqlite3.connect(database, timeout=10)) as connection, connection:
            connection.execute(how.split(";  (in ", 1)[0])
    return doc_no


def test_make_run_against_a_quotewerks_database(tmp_path: Path) -> None:
    """`make run QUOTEWERKS=db`: no QuoteWerks simulator; the demo approves a quote in a SQLite file of QuoteWerks'
    schema, quote-ingest's poll finds it, and its M3 order number lands in the row. The banner's by-hand approval
    works too."""
    stack = start_stack(["make", "--no-print-directory", "run", "QUOTEWERKS=db"], tmp_path)
    database = tmp_path / "var" / "quotewerks.db"
    try:
        children = started(stack, simulators=("ion-sim",))
        assert f"QuoteWerks: the SQLite database sqlite+aiosqlite:///{database}" in stack.output
        assert_all_ready(children)
        ion = children["ion-sim"][1]
        stack.wait_for_line("written back on the quote: CustomText01='1", 60)
        first = assert_ordered_in_m3(stack, ion, database, "AAAQ1001", "C000001")
        assert f"CustomText01={first!r}" in stack.output

        doc_no = approve_by_hand(stack, database)
        assert doc_no != "AAAQ1001"
        customer = quote_header(database, doc_no)["SoldToCMAccountNo"]
        assert assert_ordered_in_m3(stack, ion, database, doc_no, customer) != first

        stack.signal_group(signal.SIGINT)
        stack.process.wait(60)
        assert "| all stopped" in stack.output
        assert_all_gone(stack, children)
    finally:
        stack.kill_all()
