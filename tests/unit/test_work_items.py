"""The work queue's store (shared/platform/state/work_items.py) on a real SQLite store, and how the command-line tools
find a local run's state store and broker (m3bridge/local_run.py)."""

import asyncio
import json
import os
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from m3bridge import local_run
from shared.contracts import Problem
from shared.platform.state import db, work_items

pytestmark = pytest.mark.unit

UNKNOWN = [Problem(error_class="business", message="item NOPE-123 does not exist in M3")]


async def hold(engine: AsyncEngine, doc_no: str = "AAAQ1003", **more: object) -> tuple[int, bool]:
    return await work_items.open_quote(engine, doc_no=doc_no, revision=0, state="held", problems=UNKNOWN,
                                       payload="{}", customer="C000001", items=["ITM000001", "NOPE-123"], **more)  # type: ignore[arg-type]  # fmt: skip


async def test_a_quote_held_again_is_one_item_with_its_attempts_and_history(engine: AsyncEngine) -> None:
    first, opened = await hold(engine)
    again, reopened = await hold(engine)
    assert (opened, reopened, again) == (True, False, first)
    [item] = await work_items.search(engine)
    assert (item.attempts, item.error_class, item.status) == (2, "business", "open")
    assert [e["event"] for e in work_items.history(item)] == ["held", "held"]
    assert await work_items.count_open(engine) == {("quote", "business"): 1}


async def test_an_order_closes_it_and_a_later_hold_opens_it_again(engine: AsyncEngine) -> None:
    item_id, _ = await hold(engine)
    assert await work_items.close_quote(engine, "AAAQ1003", "became M3 order 1000000001") == [item_id]
    assert await work_items.search(engine) == []
    assert await work_items.count_open(engine) == {}
    again, reopened = await hold(engine)
    assert (again, reopened) == (item_id, True)


async def test_search_by_doc_customer_item_and_class(engine: AsyncEngine) -> None:
    await hold(engine, "Q1")
    denied = [Problem(error_class="authorization", message="denied")]
    await work_items.open_quote(engine, doc_no="Q2", revision=0, state="failed", payload="{}", customer="C000002",
                                items=["ITM000002"], problems=denied)  # fmt: skip
    assert [i.subject for i in await work_items.search(engine, item="NOPE-123")] == ["Q1"]
    assert [i.subject for i in await work_items.search(engine, item="NOPE-12")] == []
    assert [i.subject for i in await work_items.search(engine, customer="C000002")] == ["Q2"]
    assert [i.subject for i in await work_items.search(engine, error_class="authorization")] == ["Q2"]
    assert [i.subject for i in await work_items.search(engine, doc_no="Q1")] == ["Q1"]
    resolved = await work_items.note(engine, (await work_items.search(engine, doc_no="Q2"))[0].id, "resolved",
                                     "cancelled with the customer", resolve=True)  # fmt: skip
    assert resolved.status == "resolved"
    assert [i.subject for i in await work_items.search(engine, status="resolved")] == ["Q2"]
    assert len(await work_items.search(engine, status="all")) == 2
    with pytest.raises(LookupError):
        await work_items.note(engine, 999, "retried")


def test_the_tools_take_a_local_runs_state_and_its_broker_only_while_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("M3B_RUN_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("M3B_STATE_URL", raising=False)
    monkeypatch.delenv("M3B_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    with pytest.raises(local_run.BrokerNotFoundError, match="does not exist"):
        local_run.cli_settings(needs_broker=True)
    local_run.write(tmp_path, kafka_bootstrap="127.0.0.1:19092", state_url="sqlite+aiosqlite:///x.db",
                    pid=os.getpid(), urls={})  # fmt: skip
    settings = local_run.cli_settings(needs_broker=True)
    assert (settings.kafka_bootstrap_servers, settings.state_url) == ("127.0.0.1:19092", "sqlite+aiosqlite:///x.db")
    stopped = json.loads((tmp_path / local_run.RUN_FILE).read_text())
    stopped["pid"] = 2**22 + 12345  # no such process
    (tmp_path / local_run.RUN_FILE).write_text(json.dumps(stopped))
    assert local_run.cli_settings().state_url == "sqlite+aiosqlite:///x.db"  # the store outlives the run
    with pytest.raises(local_run.BrokerNotFoundError, match="names a run that has stopped"):
        local_run.cli_settings(needs_broker=True)
    monkeypatch.setenv("M3B_KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    assert local_run.cli_settings(needs_broker=True).kafka_bootstrap_servers == "kafka:9092"


def test_dead_letters_without_a_broker_say_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from m3bridge.cli import main

    monkeypatch.setenv("M3B_RUN_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("M3B_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    assert main(["dead-letters", "list", "--service", "order-writer"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("no broker: set M3B_KAFKA_BOOTSTRAP_SERVERS, or start `make run`")
    assert err.count("\n") == 1


EXAMPLE = Path(__file__).resolve().parents[2] / "docs/examples/quote-approved.json"


def test_show_sets_the_first_attempts_m3_calls_beside_the_current_mappings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The plan order-writer made at the first attempt is kept; `work show` prints it beside what the mapping makes
    of the quote now when the two differ (the mapping was changed to fix the hold)."""
    from m3bridge.cli import main

    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    example = EXAMPLE.read_text()

    async def two_attempts() -> tuple[int, list[dict[str, object]]]:
        await db.migrate(url)
        engine = db.create_engine(url)
        try:
            first_plan = "Quote AAAQ1009: the old mapping's calls"
            item_id, _ = await work_items.open_quote(engine, doc_no="AAAQ1009", revision=0, state="held",
                                                     problems=UNKNOWN, payload=example, plan=first_plan)  # fmt: skip
            await work_items.open_quote(engine, doc_no="AAAQ1009", revision=0, state="held", problems=UNKNOWN,
                                        payload=example, plan="not kept: a later attempt")  # fmt: skip
            item = await work_items.get(engine, item_id)
            assert item is not None
            return item_id, work_items.history(item)
        finally:
            await engine.dispose()

    item_id, events = asyncio.run(two_attempts())
    assert [event.get("plan") for event in events] == ["Quote AAAQ1009: the old mapping's calls", None]
    monkeypatch.setenv("M3B_STATE_URL", url)
    monkeypatch.setenv("M3B_RUN_STATE_DIR", str(tmp_path))
    assert main(["work", "show", str(item_id)]) == 0
    shown = capsys.readouterr().out
    first, now = shown.split("what the first attempt's mapping sent to M3 (offline):")[1].split(
        "what the current mapping sends to M3 instead"
    )
    assert "the old mapping's calls" in first
    assert "AddBatchHead" in now
