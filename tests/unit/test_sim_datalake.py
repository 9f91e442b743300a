"""The ION simulator's Data Lake (Compass v2): SQL subset, job lifecycle, paging, Gateway in front."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from simulators.ion.app import create_app
from simulators.ion.config import IonSimConfig, ThrottlePolicy
from simulators.ion.datalake import DataLakeConfig, QueryError, parse

pytestmark = pytest.mark.unit

TENANT = "M3BRIDGE_TST"
JOBS = f"/{TENANT}/DATAFABRIC/compass/v2/jobs/"
TEXT = {"Content-Type": "text/plain"}


def make_app(items: int = 250, running_s: float = 0.0) -> FastAPI:
    app = create_app(IonSimConfig(throttle=ThrottlePolicy(enabled=False), m3={"items": items, "customers": 40}))
    app.state.ion.datalake.config = DataLakeConfig(running_s=running_s)
    return app


@pytest.fixture
async def lake() -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    app = make_app()
    config: IonSimConfig = app.state.ion.config
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ion.test") as client:
        token = await client.post(
            f"/{TENANT}/as/token.oauth2",
            auth=(config.client_id, config.client_secret.get_secret_value()),
            data={"grant_type": "password", "username": config.saak, "password": config.sask.get_secret_value()},
        )
        yield client, {"Authorization": f"Bearer {token.json()['access_token']}"}


async def query(client: httpx.AsyncClient, auth: dict[str, str], sql: str, limit: int = 100_000) -> list[Any]:
    submitted = await client.post(JOBS, content=sql, headers={**auth, **TEXT})
    assert submitted.status_code == 202, submitted.text
    query_id = submitted.json()["queryId"]
    for _ in range(50):
        status = (await client.get(f"{JOBS}{query_id}/status/", headers=auth)).json()["status"]
        if status != "RUNNING":
            break
        await asyncio.sleep(0.01)
    assert status == "FINISHED"
    rows: list[Any] = []
    offset = 0
    while True:
        page = await client.get(f"{JOBS}{query_id}/result/", params={"offset": offset, "limit": limit}, headers=auth)
        assert page.status_code == 200, page.text
        rows += page.json()
        if len(page.json()) < limit:
            return rows
        offset += limit


def test_parser_accepts_the_subset_and_refuses_the_rest() -> None:
    q = parse("select ITNO, itds from mitmas where STAT = '20' and deleted = false order by ITNO limit 5")
    assert (q.table, q.columns, q.order_by, q.limit) == ("MITMAS", ["ITNO", "ITDS"], "ITNO", 5)
    assert q.where == [("STAT", "20"), ("deleted", False)]
    assert parse("SELECT COUNT(*) AS n FROM MITMAS").count
    for bad in (
        "DELETE FROM MITMAS",
        "SELECT * FROM OOHEAD",
        "SELECT NOPE FROM MITMAS",
        "SELECT * FROM MITMAS WHERE STAT > '10'",
        "SELECT * FROM MITMAS; DROP TABLE MITMAS",
    ):
        with pytest.raises(QueryError):
            parse(bad)


async def test_items_balances_prices_customers(lake: tuple[httpx.AsyncClient, dict[str, str]]) -> None:
    client, auth = lake
    items = await query(client, auth, "SELECT * FROM MITMAS", limit=100)
    assert [r["ITNO"] for r in items] == [f"ITM{n:06d}" for n in range(1, 251)]
    assert all(r["deleted"] is False for r in items)
    assert {r["STAT"] for r in items if r["ITNO"] == "ITM000033"} == {"90"}
    assert (await query(client, auth, "SELECT COUNT(*) FROM MITMAS")) == [{"count": 250}]
    balances = await query(client, auth, "SELECT ITNO, STQT, ALQT, AV01 FROM MITBAL WHERE WHLO = '100'")
    assert len(balances) == 250
    assert set(balances[0]) == {"ITNO", "STQT", "ALQT", "AV01"}
    prices = await query(client, auth, "SELECT ITNO, SAPR FROM OPRBAS WHERE PRRF = 'STD' AND CUCD = 'EUR'")
    assert len(prices) == 250
    assert all(r["SAPR"] > 0 for r in prices)
    one = await query(client, auth, "SELECT CUNO, CUNM FROM OCUSMA WHERE CUNO = 'C000007'")
    assert [r["CUNO"] for r in one] == ["C000007"]


async def test_refusals_and_lifecycle(lake: tuple[httpx.AsyncClient, dict[str, str]]) -> None:
    client, auth = lake
    assert (await client.post(JOBS, content="SELECT * FROM MITMAS", headers=TEXT)).status_code == 401  # Gateway
    wrong_type = await client.post(JOBS, json={"sql": "SELECT * FROM MITMAS"}, headers=auth)
    assert wrong_type.status_code == 415
    bad = await client.post(JOBS, content="UPDATE MITMAS SET STAT = '90'", headers={**auth, **TEXT})
    assert bad.status_code == 400
    assert (await client.get(f"{JOBS}nope/status/", headers=auth)).status_code == 404
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    app = transport.app
    assert isinstance(app, FastAPI)
    app.state.ion.datalake.config = DataLakeConfig(running_s=30)
    submitted = await client.post(JOBS, content="SELECT * FROM MITMAS", headers={**auth, **TEXT})
    query_id = submitted.json()["queryId"]
    assert (await client.get(f"{JOBS}{query_id}/status/", headers=auth)).json()["status"] == "RUNNING"
    assert (await client.get(f"{JOBS}{query_id}/result/", headers=auth)).status_code == 409
    too_big = await client.get(f"{JOBS}{query_id}/result/", params={"limit": 100_001}, headers=auth)
    assert too_big.status_code == 422
    app.state.ion.datalake.config = DataLakeConfig(running_s=0, fail_next=1)
    failed = await client.post(JOBS, content="SELECT * FROM MITMAS", headers={**auth, **TEXT})
    status = await client.get(f"{JOBS}{failed.json()['queryId']}/status/", headers=auth)
    assert status.json()["status"] == "FAILED"
