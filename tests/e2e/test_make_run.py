"""`make run` from the repository: every service healthy within 60 s, the demo's M3 changes reaching bod-listener
as ION delivers them (IMS v3 multipart messages), then a clean stop on SIGINT or SIGTERM with no process left behind
(broker included). `make run QUOTEWERKS=db`: the same against a local QuoteWerks database instead of the simulator."""

import contextlib
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from m3bridge.tansu import port_open
from tests.conftest import ROOT
from tests.processes import Captured, alive, wait_until
from tests.stack import start_local_run as start_stack
from tests.stack import started


def assert_all_ready(children: dict[str, tuple[int, str]]) -> None:
    for name, (_, where) in children.items():
        if name in ("kafka", "ion-sim", "quotewerks-sim"):
            continue
        response = httpx.get(f"{where}/readyz", timeout=5)
        assert response.status_code == 200, (name, response.text)
        health = httpx.get(f"{where}/healthz", timeout=5).json()
        assert health["service"] == name
    # token-service holds a token from the simulator's OAuth server: the M3 path is live end to end.
    token_service = children["token-service"][1]
    assert httpx.get(f"{token_service}/readyz", timeout=5).json()["checks"]["ion_token"] == "ok"


def assert_the_banner_calls_work(stack: Captured, children: dict[str, tuple[int, str]]) -> None:
    """The banner shows this run's keys in curl lines; without them the protected routes answer 401."""
    [read] = [line for line in stack.lines if "availability (read key): curl" in line]
    key = re.search(r"Bearer ([^']+)'", read)
    assert key, read
    inventory = children["inventory-query"][1]
    url = f"{inventory}/v1/availability/ITM000001"
    answer = httpx.get(url, params={"warehouse": "100"}, headers={"Authorization": f"Bearer {key[1]}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert httpx.get(url, params={"warehouse": "100"}, timeout=10).status_code == 401
    assert any("sync now (operator key): curl -X POST" in line for line in stack.lines)
    assert httpx.post(f"{children['catalog-sync'][1]}/v1/sync/poll", timeout=10).status_code == 401


def assert_bods_went_through_ims(stack: Captured, children: dict[str, tuple[int, str]]) -> None:
    """The demo's order changes M3 (stock, the order): the simulator delivers those BODs to bod-listener's IMS end
    point, which accepts them (202) and counts them."""
    ion, listener = children["ion-sim"][1], children["bod-listener"][1]

    def delivered() -> dict[str, Any] | None:
        stats: dict[str, Any] = httpx.get(f"{ion}/__admin/bods", timeout=5).json()
        return stats if stats["delivered"] >= 1 and stats["pending"] == 0 else None

    stats = wait_until("the demo's BODs delivered", delivered, 30, dump=lambda: stack.output[-3000:])
    assert (stats["protocol"], stats["failed"]) == ("ims", 0), stats
    assert all(d["answers"][-1] == "202" and d["message_id"] for d in stats["last_deliveries"]), stats
    metrics = httpx.get(f"{listener}/metrics", timeout=5).text
    assert 'm3bridge_ims_requests_total{endpoint="v3/multipartMessage",status="202"}' in metrics


def assert_all_gone(stack: Captured, children: dict[str, tuple[int, str]]) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(alive(pid) for pid, _ in children.values()):
        time.sleep(0.1)
    leftovers = [name for name, (pid, _) in children.items() if alive(pid)]
    assert leftovers == [], f"left running: {leftovers}\n{stack.output[-3000:]}"
    kafka_port = int(children["kafka"][1].rsplit(":", 1)[1])
    assert not port_open("127.0.0.1", kafka_port)


@pytest.mark.parametrize(
    ("command", "signum"),
    [
        (["make", "--no-print-directory", "run"], signal.SIGINT),  # Ctrl-C reaches make's whole process group
        ([sys.executable, "-m", "m3bridge.cli", "run"], signal.SIGTERM),  # what a process manager sends
    ],
    ids=["make-run-ctrl-c", "supervisor-sigterm"],
)
def test_stack_starts_healthy_and_stops_clean(command: list[str], signum: int, tmp_path: Path) -> None:
    stack = start_stack(command, tmp_path)
    try:
        children = started(stack)
        assert_all_ready(children)
        assert_the_banner_calls_work(stack, children)
        # The demo: a quote approved in QuoteWerks comes back with its M3 order number.
        stack.wait_for_line("written back on the quote: CustomText01='1", 60)
        assert_bods_went_through_ims(stack, children)
        if signum == signal.SIGINT:
            stack.signal_group(signum)
        else:
            stack.process.send_signal(signum)
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
