"""`make run` from the repository, as a developer starts it: every service healthy within 60 s, the demo quote
ordered in M3 with its changes reaching bod-listener as ION delivers them (IMS v3 multipart messages), every service
fuzzed on that same run without a 5xx or a lost quote, then Ctrl-C stops it all with no process left behind (broker
included). The variants (a supervisor's SIGTERM, `make run QUOTEWERKS=db`) are in test_make_run_variants.py, a
`make test-all` lane.

The tests share one run and go in file order: the last one stops it."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from m3bridge.tansu import port_open
from services import SERVICES
from simulators.processes import Captured, alive, wait_ready, wait_until
from simulators.stack import ROOT, start_local_run as start_stack, started
from tests.fuzz.run import fuzz_started, run_keys

DEMO_QUOTE = "AAAQ1001"


def assert_all_ready(
    children: dict[str, tuple[int, str]], stack: Captured | None = None, read_key: str | None = None
) -> None:
    """Every service answers ready. A service the run's supervisor is restarting (its start-up timed out on a loaded
    machine) gets the time a restart takes; the run's own lines about it are in the failure."""
    for name, (_, where) in children.items():
        if name in ("kafka", "ion-sim", "quotewerks-sim"):
            continue
        try:
            wait_ready(where, 60)
        except AssertionError as not_ready:
            said = "\n".join(
                line for line in (stack.lines if stack else []) if f"| {name}" in line or "supervisor" in line
            )
            raise AssertionError(f"{name} at {where}: {not_ready}\n{said[-4000:]}") from None
        health = httpx.get(f"{where}/healthz", timeout=5).json()
        assert health == {"service": name, "status": "ok"}  # the detail only with the read key
    # token-service holds a token from the simulator's OAuth server: the M3 path is live end to end.
    token_service = children["token-service"][1]
    if read_key is not None:
        ready = httpx.get(f"{token_service}/readyz", headers={"Authorization": f"Bearer {read_key}"}, timeout=5)
        assert ready.json()["checks"]["ion_token"] == "ok"


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
    # How to approve another quote: the simulator's key as written in the banner opens its API, and names a quote.
    [approve] = [line for line in stack.lines if "approve another quote: curl -X POST" in line]
    named = re.search(r"X-API-Key: ([^']+)' (\S+)/approve", approve)
    assert named, approve
    quote = httpx.get(named[2], headers={"X-API-Key": named[1]}, timeout=10)
    assert quote.status_code == 200, quote.text
    assert "run-keys.json" in approve


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


@dataclass
class LocalRun:
    stack: Captured
    children: dict[str, tuple[int, str]]
    directory: Path


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRun]:
    directory = tmp_path_factory.mktemp("make-run")
    stack = start_stack(["make", "--no-print-directory", "run"], directory)
    try:
        yield LocalRun(stack, started(stack), directory)
    finally:
        stack.kill_all()
        (directory / "stack.log").write_text(stack.output, encoding="utf-8")


def test_every_service_is_ready_and_the_demo_quote_becomes_an_m3_order(local_run: LocalRun) -> None:
    assert_all_ready(local_run.children, read_key=run_keys(local_run.directory / "var")["read"])
    assert_the_banner_calls_work(local_run.stack, local_run.children)
    # The demo: a quote approved in QuoteWerks comes back with its M3 order number.
    local_run.stack.wait_for_line("written back on the quote: CustomText01='1", 60)
    assert_bods_went_through_ims(local_run.stack, local_run.children)
    assert_the_backlog_is_measured(local_run)


def assert_the_backlog_is_measured(local_run: LocalRun) -> None:
    """order-writer measures its consumer groups' backlog on the broker: /healthz (read key) and /metrics."""
    order_writer = local_run.children["order-writer"][1]
    read = {"Authorization": f"Bearer {run_keys(local_run.directory / 'var')['read']}"}
    backlog = httpx.get(f"{order_writer}/healthz", headers=read, timeout=5).json()["backlog"]
    assert "m3bridge.order-writer/quotewerks.quote.approved.v1" in backlog, backlog
    metrics = httpx.get(f"{order_writer}/metrics", timeout=5).text
    lag = [line for line in metrics.splitlines() if line.startswith("m3bridge_consumer_lag{")]
    assert any('group="m3bridge.order-writer"' in line and 'topic="quotewerks.quote.approved.v1"' in line
               and 'partition="0"' in line for line in lag), lag  # fmt: skip


def test_doctor_is_all_clear_trace_tells_the_demo_quotes_trip_and_reconcile_finds_a_deleted_order(
    local_run: LocalRun,
) -> None:
    """The operator's tools find the run by themselves (var/run.json): no M3B_ setting given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("M3B_")}
    env["M3B_RUN_STATE_DIR"] = str(local_run.directory / "var")
    env["M3B_DOCTOR_CALLS_PER_S"] = "40"  # the simulator's Gateway allows far more; the default 5 is for tenants

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "m3bridge.cli", *args], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=180, check=False)  # fmt: skip

    doctor = cli("doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "0 blocking" in doctor.stdout
    assert "the secret in X-M3Bridge-Webhook-Secret accepted" in doctor.stdout
    assert re.search(r"ok\s+Gateway\s+throttling policy\s+one alone", doctor.stdout), doctor.stdout
    env["M3B_WEBHOOK_SECRET"] = "not-the-run-s-secret"
    wrong = cli("doctor", "--json")
    del env["M3B_WEBHOOK_SECRET"]
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    [webhook] = [c for c in json.loads(wrong.stdout)["checks"] if c["name"] == "webhook"]
    assert webhook["status"] == "fail", webhook
    assert "shared secret was refused" in webhook["detail"], webhook
    trace = cli("trace", DEMO_QUOTE)
    assert trace.returncode == 0, trace.stderr
    assert trace.stdout.startswith(f"{DEMO_QUOTE}: M3 order 1"), trace.stdout
    assert "approval claimed by quote-ingest" in trace.stdout
    order_number = trace.stdout.split("M3 order ", 1)[1].split()[0]
    # Nothing slipped through the demo; an order deleted in M3 by hand is found.
    clean = cli("reconcile", "--since", "1")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "0 difference(s)" in clean.stdout
    httpx.delete(f"{local_run.children['ion-sim'][1]}/__admin/m3/orders/{order_number}", timeout=10).raise_for_status()
    found = cli("reconcile", "--since", "1", "--json")
    assert found.returncode == 1, found.stdout + found.stderr
    [difference] = json.loads(found.stdout)["differences"]
    assert (difference["doc_no"], difference["kind"]) == (DEMO_QUOTE, "order missing in M3")
    # order-writer's own reconciliation (scheduled, and on demand with the operator key) finds it too.
    operator = {"Authorization": f"Bearer {run_keys(local_run.directory / 'var')['operator']}"}
    order_writer = local_run.children["order-writer"][1]
    report = httpx.post(f"{order_writer}/v1/orders/reconcile", params={"days": 1}, headers=operator, timeout=60)
    assert report.status_code == 200, report.text
    assert [(d["doc_no"], d["kind"]) for d in report.json()["differences"]] == [(DEMO_QUOTE, "order missing in M3")]
    metrics = httpx.get(f"{order_writer}/metrics", timeout=5).text
    assert 'm3bridge_reconcile_differences{kind="order missing in M3"} 1.0' in metrics, metrics[-2000:]


def test_every_service_survives_a_short_fuzz_with_nothing_lost(local_run: LocalRun) -> None:
    """A few schemathesis cases per operation and phase against every service, with keys and without: no 5xx, no
    request left without an answer, no 2xx without a key, every process alive and ready afterwards, and a canary
    quote still becomes its M3 order (`make fuzz` is the long lane)."""
    keys = run_keys(local_run.directory / "var")
    run = fuzz_started(local_run.children, keys, local_run.directory, examples=3, seed=20261202)
    assert {result.service for result in run.results} == set(SERVICES)
    assert all(result.requests > 0 for result in run.results)
    assert run.problems == [], "\n".join(run.problems) + f"\nlogs: {local_run.directory / 'stack.log'}"


SERVICE_LINE = re.compile(r"^\s*(?P<name>[a-z][a-z0-9-]*)\s+\|\s")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)*\.(example|com|org|net)\b")


def secrets_of(keys: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for value in keys.values():
        found += secrets_of(value) if isinstance(value, dict) else [str(value)]
    return [value for value in found if len(value) >= 12]


def test_no_key_secret_or_customer_e_mail_reaches_the_services_logs(local_run: LocalRun) -> None:
    """After the demo, the fuzz and the canary: the services' and simulators' log lines carry none of the run's keys
    and secrets and no e-mail address (customers' personal data); the banner alone shows the local keys, on purpose."""
    lines = [line for line in local_run.stack.lines if (m := SERVICE_LINE.match(line)) and m["name"] != "supervisor"]
    assert len(lines) > 50, local_run.stack.output[-2000:]
    secrets = secrets_of(run_keys(local_run.directory / "var"))
    assert len(secrets) >= 6
    leaked = [line for line in lines if any(secret in line for secret in secrets)]
    assert leaked == [], "\n".join(leaked[:5])
    mailed = [line for line in lines if EMAIL.search(line)]
    assert mailed == [], "\n".join(mailed[:5])
    # The topics exist (make run creates them): no service says otherwise.
    assert not [line for line in lines if "Auto create topics is disabled" in line or "do not exist" in line]


def test_ctrl_c_stops_everything_and_leaves_nothing_running(local_run: LocalRun) -> None:
    local_run.stack.signal_group(signal.SIGINT)  # Ctrl-C reaches make's whole process group
    local_run.stack.process.wait(60)
    assert "| all stopped" in local_run.stack.output
    assert_all_gone(local_run.stack, local_run.children)
