"""`m3bridge customers conflicts|resolve` against the session's PostgreSQL: the review queue as a person sees and
settles it (catalog-sync applying the decision is in tests/unit/test_customer_master.py)."""

import asyncio
import json
import uuid
from datetime import UTC, datetime

import pytest

from m3bridge.cli import main
from services.catalog_sync.customer_merge import Agreed
from shared.platform.state import customer_snapshots as snapshots, db
from shared.platform.state.customer_snapshots import WorkItemValues

NINE = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


@pytest.fixture
def store(module_postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("M3B_STATE_URL", module_postgres_url)
    return module_postgres_url


def open_item(url: str, kind: str = "conflict", field: str = "email") -> tuple[int, str]:
    number = f"C{uuid.uuid4().hex[:7].upper()}"

    async def go() -> int:
        await db.migrate(url)
        engine = db.create_engine(url)
        try:
            values = WorkItemValues(
                m3_value="m3@x.example", quotewerks_value="qw@x.example", agreed=Agreed("a@x.example", "a@x.example"),
                m3_changed_at=NINE, quotewerks_changed_at=None, reason="changed on both sides and a change time is "
                "not known",
            )  # fmt: skip
            item_id, _ = await snapshots.open_item(engine, kind, number, f"QW-{number}", field, values)  # type: ignore[arg-type]
            return item_id
        finally:
            await engine.dispose()

    return asyncio.run(go()), number


def test_conflicts_lists_both_values_what_was_agreed_and_when_each_side_changed(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    item_id, number = open_item(store)
    assert main(["customers", "conflicts", "--customer", number]) == 0
    shown = capsys.readouterr().out
    assert f"#{item_id} conflict M3 {number} / QuoteWerks QW-{number}  field email" in shown
    assert "M3:         'm3@x.example'  (changed 2026-12-07T09:00:00+00:00)" in shown
    assert "QuoteWerks: 'qw@x.example'  (changed unknown)" in shown
    assert "last agreed: M3 'a@x.example', QuoteWerks 'a@x.example'" in shown
    assert main(["customers", "conflicts", "--customer", number, "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert (listed["id"], listed["field"], listed["status"]) == (item_id, "email", "open")


def test_resolve_records_the_decision_for_catalog_sync_and_refuses_what_cannot_be_applied(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    item_id, number = open_item(store)
    assert main(["customers", "resolve", str(item_id), "--take", "recreate"]) == 2
    assert "is a conflict item: --take m3 | quotewerks | value" in capsys.readouterr().err
    assert main(["customers", "resolve", str(item_id), "--take", "value"]) == 2
    assert "--take value needs --value TEXT" in capsys.readouterr().err
    assert main(["customers", "resolve", "999999999", "--take", "m3"]) == 2
    assert "no customer review item 999999999" in capsys.readouterr().err
    assert (
        main(["customers", "resolve", str(item_id), "--take", "value", "--value", " new@x.example ", "--by", "eva"])
        == 0
    )
    assert "decided by eva: 'new@x.example', waiting for catalog-sync" in capsys.readouterr().out
    assert main(["customers", "conflicts", "--customer", number, "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert (listed["status"], listed["decision"], listed["decided_value"]) == ("decided", "value", "new@x.example")


def test_an_address_cannot_be_typed_for_both_systems_and_a_deleted_record_takes_recreate_or_unlink(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    item_id, _ = open_item(store, field="address")
    assert main(["customers", "resolve", str(item_id), "--take", "value", "--value", "1 Road"]) == 2
    assert "spelled differently in the two systems" in capsys.readouterr().err
    deleted, _ = open_item(store, kind="deleted", field="")
    assert main(["customers", "resolve", str(deleted), "--take", "m3"]) == 2
    assert "--take recreate | unlink" in capsys.readouterr().err
    assert main(["customers", "resolve", str(deleted), "--take", "unlink"]) == 0
