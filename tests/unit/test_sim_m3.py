"""The simulated M3 MI REST API over HTTP: wire shapes (v1, v2, bulk), NOKs, authorization, and the order flow."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from simulators.ion.m3 import M3Config, M3Simulator, m3_router

pytestmark = pytest.mark.unit

BASE = "http://m3/TST/M3/m3api-rest"


def _app(sim: M3Simulator) -> FastAPI:
    app = FastAPI()
    app.include_router(m3_router(sim), prefix="/TST/M3/m3api-rest")
    return app


@pytest.fixture
def sim() -> M3Simulator:
    return M3Simulator(M3Config(today=date(2026, 11, 23)))


@pytest.fixture
async def client(sim: M3Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app(sim)), base_url=BASE) as http:
        yield http


def _rows(body: dict[str, Any]) -> list[dict[str, str]]:
    """v1 MIRecord → list of {Name: Value} (values as sent, untrimmed)."""
    return [{nv["Name"]: nv["Value"] for nv in rec["NameValue"]} for rec in body.get("MIRecord", [])]


async def _v2(client: httpx.AsyncClient, path: str, **params: str) -> dict[str, str]:
    response = await client.get(f"/v2/execute/{path}", params=params)
    assert response.status_code == 200, response.text
    records: list[dict[str, str]] = response.json()["results"][0]["records"]
    return records[0] if records else {}


# --- v1 wire format -------------------------------------------------------------------------------------------------
async def test_v1_list_with_metadata_padding_and_paging(client: httpx.AsyncClient) -> None:
    response = await client.get("/execute/CRS610MI/LstByNumber;metadata=true;maxrecs=3;returncols=CUNO,CUNM,CRLM")
    assert response.status_code == 200
    body = response.json()
    assert body["Program"] == "CRS610MI"
    assert body["Transaction"] == "LstByNumber"
    fields = body["Metadata"]["Field"]
    assert [f["@name"] for f in fields] == ["CUNO", "CUNM", "CRLM"]
    assert fields[0] == {"@name": "CUNO", "@type": "A", "@length": "10", "@description": "Customer"}
    assert fields[2]["@type"] == "N"
    rows = _rows(body)
    assert len(rows) == 3
    assert [r["CUNO"] for r in rows] == ["C000001   ", "C000002   ", "C000003   "]
    assert all(len(r["CUNM"]) == 36 for r in rows)
    assert rows[0]["CRLM"] == rows[0]["CRLM"].strip()  # numbers are not padded
    assert [rec["RowIndex"] for rec in body["MIRecord"]] == ["0", "1", "2"]

    # page on from the last key
    response = await client.get("/execute/CRS610MI/LstByNumber;maxrecs=3", params={"CUNO": "C000003"})
    body = response.json()
    assert "Metadata" not in body
    assert [r["CUNO"].rstrip() for r in _rows(body)] == ["C000003", "C000004", "C000005"]

    # maxrecs=0 is unlimited, default is 100
    assert len(_rows((await client.get("/execute/CRS610MI/LstByNumber;maxrecs=0")).json())) == 200
    assert len(_rows((await client.get("/execute/CRS610MI/LstByNumber")).json())) == 100


async def test_v1_single_field_metadata_is_an_object_and_excludempty(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/execute/CRS610MI/GetBasicData;metadata=true;returncols=CUNM", params={"CUNO": "C000001"}
    )
    body = response.json()
    assert isinstance(body["Metadata"]["Field"], dict)
    assert body["Metadata"]["Field"]["@name"] == "CUNM"

    full = (await client.get("/execute/CRS610MI/GetBasicData", params={"CUNO": "C000001"})).json()
    assert "CUA4" in _rows(full)[0]
    lean = (await client.get("/execute/CRS610MI/GetBasicData;excludempty=true", params={"CUNO": "C000001"})).json()
    assert "CUA4" not in _rows(lean)[0]
    assert "CUNM" in _rows(lean)[0]


async def test_v1_nok_is_http_200(client: httpx.AsyncClient) -> None:
    response = await client.get("/execute/CRS610MI/GetBasicData", params={"CUNO": "NOSUCH"})
    assert response.status_code == 200
    body = response.json()
    assert body["@type"] == "ServerReturnedNOK"
    assert body["@code"] == "WCU0203"
    assert body["@field"] == "CUNO"
    assert body["Message"].rstrip() == "Customer number NOSUCH does not exist"


async def test_v2_nok_is_http_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/execute/CRS610MI/GetBasicData", params={"CUNO": "NOSUCH"})
    assert response.status_code == 400
    body = response.json()
    entry = body["results"][0]
    assert entry["errorCode"] == "WCU0203"
    assert entry["errorField"] == "CUNO"
    assert entry["errorType"] == "ServerReturnedNOK"
    assert "does not exist" in entry["errorMessage"]
    assert "records" not in entry
    assert body["nrOfFailedTransactions"] == 1
    assert body["nrOfSuccessfullTransactions"] == 0
    assert body["errorCode"] == "WCU0203"


async def test_v2_records_are_trimmed(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/execute/CRS610MI/LstByNumber", params={"maxrecs": "2", "returncols": "CUNO,CUNM"})
    body = response.json()
    assert response.status_code == 200
    assert body["wasTerminated"] is False
    assert body["nrOfSuccessfullTransactions"] == 1
    assert body["results"][0]["transaction"] == "LstByNumber"
    records = body["results"][0]["records"]
    assert records[0]["CUNO"] == "C000001"
    assert set(records[0]) == {"CUNO", "CUNM"}
    assert len(records) == 2


# --- input validation -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "field", "code", "text"),
    [
        ({"CUNO": "C000001", "CUNM": "x" * 37}, "CUNM", "WIN0002", "Field CUNM exceeds 36 characters"),
        ({"CUNO": "C000001", "CUTP": "abc"}, "CUTP", "WIN0003", "numeric"),
        ({"CUNO": "C000001", "NOPE": "1"}, "NOPE", "WIN0001", "not an input field"),
        ({"CUNM": "New name"}, "CUNO", "WIN0005", "must be entered"),
    ],
)
async def test_input_validation_names_the_field(
    client: httpx.AsyncClient, params: dict[str, str], field: str, code: str, text: str
) -> None:
    body = (await client.get("/execute/CRS610MI/ChgBasicData", params=params)).json()
    assert body["@type"] == "ServerReturnedNOK"
    assert body["@field"] == field
    assert body["@code"] == code
    assert text in body["Message"]


async def test_bad_date_is_a_nok(client: httpx.AsyncClient) -> None:
    body = (await client.get("/execute/MMS200MI/LstItmByChgDate", params={"FLMD": "2026-01-01"})).json()
    assert body["@field"] == "FLMD"
    assert body["@code"] == "WIN0004"


# --- unknown transactions -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    ["CRS610MI/Upd", "CRS610MI/Get", "OIS100MI/AddHead", "OIS100MI/AddLine", "MMS200MI/LstItem", "MMS080MI/LstItemBal"],
)
async def test_unknown_transactions_are_404(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(f"/execute/{path};metadata=true")
    assert response.status_code == 404
    assert response.json()["@type"] == "TransactionNotFound"
    response = await client.get(f"/v2/execute/{path}")
    assert response.status_code == 404
    assert response.json()["results"][0]["errorType"] == "TransactionNotFound"


# --- Connect API Authorization and company --------------------------------------------------------------------------
async def test_authorization_deny_by_default_and_grants() -> None:
    sim = M3Simulator(M3Config(authorization_enabled=True))
    app = _app(sim)

    @app.middleware("http")
    async def set_user(request: Any, call_next: Any) -> Any:
        request.state.user = request.headers.get("x-user", "")
        return await call_next(request)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:

        async def call(user: str, path: str, **params: str) -> httpx.Response:
            return await http.get(f"/execute/{path}", params=params, headers={"x-user": user})

        denied = (await call("alice", "CRS610MI/GetBasicData", CUNO="C000001")).json()
        assert denied["@type"] == "ServerReturnedNOK"
        assert denied["@code"] == "SES0005"
        assert "@field" not in denied
        assert denied["Message"].rstrip() == "Not authorized to run transaction CRS610MI/GetBasicData"

        sim.grant("alice", "CRS610MI", "GetBasicData")  # exact
        assert "MIRecord" in (await call("alice", "CRS610MI/GetBasicData", CUNO="C000001")).json()
        assert "MIRecord" not in (await call("alice", "CRS610MI/LstByNumber")).json()
        assert "MIRecord" not in (await call("bob", "CRS610MI/GetBasicData", CUNO="C000001")).json()

        sim.grant("bob", "MMS200MI")  # whole program
        assert "MIRecord" in (await call("bob", "MMS200MI/GetItmBasic", ITNO="ITM000001")).json()
        assert "MIRecord" in (await call("bob", "MMS200MI/LstItmByItm", ITNO="ITM")).json()
        assert "MIRecord" not in (await call("bob", "CRS610MI/LstByNumber")).json()

        sim.grant("carol")  # everything
        assert "MIRecord" in (await call("carol", "CRS610MI/LstByNumber")).json()
        assert "MIRecord" in (await call("carol", "MRS001MI/LstPrograms")).json()

        v2 = await http.get("/v2/execute/OIS100MI/GetHead", params={"ORNO": "1"}, headers={"x-user": "bob"})
        assert v2.status_code == 400
        entry = v2.json()["results"][0]
        assert entry["errorCode"] == "SES0005"
        assert "errorField" not in entry

        # anonymous (no user set by the gateway) is denied too
        assert "MIRecord" not in (await call("", "CRS610MI/LstByNumber")).json()


async def test_authorization_off_allows_all(client: httpx.AsyncClient) -> None:
    assert (
        "MIRecord" in (await client.get("/execute/OIS100MI/GetATP", params={"ITNO": "ITM000001", "WHLO": "100"})).json()
    )


async def test_other_company_is_xau0008(client: httpx.AsyncClient) -> None:
    body = (await client.get("/execute/CRS610MI/LstByNumber;cono=200")).json()
    assert body["@code"] == "XAU0008"
    assert body["@field"] == "CONO"
    assert body["Message"].startswith("Not authorized for company 200")
    assert "MIRecord" in (await client.get("/execute/CRS610MI/LstByNumber;cono=100;divi=AAA")).json()
    response = await client.get("/v2/execute/CRS610MI/GetBasicData", params={"CUNO": "C000001", "cono": "1"})
    assert response.status_code == 400
    assert response.json()["results"][0]["errorCode"] == "XAU0008"


# --- MRS001MI -------------------------------------------------------------------------------------------------------
async def test_mrs001_describes_the_repository(client: httpx.AsyncClient) -> None:
    programs = [r["MINM"].rstrip() for r in _rows((await client.get("/execute/MRS001MI/LstPrograms")).json())]
    assert {"CRS610MI", "MMS200MI", "OIS100MI", "MRS001MI"} <= set(programs)
    trns = _rows((await client.get("/execute/MRS001MI/LstTransactions", params={"MINM": "CRS610MI"})).json())
    names = {r["TRNM"].rstrip() for r in trns}
    assert {"Add", "GetBasicData", "ChgBasicData", "LstByNumber"} <= names
    assert "Upd" not in names

    params = {"MINM": "CRS610MI", "TRNM": "Add", "TRTP": "I"}
    fields = {
        r["FLNM"].rstrip(): r for r in _rows((await client.get("/execute/MRS001MI/LstFields", params=params)).json())
    }
    assert fields["CUNM"]["TYPE"].rstrip() == "A"
    assert fields["CUNM"]["LENG"] == "36"
    assert fields["CUNM"]["MAND"].rstrip() == "1"
    assert fields["CUTM"]["MAND"].rstrip() == "1"
    assert fields["MAIL"]["LENG"] == "50"
    assert fields["MAIL"]["MAND"].rstrip() == "0"

    params["TRTP"] = "O"
    out = _rows((await client.get("/execute/MRS001MI/LstFields", params=params)).json())
    assert [r["FLNM"].rstrip() for r in out] == ["CUNO", "ERRM"]
    bad = (await client.get("/execute/MRS001MI/LstFields", params={**params, "TRTP": "X"})).json()
    assert bad["@field"] == "TRTP"


# --- customers ------------------------------------------------------------------------------------------------------
async def test_crs610_add_then_get_and_change(client: httpx.AsyncClient) -> None:
    add = {"CUTM": "C000001", "CUNM": "Acme Widgets Ltd", "CUA1": "1 Road", "MAIL": "buy@acme.example", "TOWN": "Leeds"}
    body = (await client.get("/execute/CRS610MI/Add", params=add)).json()
    cuno = _rows(body)[0]["CUNO"].rstrip()
    assert cuno == "C000201"

    got = await _v2(client, "CRS610MI/GetBasicData", CUNO=cuno)
    assert got["CUNM"] == "Acme Widgets Ltd"
    assert got["MAIL"] == "buy@acme.example"
    assert got["STAT"] == "20"

    dup = (await client.get("/execute/CRS610MI/Add", params={**add, "CUNO": cuno})).json()
    assert dup["@field"] == "CUNO"
    assert dup["@code"] == "WCU0205"

    body = (await client.get("/execute/CRS610MI/ChgBasicData", params={"CUNO": cuno, "PHNO": "+44 1234"})).json()
    assert body.get("MIRecord", []) == []
    assert (await _v2(client, "CRS610MI/GetBasicData", CUNO=cuno))["PHNO"] == "+44 1234"

    found = (await client.get("/v2/execute/CRS610MI/SearchCustomer", params={"SQRY": "acme widgets"})).json()
    assert [r["CUNO"] for r in found["results"][0]["records"]] == [cuno]


# --- items and stock ------------------------------------------------------------------------------------------------
async def test_items_balances_and_prices(client: httpx.AsyncClient, sim: M3Simulator) -> None:
    inactive = sim.inactive_items()
    assert inactive[0] == "ITM000033"
    assert (await _v2(client, "MMS200MI/GetItmBasic", ITNO=inactive[0]))["STAT"] == "90"
    assert (await _v2(client, "MMS200MI/GetItmBasic", ITNO=sim.preliminary_items()[0]))["STAT"] == "10"

    bal = await _v2(client, "MMS200MI/GetItmWhsBal", ITNO="ITM000001", WHLO="100")
    assert float(bal["AV01"]) == float(bal["STQT"]) - float(bal["ALQT"])
    atp = await _v2(client, "OIS100MI/GetATP", ITNO="ITM000001", WHLO="100")
    assert atp["AVTQ"] == bal["AV01"]

    price = await _v2(client, "OIS017MI/GetBasePrice", PRRF="STD", CUCD="EUR", FVDT="20260101", ITNO="ITM000001")
    assert float(price["SAPR"]) > 0
    line = await _v2(client, "OIS320MI/GetPriceLine", CUNO="C000001", ITNO="ITM000001")
    assert line["SAPR"] == price["SAPR"]

    changed = (
        await client.get("/v2/execute/MMS200MI/LstItmByChgDate", params={"FLMD": "20261101", "maxrecs": "0"})
    ).json()
    records = changed["results"][0]["records"]
    assert records
    assert all(r["LMDT"] >= "20261101" for r in records)


# --- the order flow -------------------------------------------------------------------------------------------------
async def test_batch_order_confirmed_and_read_back(client: httpx.AsyncClient, sim: M3Simulator) -> None:
    head = await _v2(client, "OIS100MI/AddBatchHead", CUNO="C000002", CUOR="QW-1001", ORTP="100", YREF="Jane")
    temp = head["ORNO"]
    items = sim.active_items()[:2]
    line1 = await _v2(client, "OIS100MI/AddBatchLine", ORNO=temp, ITNO=items[0], ORQT="2", SAPR="10.50", DIP1="0")
    line2 = await _v2(client, "OIS100MI/AddBatchLine", ORNO=temp, ITNO=items[1], ORQT="1", SAPR="100", DIP1="10")
    assert (line1["PONR"], line2["PONR"]) == ("1", "2")

    confirmed = await _v2(client, "OIS100MI/Confirm", ORNO=temp)
    assert confirmed["STAT"] == "90"
    orno = confirmed["ORNO"]
    assert orno == "1000000001"

    got = await _v2(client, "OIS100MI/GetHead", ORNO=orno)
    assert got["CUNO"] == "C000002"
    assert got["CUOR"] == "QW-1001"
    assert float(got["NTAM"]) == pytest.approx(2 * 10.5 + 90)

    lines = (await client.get("/v2/execute/OIS100MI/LstLine", params={"ORNO": orno})).json()["results"][0]["records"]
    assert [(r["PONR"], r["ITNO"], r["ORQT"]) for r in lines] == [("1", items[0], "2"), ("2", items[1], "1")]
    v1_line = _rows((await client.get("/execute/OIS100MI/GetLine", params={"ORNO": orno, "PONR": "2"})).json())[0]
    assert v1_line["ORQT"] == "1".ljust(16)  # OIS100MI types ORQT as A16 in Get/Lst

    heads = (await client.get("/v2/execute/OIS100MI/LstHead", params={"CUNO": "C000002"})).json()["results"][0]
    assert [h["ORNO"] for h in heads["records"] if h["CUOR"] == "QW-1001"] == [orno]

    again = (await client.get("/execute/OIS100MI/Confirm", params={"ORNO": temp})).json()
    assert again["@type"] == "ServerReturnedNOK"


async def test_inactive_item_rejects_the_batch_order(client: httpx.AsyncClient, sim: M3Simulator) -> None:
    temp = (await _v2(client, "OIS100MI/AddBatchHead", CUNO="C000003", CUOR="QW-2"))["ORNO"]
    await _v2(client, "OIS100MI/AddBatchLine", ORNO=temp, ITNO=sim.active_items()[0], ORQT="1")
    await _v2(client, "OIS100MI/AddBatchLine", ORNO=temp, ITNO=sim.inactive_items()[0], ORQT="1")
    confirmed = await _v2(client, "OIS100MI/Confirm", ORNO=temp)
    assert confirmed == {"ORNO": temp, "STAT": "15"}

    errors = _rows((await client.get("/execute/OIS100MI/LstErrMsgOrder", params={"ORNO": temp})).json())
    assert len(errors) == 1
    assert sim.inactive_items()[0] in errors[0]["MDTA"]
    assert "status 90" in errors[0]["TX60"]
    assert errors[0]["MSID"] == "WIT0205"
    assert sim.store.orders == {}


async def test_unknown_customer_and_empty_order_are_rejected_at_confirm(client: httpx.AsyncClient) -> None:
    temp = (await _v2(client, "OIS100MI/AddBatchHead", CUNO="NOBODY"))["ORNO"]
    assert (await _v2(client, "OIS100MI/Confirm", ORNO=temp))["STAT"] == "15"
    errors = (await client.get("/v2/execute/OIS100MI/LstErrMsgOrder", params={"ORNO": temp})).json()
    msids = {r["MSID"] for r in errors["results"][0]["records"]}
    assert msids == {"WCU0203", "WOR0220"}


async def test_bulk_with_one_failing_transaction(client: httpx.AsyncClient, sim: M3Simulator) -> None:
    temp = (await _v2(client, "OIS100MI/AddBatchHead", CUNO="C000004"))["ORNO"]
    item = sim.active_items()[5]
    body = {
        "program": "OIS100MI",
        "cono": 100,
        "divi": "AAA",
        "transactions": [
            {
                "transaction": "AddBatchLine",
                "record": {"ORNO": temp, "ITNO": item, "ORQT": 2},
                "selectedColumns": ["PONR"],
            },
            {"transaction": "AddBatchLine", "record": {"ORNO": "T999999999", "ITNO": item, "ORQT": "1"}},
            {"transaction": "AddBatchLine", "record": {"ORNO": temp, "ITNO": item, "ORQT": "3"}},
            {"transaction": "Confirm", "record": {"ORNO": temp}},
        ],
    }
    response = await client.post("/v2/execute", json=body)
    assert response.status_code == 200
    result = response.json()
    assert result["nrOfSuccessfullTransactions"] == 3
    assert result["nrOfFailedTransactions"] == 1
    entries = result["results"]
    assert [e["transaction"] for e in entries] == ["AddBatchLine", "AddBatchLine", "AddBatchLine", "Confirm"]
    assert entries[0]["records"] == [{"PONR": "1"}]
    assert entries[1]["errorField"] == "ORNO"
    assert entries[1]["errorType"] == "ServerReturnedNOK"
    assert "records" not in entries[1]
    assert entries[2]["records"][0]["PONR"] == "2"
    assert entries[3]["records"][0]["STAT"] == "90"
    assert sim.stats["OIS100MI/AddBatchLine"] == 3

    bad = await client.post("/v2/execute/", json={"program": "OIS100MI"})
    assert bad.status_code == 400


# --- data -----------------------------------------------------------------------------------------------------------
def test_same_seed_same_data() -> None:
    def snapshot(seed: int) -> list[Any]:
        sim = M3Simulator(M3Config(seed=seed, customers=20, items=50, today=date(2026, 1, 1)))
        customers = sim.execute("u", "CRS610MI", "LstByNumber", {}, cono=None, divi=None, maxrecs=0, returncols=None)
        items = sim.execute(
            "u", "MMS200MI", "LstItmByItm", {"ITNO": "A"}, cono=None, divi=None, maxrecs=0, returncols=None
        )
        bal = sim.execute(
            "u",
            "MMS200MI",
            "GetItmWhsBal",
            {"ITNO": "ITM000007", "WHLO": "200"},
            cono=None,
            divi=None,
            maxrecs=0,
            returncols=None,
        )
        return [customers.records, items.records, bal.records]

    assert snapshot(7) == snapshot(7)
    assert snapshot(7) != snapshot(8)


def test_hundred_thousand_items() -> None:
    sim = M3Simulator(M3Config(items=100_000))
    result = sim.execute(
        "u", "MMS200MI", "GetItmBasic", {"ITNO": "ITM100000"}, cono=100, divi="AAA", maxrecs=0, returncols=None
    )
    assert result.ok
    assert result.records[0]["ITNO"] == "ITM100000"
    page = sim.execute(
        "u", "MMS200MI", "LstItmByItm", {"ITNO": "ITM099998"}, cono=None, divi=None, maxrecs=10, returncols=["ITNO"]
    )
    assert [r["ITNO"] for r in page.records] == ["ITM099998", "ITM099999", "ITM100000"]
    assert len(sim.inactive_items()) == 100_000 // 33


async def test_v2_positionkey_paging_and_extendedresult(client: httpx.AsyncClient) -> None:
    params = {"maxrecs": "150", "returncols": "CUNO", "extendedresult": "true", "CUNO": "C000001"}
    first = (await client.get("/v2/execute/CRS610MI/LstByNumber", params=params)).json()["results"][0]
    assert len(first["records"]) == 150
    assert first["parameters"] == {"CUNO": "C000001"}
    key = first["positionKey"]
    second = await client.get("/v2/execute/CRS610MI/LstByNumber", params=params, headers={"positionkey": key})
    rest = second.json()["results"][0]
    assert [r["CUNO"] for r in rest["records"]] == [f"C{n:06d}" for n in range(151, 201)]
    assert "positionKey" not in rest
