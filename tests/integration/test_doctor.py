"""`m3bridge doctor` against the ION simulator (its own token, every MI transaction the bridge uses probed), the
QuoteWerks simulator, the session's broker and a migrated PostgreSQL: all clear, then one transaction denied in
Connect API Authorization (the simulator's admin API) is named for the M3 administrator and blocks go-live."""

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from m3bridge.cli import main
from shared.contracts.topics import ensure_topics
from shared.platform.state import db
from simulators.stack import IonSim, QuoteWerksSim, start_ion, start_quotewerks


@dataclass
class Tenant:
    ion: IonSim
    quotewerks: QuoteWerksSim


@pytest.fixture(scope="module")
def tenant(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, module_postgres_url: str
) -> Iterator[Tenant]:
    asyncio.run(ensure_topics(kafka_bootstrap, partitions=4, replication=1))
    asyncio.run(db.migrate(module_postgres_url))
    with contextlib.ExitStack() as started:
        ion = start_ion(tmp_path_factory.mktemp("ion"))
        started.callback(ion.stop)
        quotewerks = start_quotewerks("http://127.0.0.1:9/unused", "unused-secret")
        started.callback(quotewerks.stop)
        yield Tenant(ion, quotewerks)


@pytest.fixture
def configured(tenant: Tenant, kafka_bootstrap: str, module_postgres_url: str, monkeypatch: pytest.MonkeyPatch,
               tmp_path: Path) -> None:  # fmt: skip
    for name, value in {
        "M3B_ION_API_FILE": str(tenant.ion.ionapi), "M3B_QUOTEWERKS_URL": tenant.quotewerks.url,
        "M3B_QUOTEWERKS_API_KEY": tenant.quotewerks.api_key, "M3B_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "M3B_STATE_URL": module_postgres_url, "M3B_RUN_STATE_DIR": str(tmp_path),
        "M3B_DOCTOR_CALLS_PER_S": "40",  # the simulator's Gateway allows far more; the default 5 is for tenants
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)


def doctor(capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
    capsys.readouterr()
    code = main(["doctor", "--json"])
    found: dict[str, object] = json.loads(capsys.readouterr().out)
    return code, found


def test_a_ready_installation_is_all_clear(configured: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, found = doctor(capsys)
    checks = found["checks"]
    assert isinstance(checks, list)
    problems = [c for c in checks if c["status"] not in ("ok", "skip")]
    assert problems == [], problems
    assert code == 0
    names = {c["name"] for c in checks}
    assert {"OIS100MI/Confirm", "CRS610MI/Add", "MMS200MI/LstItmByItm", "MRS001MI metadata", "topics",
            "migrations", "COUNT of MITMAS"} <= names  # fmt: skip
    confirm = next(c for c in checks if c["name"] == "OIS100MI/Confirm")
    assert confirm["status"] == "ok"  # probed: it has a mandatory input, so the empty call does nothing
    lake = next(c for c in checks if c["name"] == "COUNT of MITMAS")
    assert "full loads read" in str(lake["detail"])
    capsys.readouterr()
    assert main(["doctor"]) == 0
    assert "0 blocking" in capsys.readouterr().out


def test_a_denied_transaction_is_named_for_the_m3_administrator_and_blocks(
    tenant: Tenant, configured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    tenant.ion.admin("POST", "denials", {"user": "*", "program": "OIS100MI", "transaction": "Confirm"})
    code, found = doctor(capsys)
    assert code == 1
    assert found["denied"] == ["OIS100MI/Confirm"]
    capsys.readouterr()
    assert main(["doctor"]) == 1
    text = capsys.readouterr().out
    assert "For the M3 administrator (Connect API Authorization, SES005): grant the bridge's user" in text
    assert "  OIS100MI/Confirm" in text


def test_an_unusable_ionapi_file_is_named(configured: None, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    broken = tmp_path / "broken.ionapi"
    broken.write_text("{not json")
    monkeypatch.setenv("M3B_ION_API_FILE", str(broken))
    code, found = doctor(capsys)
    assert code == 1
    checks = found["checks"]
    assert isinstance(checks, list)
    [ionapi] = [c for c in checks if c["name"] == ".ionapi file"]
    assert ionapi["status"] == "fail"
    assert "M3B_ION_API_FILE" in str(ionapi["detail"])


def test_dry_run_asks_m3_about_the_items_and_exits_1_when_the_quote_would_be_held(
    configured: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = json.loads((Path(__file__).resolve().parents[2] / "docs/examples/quote-approved.json").read_text())
    good = tmp_path / "good.json"
    good.write_text(json.dumps(example))
    bad = tmp_path / "bad.json"
    example["Lines"][0]["ManufacturerPartNumber"] = "NOPE-123"
    bad.write_text(json.dumps(example))
    capsys.readouterr()
    assert main(["dry-run", str(good), "--customer", "C000001"]) == 0
    assert "M3 has every item, active: ready to send" in capsys.readouterr().out
    assert main(["dry-run", str(bad), "--customer", "C000001"]) == 1
    said = capsys.readouterr().out
    assert "ready to send" in said  # the mapping alone has nothing against it ...
    assert "M3 would hold it:" in said  # ... M3 does not know the item
    assert "NOPE-123" in said.split("M3 would hold it:")[1]
    assert main(["dry-run", str(bad), "--customer", "C000001", "--offline"]) == 0


@pytest.mark.parametrize(
    ("policy", "status", "said"),
    [
        ({}, "ok", "no 429"),  # the simulator's own: 50 requests a second
        ({"time_period_ms": 10_000, "max_requests_per_period": 5}, "fail", "the tenant's policy is stricter"),
        (
            {"time_period_ms": 10_000, "max_requests_per_period": None, "delay_after_count": 2, "delay_factor_ms": 600},
            "warn",
            "M3B_THROTTLE_DELAY_AFTER_COUNT",
        ),
    ],
    ids=["as-configured", "spike-arrest-stricter", "smoothing-earlier"],
)
def test_the_throttling_policy_is_checked_against_what_the_gateway_answers(
    tenant: Tenant, configured: None, policy: dict[str, object], status: str, said: str
) -> None:
    """The doctor's probe (a few reads one at a time, then a small burst) against the simulator's Gateway with the
    token-service defaults configured (3,000 a minute): a policy that refuses the burst blocks go-live, one that
    delays it is a warning naming the setting."""
    from m3bridge.doctor import Check, check_tenant, check_throttling

    async def probe() -> Check:
        checks: list[Check] = []
        async with httpx.AsyncClient() as http:
            m3 = await check_tenant(str(tenant.ion.ionapi), checks, http)
            assert m3 is not None, checks
            await check_throttling(m3, checks)
        return checks[-1]

    tenant.ion.admin("PUT", "throttle", policy)
    try:
        found = asyncio.run(probe())
    finally:
        tenant.ion.admin("PUT", "throttle", {})
    assert (found.name, found.status) == ("throttling policy", status), found
    assert said in found.detail
