"""The ION simulator publishing BODs: admin edits and MI changes → BODs delivered as ION does (IMS v3 multipart
messages, read back here with bod-listener's own IMS reader), in order, with retries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from services.bod_listener.app import IMS_DOCUMENTS
from services.bod_listener.bods import parse_bod
from services.bod_listener.ims import ImsConfig, ParameterRequest, codec_of, read_message, to_utf8
from shared import contracts
from simulators.ion.app import create_app
from simulators.ion.config import IonSimConfig, ThrottlePolicy

pytestmark = pytest.mark.unit

BASE = "http://ion.test"
TENANT = "M3BRIDGE_TST"
M3 = f"/{TENANT}/M3/m3api-rest"
TARGET = "http://receiver.test/ims"
SECRET = {"X-Bod-Secret": "s3cret"}
IMS = ImsConfig(accepted_documents=tuple(IMS_DOCUMENTS))


@dataclass
class Receiver:
    """A tiny IMS end point: reads every message (the BOD XML and its ParameterRequest); answers the queued statuses
    first, then 202. `/raw` takes bare XML."""

    statuses: list[int] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)  # headers, the BOD XML
    parameters: list[ParameterRequest] = field(default_factory=list)
    accepted: list[bytes] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        def answer(headers: dict[str, str], xml: bytes) -> Response:
            self.requests.append((headers, xml))
            status = self.statuses.pop(0) if self.statuses else 202
            if status == 202:
                self.accepted.append(xml)
            return Response(status_code=status)

        @app.post("/ims/v3/multipartMessage")
        async def multipart_message(request: Request) -> Response:
            message = read_message(request.headers["content-type"], await request.body(), IMS)
            self.parameters.append(message.parameters)
            return answer(dict(request.headers), to_utf8(message.payload, codec_of(message.parameters.character_set)))

        @app.post("/raw")
        async def raw(request: Request) -> Response:
            return answer(dict(request.headers), await request.body())

        return app


@dataclass
class Rig:
    client: httpx.AsyncClient
    receiver: Receiver
    app: FastAPI

    async def drain(self) -> None:
        await self.app.state.ion.bods.emitter.drain()


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    receiver = Receiver()
    config = IonSimConfig(
        throttle=ThrottlePolicy(enabled=False),
        m3={"customers": 20, "items": 100, "today": "2026-11-23"},
        bod_target_url=TARGET,
        bod_headers=SECRET,
        bod_retry_attempts=3,
        bod_retry_backoff_s=0.001,
    )
    app = create_app(config, bod_transport=httpx.ASGITransport(app=receiver.app()))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        yield Rig(client, receiver, app)
    await app.state.ion.bods.emitter.aclose()


async def _token(client: httpx.AsyncClient, config: IonSimConfig) -> str:
    response = await client.post(
        f"/{TENANT}/as/token.oauth2",
        auth=(config.client_id, config.client_secret.get_secret_value()),
        data={"grant_type": "password", "username": config.saak, "password": config.sask.get_secret_value()},
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def test_admin_item_edit_sends_one_sync_item_master(rig: Rig) -> None:
    response = await rig.client.post("/__admin/m3/items/ITM000001", json={"ITDS": "Renamed bolt", "STAT": "90"})
    assert response.status_code == 200, response.text
    assert response.json()["ITDS"] == "Renamed bolt"
    await rig.drain()

    [(headers, body)] = rig.receiver.requests
    assert headers["content-type"].startswith("multipart/form-data; boundary=")
    assert (headers["x-bod-secret"], headers["x-tenantid"]) == ("s3cret", TENANT)
    [parameters] = rig.receiver.parameters
    assert (parameters.document_name, parameters.encoding, parameters.character_set) == (
        "Sync.ItemMaster", "NONE", "UTF-8"
    )  # fmt: skip
    assert (parameters.from_logical_id, parameters.accounting_entity) == ("lid://infor.m3.m3", "100_AAA")
    parsed = parse_bod(body)
    assert (parsed.verb, parsed.noun, parsed.document_id) == ("Sync", "ItemMaster", "ITM000001")
    assert len(parsed.bod_id) == 36  # a UUID, as M3 sends
    payload = parsed.events[0].payload
    assert isinstance(payload, contracts.ItemChanged)
    assert (payload.description, payload.status, payload.action) == ("Renamed bolt", "90", "change")

    stats = (await rig.client.get("/__admin/bods")).json()
    assert (stats["delivered"], stats["failed"], stats["pending"]) == (1, 0, 0)
    assert stats["last_bod_ids"] == [parsed.bod_id]
    [logged] = stats["last_deliveries"]
    assert (logged["document"], logged["message_id"], logged["encoding"]) == (
        "Sync.ItemMaster", parameters.message_id, "NONE"
    )  # fmt: skip
    assert (logged["result"], logged["answers"]) == ("delivered", ["202"])


async def test_payloads_are_sent_in_each_configured_encoding_in_turn(rig: Rig) -> None:
    for name in ("One", "Two", "Three"):
        await rig.client.post("/__admin/m3/items/ITM000006", json={"ITDS": name})
    await rig.drain()
    assert [p.encoding for p in rig.receiver.parameters] == ["NONE", "BASE64", "NONE"]
    descriptions = [parse_bod(body).events[0].payload.description for body in rig.receiver.accepted]  # type: ignore[attr-defined]
    assert descriptions == ["One", "Two", "Three"]


async def test_the_edit_is_visible_to_mi_reads(rig: Rig) -> None:
    config: IonSimConfig = rig.app.state.ion.config
    await rig.client.post("/__admin/m3/items/ITM000002", json={"ITDS": "Seen by MI"})
    token = await _token(rig.client, config)
    response = await rig.client.get(
        f"{M3}/execute/MMS200MI/GetItmBasic",
        params={"ITNO": "ITM000002"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200
    values = {nv["Name"]: nv["Value"] for nv in response.json()["MIRecord"][0]["NameValue"]}
    assert values["ITDS"].rstrip() == "Seen by MI"


async def test_two_edits_of_one_item_arrive_in_order_with_increasing_variation(rig: Rig) -> None:
    rig.receiver.statuses = [503]  # the first one needs a retry: the second must still come after it
    await rig.client.post("/__admin/m3/items/ITM000003", json={"ITDS": "First"})
    await rig.client.post("/__admin/m3/items/ITM000003", json={"ITDS": "Second"})
    await rig.drain()

    parsed = [parse_bod(body) for body in rig.receiver.accepted]
    descriptions = [p.events[0].payload.description for p in parsed]  # type: ignore[attr-defined]
    assert descriptions == ["First", "Second"]
    assert parsed[0].variation < parsed[1].variation


async def test_retries_after_500s_then_delivers(rig: Rig) -> None:
    rig.receiver.statuses = [500, 500]
    response = await rig.client.post("/__admin/m3/prices/ITM000004", json={"SAPR": "12.50"})
    assert response.status_code == 200, response.text
    await rig.drain()

    assert len(rig.receiver.requests) == 3
    assert len({p.message_id for p in rig.receiver.parameters}) == 1  # a redelivery is the same message
    [body] = rig.receiver.accepted
    event = parse_bod(body).events[0]
    assert isinstance(event.payload, contracts.PriceChanged)
    assert (event.key, event.payload.sales_price, event.payload.price_list) == ("ITM000004", 12.5, "STD")
    stats = (await rig.client.get("/__admin/bods")).json()
    assert (stats["delivered"], stats["failed"], stats["retries"]) == (1, 0, 2)


async def test_gives_up_after_the_configured_attempts_and_any_non_2xx_is_retried(rig: Rig) -> None:
    rig.receiver.statuses = [500, 500, 500]
    await rig.client.post("/__admin/m3/customers/C000001", json={"CUNM": "Gone Ltd"})
    await rig.drain()
    assert len(rig.receiver.requests) == 3  # bod_retry_attempts

    rig.receiver.statuses = [401, 412, 400]
    await rig.client.post("/__admin/m3/customers/C000002", json={"CUNM": "Wrong secret Ltd"})
    await rig.drain()
    assert len(rig.receiver.requests) == 6
    stats = (await rig.client.get("/__admin/bods")).json()
    assert (stats["delivered"], stats["failed"]) == (0, 2)
    assert [f["problem"] for f in stats["last_failed"]] == ["HTTP 500", "HTTP 400"]
    assert stats["last_deliveries"][-1]["answers"] == ["HTTP 401", "HTTP 412", "HTTP 400"]


async def test_balance_and_customer_edits(rig: Rig) -> None:
    response = await rig.client.post("/__admin/m3/balances/200/ITM000005", json={"STQT": "12", "ALQT": "2"})
    assert response.status_code == 200, response.text
    response = await rig.client.post("/__admin/m3/customers/C000003", json={"CUNM": "Renamed Customer AB"})
    assert response.status_code == 200, response.text
    await rig.drain()

    inventory, customer = (parse_bod(body).events[0] for body in rig.receiver.accepted)
    assert isinstance(inventory.payload, contracts.InventoryChanged)
    assert (inventory.key, inventory.payload.warehouse) == ("ITM000005", "200")
    assert (inventory.payload.on_hand, inventory.payload.allocated, inventory.payload.allocatable) == (12, 2, 10)
    assert isinstance(customer.payload, contracts.M3CustomerChanged)
    assert (customer.key, customer.payload.name) == ("C000003", "Renamed Customer AB")


async def test_admin_edit_errors(rig: Rig) -> None:
    assert (await rig.client.post("/__admin/m3/items/NOPE", json={"ITDS": "x"})).status_code == 404
    assert (await rig.client.post("/__admin/m3/items/ITM000001", json={"XXXX": "x"})).status_code == 422
    assert (await rig.client.post("/__admin/m3/balances/999/ITM000001", json={"STQT": "1"})).status_code == 404
    assert (await rig.client.post("/__admin/m3/balances/100/ITM000001", json={"STQT": "many"})).status_code == 422
    assert (await rig.client.post("/__admin/m3/customers/C000001", json={"CUNO": "C9"})).status_code == 422
    await rig.drain()
    assert rig.receiver.requests == []


async def test_customer_add_through_the_mi_api_sends_sync_customer_party_master(rig: Rig) -> None:
    config: IonSimConfig = rig.app.state.ion.config
    token = await _token(rig.client, config)
    response = await rig.client.get(
        f"{M3}/execute/CRS610MI/Add",
        params={
            "CUTM": "C000001",
            "CUNO": "C777777",
            "CUNM": "New Customer Oy",
            "CUA1": "Main St 1",
            "TOWN": "Tampere",
        },
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    assert "MIRecord" in response.json(), response.text
    await rig.drain()

    [body] = rig.receiver.accepted
    parsed = parse_bod(body)
    assert parsed.noun == "CustomerPartyMaster"
    payload = parsed.events[0].payload
    assert isinstance(payload, contracts.M3CustomerChanged)
    assert (payload.customer_number, payload.action, payload.name, payload.town) == (
        "C777777",
        "add",
        "New Customer Oy",
        "Tampere",
    )
    assert payload.address_lines == ["Main St 1"]

    # a rejected Add (NOK) publishes nothing
    response = await rig.client.get(
        f"{M3}/execute/CRS610MI/Add",
        params={"CUTM": "C000001", "CUNO": "C777777", "CUNM": "Again", "CUA1": "x"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert "MIRecord" not in response.json()
    await rig.drain()
    assert len(rig.receiver.requests) == 1


async def test_order_confirm_sends_sync_sales_order_with_the_customer_reference(rig: Rig) -> None:
    config: IonSimConfig = rig.app.state.ion.config
    auth = {"Authorization": f"Bearer {await _token(rig.client, config)}"}
    head = await rig.client.get(
        f"{M3}/execute/OIS100MI/AddBatchHead",
        params={"CUNO": "C000001", "CUOR": "AAAQ1001", "ORTP": "100"},
        headers=auth,
    )
    assert head.status_code == 200, head.text
    orno = head.json()["MIRecord"][0]["NameValue"][0]["Value"].strip()
    line = await rig.client.get(
        f"{M3}/execute/OIS100MI/AddBatchLine", params={"ORNO": orno, "ITNO": "ITM000001", "ORQT": "1"}, headers=auth
    )
    assert line.status_code == 200, line.text
    confirm = await rig.client.get(f"{M3}/execute/OIS100MI/Confirm", params={"ORNO": orno}, headers=auth)
    assert confirm.status_code == 200, confirm.text
    await rig.drain()

    parsed = [parse_bod(body) for body in rig.receiver.accepted]
    assert [p.noun for p in parsed] == ["InventoryCount", "SalesOrder"]
    order = parsed[-1].events[0].payload
    assert isinstance(order, contracts.OrderStatusChanged)
    assert order.customer_order_number == "AAAQ1001"
    assert order.customer_number == "C000001"
    assert order.status in ("20", "22")
    assert order.bod_id == parsed[-1].bod_id


async def test_target_can_be_set_at_run_time_and_nothing_is_sent_without_one() -> None:
    receiver = Receiver()
    config = IonSimConfig(throttle=ThrottlePolicy(enabled=False), m3={"customers": 5, "items": 10})
    app = create_app(config, bod_transport=httpx.ASGITransport(app=receiver.app()))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        await client.post("/__admin/m3/items/ITM000001", json={"ITDS": "Nobody listens"})
        stats: dict[str, Any] = (await client.get("/__admin/bods")).json()
        assert (stats["generated"], stats["not_sent"], stats["target_url"]) == (1, 1, None)

        response = await client.put("/__admin/bods/target", json={"url": TARGET, "headers": SECRET})
        assert response.json() == {"url": TARGET, "headers": ["X-Bod-Secret"]}
        await client.post("/__admin/m3/items/ITM000001", json={"ITDS": "Now someone does"})
        await app.state.ion.bods.emitter.drain()
    await app.state.ion.bods.emitter.aclose()
    [(headers, body)] = receiver.requests
    assert headers["x-bod-secret"] == "s3cret"
    assert parse_bod(body).variation == 2  # the variation counts every change, sent or not


async def test_raw_protocol_posts_the_bare_xml_as_a_forwarder_would() -> None:
    receiver = Receiver()
    config = IonSimConfig(
        throttle=ThrottlePolicy(enabled=False), m3={"customers": 5, "items": 10},
        bod_target_url="http://receiver.test/raw", bod_protocol="raw",
    )  # fmt: skip
    app = create_app(config, bod_transport=httpx.ASGITransport(app=receiver.app()))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        await client.post("/__admin/m3/items/ITM000001", json={"ITDS": "Forwarded"})
        await app.state.ion.bods.emitter.drain()
    await app.state.ion.bods.emitter.aclose()
    [(headers, body)] = receiver.requests
    assert headers["content-type"] == "application/xml"
    assert parse_bod(body).events[0].payload.description == "Forwarded"  # type: ignore[attr-defined]
