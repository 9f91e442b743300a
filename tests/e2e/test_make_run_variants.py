"""The other ways to start the local run (`make test-all`; `make test` runs `make run` itself, in
test_make_run.py): `m3bridge run` stopped by SIGTERM as a process manager stops it, and `make run QUOTEWERKS=db`
against a local QuoteWerks database instead of the simulator."""

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulators.processes import Captured, wait_until
from simulators.stack import start_local_run as start_stack, started
from tests.conftest import ROOT
from tests.e2e.test_make_run import assert_all_gone, assert_all_ready, assert_bods_went_through_ims

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


def test_a_held_quote_on_the_work_queue_outlives_a_restart_and_a_retry_after_the_fix_orders_it(tmp_path: Path) -> None:
    """The operator's first morning: a quote held for an item M3 lacks is on the work queue; the run stops and starts
    again with --keep-state and the item is still there; the item is created in M3, `work retry` sends the quote,
    it becomes an order and the work item resolves itself. The tools find the run on their own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("M3B_")}
    env["M3B_RUN_STATE_DIR"] = str(tmp_path / "var")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "m3bridge.cli", *args], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=120, check=False)  # fmt: skip

    def held_item() -> dict[str, Any] | None:
        listed = cli("work", "list", "--doc", "AAAQ1003", "--json")
        assert listed.returncode == 0, listed.stderr
        found = json.loads(listed.stdout)
        return found[0] if found else None

    first = start_stack([sys.executable, "-m", "m3bridge.cli", "run", "--no-demo"], tmp_path)
    try:
        children = started(first)
        quotewerks = children["quotewerks-sim"][1]
        key = json.loads((tmp_path / "var" / "run-keys.json").read_text())["quotewerks_api_key"]
        httpx.post(f"{quotewerks}/api/v1/documents/AAAQ1003/approve", headers={"X-API-Key": key}, timeout=10)
        item = wait_until("the held quote on the work queue", held_item, 60, dump=lambda: first.output[-3000:])
        assert (item["state"], item["status"]) == ("held", "open")
        first.process.send_signal(signal.SIGTERM)
        first.process.wait(60)
    finally:
        first.kill_all()
    # Stopped: the queue is in the state store, not on the broker.
    assert held_item() == item
    again = start_stack([sys.executable, "-m", "m3bridge.cli", "run", "--no-demo", "--keep-state"], tmp_path)
    try:
        children = started(again)
        assert held_item() is not None
        ion = children["ion-sim"][1]
        httpx.post(f"{ion}/__admin/m3/items", json={"ITNO": "NOPE-123", "ITDS": "Created for the retry"},
                   timeout=10).raise_for_status()  # fmt: skip
        retried = cli("work", "retry", str(item["id"]), "--note", "item created in MMS001")
        assert retried.returncode == 0, retried.stderr

        def resolved() -> dict[str, Any] | None:
            shown = cli("work", "show", str(item["id"]), "--json")
            found: dict[str, Any] = json.loads(shown.stdout)
            return found if found["status"] == "resolved" else None

        done = wait_until("the retried quote ordered", resolved, 90, dump=lambda: again.output[-3000:])
        assert [e["event"] for e in done["history"]] == ["held", "retried", "resolved"]
        assert done["history"][-1]["note"].startswith("became M3 order 1")
        again.process.send_signal(signal.SIGTERM)
        again.process.wait(60)
    finally:
        again.kill_all()
