"""The QuoteWerks simulator: documents in real column names, scenarios, write-back, webhooks like the real ones."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from pydantic import SecretStr

from shared.quotewerks import QuoteWerksClient, QuoteWerksError
from simulators.ion.m3 import M3Config, M3Simulator
from simulators.quotewerks import SCENARIOS, QwSim, QwSimConfig, RetryPolicy, WebhookSpec, create_app
from simulators.quotewerks.__main__ import build_config
from simulators.quotewerks.webhooks import render

pytestmark = pytest.mark.unit

KEY = "test-key"
AUTH = {"X-API-Key": KEY}
HOOK_URL = "http://receiver.test/hooks/quotewerks"
SECRET_HEADER = "X-QW-Webhook-Secret"
SECRET = "s3cr3t-shared"
FAST_RETRY = RetryPolicy(attempts=3, initial_delay_s=0.01, factor=2.0, timeout_s=2)


class Receiver:
    """A webhook receiver app: records every request; answers 500 to the first `fail_first` ones."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.requests: list[dict[str, Any]] = []
        self.app = FastAPI()

        @self.app.api_route("/hooks/{name}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
        async def hook(name: str, request: Request) -> Response:
            self.requests.append(
                {"method": request.method, "path": name, "headers": request.headers, "body": await request.body()}
            )
            return Response(status_code=500 if len(self.requests) <= self.fail_first else 204)

    @property
    def transport(self) -> httpx.AsyncBaseTransport:
        return httpx.ASGITransport(app=self.app)


def hook(**overrides: Any) -> WebhookSpec:
    fields: dict[str, Any] = {
        "Name": "quote-ingest",
        "Event": "QuoteValet.Accepted",
        "URL": HOOK_URL,
        "Headers": {SECRET_HEADER: SECRET},
    }
    return WebhookSpec.model_validate({**fields, **overrides})


@asynccontextmanager
async def simulator(
    *webhooks: WebhookSpec, transport: httpx.AsyncBaseTransport | None = None, **config: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, QwSim]]:
    app = create_app(
        QwSimConfig(api_key=KEY, retry=FAST_RETRY, webhooks=list(webhooks), **config),
        transport=transport,
    )
    sim: QwSim = app.state.qw
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://qw.test") as client:
            yield client, sim
    finally:
        await sim.aclose()


async def drained(sim: QwSim) -> None:
    async with asyncio.timeout(10):
        await sim.webhooks.drain()


async def doc(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/documents/{SCENARIOS[name]}", headers=AUTH)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def products(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [row for row in document["DocumentItems"] if row["LineType"] == 1]


# --- API ---------------------------------------------------------------------------------------------------------
async def test_api_key_required() -> None:
    async with simulator() as (client, _):
        for headers in ({}, {"X-API-Key": "wrong"}):
            response = await client.get(f"/api/v1/documents/{SCENARIOS['ordinary']}", headers=headers)
            assert response.status_code == 401
            assert response.json() == {"error": "unauthorized"}
        assert (await client.get("/api/v1/webhooks")).status_code == 401
        assert (await client.get("/healthz")).json()["status"] == "ok"
        assert (await client.get("/api/v1/customers/C000001", headers=AUTH)).status_code == 200


async def test_document_read_in_real_column_names() -> None:
    async with simulator() as (client, _):
        document = await doc(client, "ordinary")
        header = document["DocumentHeader"]
        for column in (
            "ID", "DocNo", "DocType", "DocName", "DocStatus", "DocDate", "SalesRep", "ShipVia", "Terms",
            "CustomerPONumber", "SoldToCompany", "SoldToAddress1", "SoldToEmail", "SoldToCMAccountNo", "ShipToCity",
            "BillToCompany", "SubTotal", "TotalTax", "ShippingAmount", "GrandTotal", "AlternateCurrencyIdentifier",
            "CustomText01", "CustomText10", "LastModified",
        ):  # fmt: skip
            assert column in header, column
        assert header["DocNo"] == "AAAQ1001"
        assert header["DocType"] == "QUOTE"
        assert header["DocStatus"] in ("Open", "Quoted")
        assert header["SoldToCMAccountNo"] == "C000001"
        assert header["LastModified"].endswith("Z")
        items = document["DocumentItems"]
        assert {row["DocID"] for row in items} == {header["ID"]}
        assert [row["SortOrder"] for row in items] == list(range(1, len(items) + 1))
        assert set(items[0]) >= {
            "ID", "DocID", "SortOrder", "LineType", "LineAttributes", "ManufacturerPartNumber", "Description",
            "QtyTotal", "UnitPrice", "UnitList", "UnitCost", "DiscountPercent", "UnitOfMeasure", "Vendor",
            "Manufacturer", "ExtendedPrice",
        }  # fmt: skip
        lines = products(document)
        assert len(lines) == 3
        assert [row["LineType"] for row in items].count(2) == 1  # comment
        assert [row["LineType"] for row in items].count(4) == 1  # subtotal
        assert any(row["DiscountPercent"] > 0 and row["UnitPrice"] < row["UnitList"] for row in lines)
        sub_total = round(sum(row["ExtendedPrice"] for row in lines), 2)
        assert header["SubTotal"] == sub_total
        assert header["GrandTotal"] == round(sub_total + header["TotalTax"] + header["ShippingAmount"], 2)
        assert (await client.get("/api/v1/documents/AAAQ9999", headers=AUTH)).status_code == 404


async def test_scenarios_line_up_with_the_m3_simulator() -> None:
    m3 = M3Simulator(M3Config(seed=42))
    async with simulator() as (client, sim):
        assert sim.scenarios == SCENARIOS
        header = (await doc(client, "unknown-customer"))["DocumentHeader"]
        assert header["SoldToCMAccountNo"] == ""
        assert header["SoldToCompany"] not in {c["CUNM"] for c in m3.store.customers.values()}
        assert header["SoldToAddress1"]
        assert header["SoldToCity"]
        assert "@" in header["SoldToEmail"]

        parts = [row["ManufacturerPartNumber"] for row in products(await doc(client, "unknown-item"))]
        assert "NOPE-123" in parts
        assert m3.store.item("NOPE-123") is None

        parts = [row["ManufacturerPartNumber"] for row in products(await doc(client, "inactive-item"))]
        assert "ITM000033" in parts
        assert m3.store.item("ITM000033") is not None
        assert m3.store.item("ITM000033").stat == "90"  # type: ignore[union-attr]

        ordinary = await doc(client, "ordinary")
        for row in products(ordinary):
            item = m3.store.item(row["ManufacturerPartNumber"])
            assert item is not None
            assert item.stat == "20"
        assert ordinary["DocumentHeader"]["SoldToCompany"] == m3.store.customers["C000001"]["CUNM"]

        header = (await doc(client, "long-names"))["DocumentHeader"]
        assert len(header["SoldToCompany"]) == 60
        assert len(header["SoldToAddress1"]) == 50
        assert len(header["ShipToAddress1"]) > 36

        options = await doc(client, "options-group")
        attributes = [row["LineAttributes"] for row in options["DocumentItems"]]
        assert any(a & 16 and not a & 256 for a in attributes)  # an option, not selected
        assert any(row["LineType"] == 8 for row in options["DocumentItems"])
        assert sum(1 for a in attributes if a & 8) == 2  # group members
        unselected = [row for row in products(options) if row["LineAttributes"] == 16]
        included = sum(row["ExtendedPrice"] for row in products(options)) - unselected[0]["ExtendedPrice"]
        assert options["DocumentHeader"]["SubTotal"] == round(included, 2)

        assert len(products(await doc(client, "lines-20"))) == 20
        assert len(products(await doc(client, "lines-50"))) == 50

        listed = (await client.get("/api/v1/documents", headers=AUTH)).json()["documents"]
        assert {"UPS Ground", "FedEx Priority", "Will Call", "DHL Express"} <= {d["ShipVia"] for d in listed}


async def test_list_documents_filters() -> None:
    async with simulator() as (client, _):
        url = "/api/v1/documents"
        quotes = (await client.get(url, params={"DocType": "QUOTE"}, headers=AUTH)).json()["documents"]
        assert quotes
        assert all(d["DocType"] == "QUOTE" for d in quotes)
        assert "DocumentItems" not in quotes[0]
        orders = (await client.get(url, params={"DocType": "ORDER"}, headers=AUTH)).json()["documents"]
        assert [d["DocNo"] for d in orders] == [SCENARIOS["order"]]
        accepted = (await client.get(url, params={"DocStatus": "Accepted"}, headers=AUTH)).json()["documents"]
        assert [d["DocNo"] for d in accepted] == [SCENARIOS["already-accepted"]]

        mark = (await client.post(f"/api/v1/documents/{SCENARIOS['ordinary']}/approve", headers=AUTH)).json()
        since = mark["DocumentHeader"]["LastModified"]
        recent = await client.get(url, params={"DocStatus": "Accepted", "modified_since": since}, headers=AUTH)
        assert [d["DocNo"] for d in recent.json()["documents"]] == [SCENARIOS["ordinary"]]
        bad = await client.get(url, params={"modified_since": "yesterday"}, headers=AUTH)
        assert bad.status_code == 400
        assert bad.json()["field"] == "modified_since"


async def test_patch_writes_back_order_number_and_status() -> None:
    async with simulator() as (client, _):
        url = f"/api/v1/documents/{SCENARIOS['ordinary']}"
        before = (await client.get(url, headers=AUTH)).json()["DocumentHeader"]
        fields = {"CustomText01": "1000000001", "DocStatus": "Ordered in M3"}
        response = await client.patch(url, json={"fields": fields}, headers=AUTH)
        assert response.status_code == 200, response.text
        after = (await client.get(url, headers=AUTH)).json()["DocumentHeader"]
        assert after["CustomText01"] == "1000000001"
        assert after["DocStatus"] == "Ordered in M3"
        assert after["LastModified"] > before["LastModified"]

        unknown = await client.patch(url, json={"fields": {"M3OrderNumber": "1"}}, headers=AUTH)
        assert unknown.status_code == 400
        assert unknown.json()["field"] == "M3OrderNumber"
        assert "M3OrderNumber" in unknown.json()["error"]
        read_only = await client.patch(url, json={"fields": {"DocNo": "X"}}, headers=AUTH)
        assert (read_only.status_code, read_only.json()["field"]) == (400, "DocNo")
        wrong_type = await client.patch(url, json={"fields": {"GrandTotal": "lots"}}, headers=AUTH)
        assert (wrong_type.status_code, wrong_type.json()["field"]) == (400, "GrandTotal")
        assert (await client.patch(url, json={"fields": {}}, headers=AUTH)).status_code == 422
        missing = await client.patch("/api/v1/documents/NOPE", json={"fields": {"DocStatus": "x"}}, headers=AUTH)
        assert missing.status_code == 404


# --- webhooks ----------------------------------------------------------------------------------------------------
async def test_approve_fires_the_webhook_with_secret_header_and_thin_body() -> None:
    receiver = Receiver()
    async with simulator(hook(), transport=receiver.transport, tenant_account_number="QW-777") as (client, sim):
        doc_no = SCENARIOS["ordinary"]
        response = await client.post(f"/api/v1/documents/{doc_no}/approve", headers=AUTH)
        assert response.status_code == 200
        header = response.json()["DocumentHeader"]
        assert header["DocStatus"] == "Accepted"
        assert response.json()["webhooks"] == 1
        await drained(sim)

        assert len(receiver.requests) == 1
        request = receiver.requests[0]
        assert request["method"] == "POST"
        assert request["headers"][SECRET_HEADER] == SECRET
        assert request["headers"]["content-type"] == "application/json"
        assert "signature" not in " ".join(request["headers"].keys()).lower()
        assert json.loads(request["body"]) == {
            "event": "QuoteValet.Accepted",
            "tenant": "QW-777",
            "DocNo": doc_no,
            "DocID": str(header["ID"]),
        }
        log = (await client.get("/api/v1/webhooks/1/deliveries", headers=AUTH)).json()["deliveries"]
        assert [(e["Event"], e["StatusCode"], e["Attempt"], e["Ok"]) for e in log] == [
            ("QuoteValet.Accepted", 204, 1, True)
        ]
        stats = (await client.get("/__admin/stats")).json()
        assert stats["deliveries"]["ok"] == 1
        assert stats["deliveries"]["failed"] == 0


async def test_retries_on_500_then_success_in_the_delivery_log() -> None:
    receiver = Receiver(fail_first=2)
    async with simulator(hook(), transport=receiver.transport) as (client, sim):
        await client.post(f"/api/v1/documents/{SCENARIOS['ordinary']}/approve", headers=AUTH)
        await drained(sim)
        assert len(receiver.requests) == 3
        assert len({r["body"] for r in receiver.requests}) == 1  # the same request each time
        log = (await client.get("/api/v1/webhooks/1/deliveries", headers=AUTH)).json()["deliveries"]
        assert [(e["Attempt"], e["StatusCode"], e["Ok"]) for e in log] == [
            (1, 500, False),
            (2, 500, False),
            (3, 204, True),
        ]
        stats = (await client.get("/__admin/stats")).json()["deliveries"]
        assert (stats["ok"], stats["failed"], stats["gave_up"]) == (1, 2, 0)


async def test_connection_errors_are_retried_then_given_up() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with simulator(hook(), transport=httpx.MockTransport(refuse)) as (client, sim):
        await client.post(f"/api/v1/documents/{SCENARIOS['ordinary']}/approve", headers=AUTH)
        await drained(sim)
        log = (await client.get("/api/v1/webhooks/1/deliveries", headers=AUTH)).json()["deliveries"]
        assert [e["Attempt"] for e in log] == [1, 2, 3]
        assert all(e["StatusCode"] is None and "ConnectError" in e["Error"] for e in log)
        assert sim.webhooks.stats.gave_up == 1


async def test_disabled_webhook_does_not_fire() -> None:
    receiver = Receiver()
    async with simulator(hook(Enabled=False), transport=receiver.transport) as (client, sim):
        response = await client.post(f"/api/v1/documents/{SCENARIOS['ordinary']}/approve", headers=AUTH)
        assert response.json()["webhooks"] == 0
        await drained(sim)
        assert receiver.requests == []
        assert (await client.get("/api/v1/webhooks/1/deliveries", headers=AUTH)).json()["deliveries"] == []


async def test_macro_values_are_json_escaped() -> None:
    receiver = Receiver()
    body = '{"name": "{{Document.DocName}}", "company": "{{Customer.Company}}", "status": "{{Document.DocStatus}}"}'
    async with simulator(hook(Body=body), transport=receiver.transport) as (client, sim):
        document = await doc(client, "json-escape")
        name = document["DocumentHeader"]["DocName"]
        assert '"' in name
        assert "\\" in name
        await client.post(f"/api/v1/documents/{SCENARIOS['json-escape']}/approve", headers=AUTH)
        await drained(sim)
        received = json.loads(receiver.requests[0]["body"])
        assert received == {
            "name": name,
            "company": document["DocumentHeader"]["SoldToCompany"],
            "status": "Accepted",
        }


def test_render_escapes_by_content() -> None:
    values = {"Document.DocName": 'a "b" <c> & d/e'}
    assert render("{{Document.DocName}}", values, escape="json") == 'a \\"b\\" <c> & d/e'
    assert render("<n>{{Document.DocName}}</n>", values, escape="xml") == "<n>a &quot;b&quot; &lt;c&gt; &amp; d/e</n>"
    assert render("/x?n={{ Document.DocName }}", values, escape="url") == "/x?n=a%20%22b%22%20%3Cc%3E%20%26%20d%2Fe"
    assert render("[{{Unknown.Macro}}]", values) == "[]"


async def test_wildcards_status_and_customer_events() -> None:
    receiver = Receiver()
    werks_any = hook(Event="QuoteWerks.ANY", URL="http://receiver.test/hooks/werks", Body="{{System.EventFullName}}")
    valet_any = hook(Event="QuoteValet.ANY", URL="http://receiver.test/hooks/valet", Body="{{System.EventName}}")
    async with simulator(werks_any, valet_any, transport=receiver.transport) as (client, sim):
        url = f"/api/v1/documents/{SCENARIOS['ordinary']}/status"
        response = await client.post(url, json={"DocStatus": "3-Manager Approved"}, headers=AUTH)
        assert response.json()["DocumentHeader"]["DocStatus"] == "3-Manager Approved"
        customer = {"Company": "Brightwater Robotics LLC", "City": "Austin", "Email": "p@b.example.com"}
        created = await client.put("/api/v1/customers/C900001", json=customer, headers=AUTH)
        assert created.status_code == 201
        assert (await client.put("/api/v1/customers/C900001", json=customer, headers=AUTH)).status_code == 200
        await client.post(f"/api/v1/documents/{SCENARIOS['ordinary']}/approve", headers=AUTH)
        await drained(sim)
        seen = sorted((r["path"], r["body"].decode()) for r in receiver.requests)
        assert seen == [
            ("valet", "Accepted"),
            ("werks", "QuoteWerks.CustomerChanged"),
            ("werks", "QuoteWerks.CustomerChanged"),
            ("werks", "QuoteWerks.DocumentStatusChanged"),
        ]
        assert (await client.post(url, json={"DocStatus": ""}, headers=AUTH)).status_code == 422


async def test_webhook_crud_and_validation() -> None:
    async with simulator() as (client, _):
        url = "/api/v1/webhooks"
        created = await client.post(url, json=hook().model_dump(), headers=AUTH)
        assert created.status_code == 201
        webhook = created.json()
        assert webhook["Event"] == "QuoteValet.Accepted"
        assert webhook["Headers"] == {SECRET_HEADER: SECRET}
        assert "{{System.EventFullName}}" in webhook["Body"]
        replaced = await client.put(f"{url}/{webhook['ID']}", json=hook(Method="PUT").model_dump(), headers=AUTH)
        assert replaced.json()["Method"] == "PUT"
        assert len((await client.get(url, headers=AUTH)).json()["webhooks"]) == 1
        for bad in ({"Event": "Accepted"}, {"Method": "TRACE"}, {"URL": "ftp://x"}, {"Headers": {"X-A": "a\r\nb"}}):
            response = await client.post(url, json={**hook().model_dump(), **bad}, headers=AUTH)
            assert response.status_code == 422, bad
        assert (await client.delete(f"{url}/{webhook['ID']}", headers=AUTH)).status_code == 204
        assert (await client.delete(f"{url}/{webhook['ID']}", headers=AUTH)).status_code == 404
        assert (await client.get(f"{url}/{webhook['ID']}/deliveries", headers=AUTH)).status_code == 404


async def test_products_are_written_in_batches_through_the_client_all_or_none() -> None:
    async with simulator() as (http, sim):
        client = QuoteWerksClient("http://qw.test", SecretStr(KEY), http=http)
        body = {"Description": "Widget", "UnitOfMeasure": "EA", "Price": 10.5, "Active": True, "Availability": 3}
        created = await client.put_products({"ITM000001": body, "NEW-1": body, "NEW-2": {**body, "Price": 2.0}})
        assert created == {"NEW-1", "NEW-2"}
        assert sim.store.products["NEW-2"]["Price"] == 2.0
        assert sim.store.products["ITM000001"]["Availability"] == 3
        with pytest.raises(QuoteWerksError, match="422") as refused:
            await client.put_products({"NEW-3": body, "NEW-4": {**body, "Price": -1}})
        assert not refused.value.retryable
        assert "NEW-3" not in sim.store.products  # all or none
        duplicate = await http.put("/api/v1/products", headers=AUTH, json={"products": [
            {**body, "ManufacturerPartNumber": "NEW-5"}, {**body, "ManufacturerPartNumber": "NEW-5"},
        ]})  # fmt: skip
        assert duplicate.status_code == 400


async def test_products_customers_and_admin_reset() -> None:
    async with simulator() as (client, _):
        product = (await client.get("/api/v1/products/ITM000033", headers=AUTH)).json()
        assert product["Active"] is True  # QuoteWerks does not know M3 made it inactive
        body = {"Description": "Widget", "UnitOfMeasure": "EA", "Price": 10.5, "Cost": 4}
        assert (await client.put("/api/v1/products/NEW-1", json=body, headers=AUTH)).status_code == 201
        assert (await client.get("/api/v1/products/NEW-1", headers=AUTH)).json()["Price"] == 10.5
        assert (await client.put("/api/v1/products/NEW-2", json={"Price": 1}, headers=AUTH)).status_code == 422
        assert (await client.get("/api/v1/products/NOPE-123", headers=AUTH)).status_code == 404
        customers = (await client.get("/api/v1/customers", headers=AUTH)).json()["customers"]
        assert customers[0]["CMAccountNo"] == "C000001"
        mismatch = {"Company": "X", "CMAccountNo": "C000002"}
        assert (await client.put("/api/v1/customers/C000001", json=mismatch, headers=AUTH)).status_code == 400

        # Conditional writes: If-Match the LastModified as read, If-None-Match * to create only.
        seen = (await client.get("/api/v1/customers/C000001", headers=AUTH)).json()
        body = {"Company": "Renamed Ltd"}
        first = await client.put(
            "/api/v1/customers/C000001", json=body, headers={**AUTH, "If-Match": seen["LastModified"]}
        )
        assert first.status_code == 200
        stale = await client.put(
            "/api/v1/customers/C000001", json=body, headers={**AUTH, "If-Match": seen["LastModified"]}
        )
        assert stale.status_code == 412
        assert stale.json()["LastModified"] == first.json()["LastModified"]
        exists = await client.put("/api/v1/customers/C000001", json=body, headers={**AUTH, "If-None-Match": "*"})
        assert exists.status_code == 412
        fresh = await client.put("/api/v1/customers/C900002", json=body, headers={**AUTH, "If-None-Match": "*"})
        assert fresh.status_code == 201

        await client.post(f"/api/v1/documents/{SCENARIOS['ordinary']}/approve", headers=AUTH)
        stats = (await client.post("/__admin/reset")).json()
        assert stats["documents"] >= len(SCENARIOS)
        assert (await doc(client, "ordinary"))["DocumentHeader"]["DocStatus"] == "Quoted"
        assert (await client.get("/api/v1/products/NEW-1", headers=AUTH)).status_code == 404


def test_seed_is_deterministic() -> None:
    one = create_app(QwSimConfig(today=None)).state.qw.store
    two = create_app(QwSimConfig(today=None)).state.qw.store
    assert one.documents == two.documents
    assert one.items == two.items


def test_command_line_registers_the_quote_ingest_webhook() -> None:
    args = argparse.Namespace(
        config=None,
        api_key="k1",
        webhook_url="http://127.0.0.1:8100/webhooks/quotewerks",
        webhook_secret_header="X-Hook-Secret",
        webhook_secret="abc",
        webhook_event=None,
    )
    config = build_config(args)
    assert config.api_key.get_secret_value() == "k1"
    assert "k1" not in repr(config)
    [spec] = config.webhooks
    assert (spec.Event, spec.URL, spec.Headers) == ("QuoteValet.Accepted", args.webhook_url, {"X-Hook-Secret": "abc"})
    args.webhook_event = ["QuoteValet.Accepted", "QuoteWerks.CustomerChanged"]
    approvals, customers = build_config(args).webhooks
    assert (approvals.Event, customers.Event) == ("QuoteValet.Accepted", "QuoteWerks.CustomerChanged")
    assert "{{Customer.CMAccountNo}}" in customers.Body
    assert "{{Document.DocNo}}" in approvals.Body
