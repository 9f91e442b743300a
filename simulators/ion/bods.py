"""ION BODs from the simulated M3: builders (the shapes `services.bod_listener.bods.parse_bod` reads), the emitter that
delivers them to a receiver as ION does (the bridge's bod-listener behind an "IMS via ION API" connection point), and
the publisher that turns M3 simulator changes into BODs.

- Builders return a `Bod` (noun, document id, variationID, BODID, XML bytes). Element paths: see
  `docs/m3-interfaces.md` ("ION BODs"); builder and parser are written as a pair and tested as round trips.
- `BodEmitter` delivers each BOD with the ION Messaging Service v3 (`protocol="ims"`): `POST {target}/v3/
  multipartMessage`, multipart/form-data with a `ParameterRequest` JSON part (documentName `Sync.ItemMaster`,
  messageId, from/toLogicalId, encoding, characterSet, …) and a `MessagePayload` part (the BOD, encoding NONE or
  BASE64 in turn as `encodings` lists them), plus the `X-TenantId` header and configured headers (the API key the
  Gateway adds for the target). `protocol="raw"` POSTs the bare XML, as a forwarder would. Non-2xx answers and
  transport errors are retried with exponential backoff (one messageId per BOD, kept across its retries), in order
  per entity (noun + document id): a BOD is sent only after the previous one for the same entity was delivered or
  given up. Counts generated/delivered/failed/retries; `last_deliveries` is the delivery log.
- `BodPublisher` listens on `M3Simulator.on_change`, keeps a variationID per entity, and offers the admin edits
  ("a user changes the record in M3") behind `/__admin/m3/...`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from xml.etree.ElementTree import Element, SubElement, tostring

import httpx

from services.bod_listener.bods import INFOR_OAGIS_NS, M3_LOGICAL_ID
from simulators.ion.m3.data import PRICE_CURRENCY, PRICE_LIST, Item
from simulators.ion.m3.simulator import ChangeEvent, M3Simulator

log = logging.getLogger(__name__)

ActionCode = Literal["Add", "Change", "Replace", "Delete"]
Protocol = Literal["ims", "raw"]
Encoding = Literal["NONE", "BASE64"]
#: The IMS v3 message method under the IMS end point's base URL.
IMS_MESSAGE_PATH = "/v3/multipartMessage"
# M3 sends Replace for a changed record (the one M3BE sample); Add and Delete are OAGIS' own codes.
_ACTION_CODES: dict[str, ActionCode] = {"add": "Add", "change": "Replace", "delete": "Delete"}


# --- builders --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BodContext:
    """Who publishes: the BODID's tenant / accounting entity (M3: `CONO_DIVI`) / location, and the sender."""

    tenant: str = "M3BRIDGE_TST"
    accounting_entity: str = "100_AAA"
    location: str = ""
    logical_id: str = M3_LOGICAL_ID
    component_id: str = "M3BE"


@dataclass(frozen=True)
class Bod:
    noun: str
    verb: str
    document_id: str
    variation: int
    bod_id: str
    xml: bytes

    @property
    def entity(self) -> str:
        """What per-entity ordering is keyed on."""
        return f"{self.noun}:{self.document_id}"


@dataclass(frozen=True)
class PriceLine:
    item_number: str
    sales_price: Decimal | str
    valid_from: date | None = None
    customer_number: str = ""


def make_bod_id(ctx: BodContext, noun: str, document_id: str, variation: int, *, verb: str = "Sync") -> str:
    """A UUID, as M3 (M3BE) sends BODIDs; derived from the change, so a redelivered BOD keeps its id. (Other Infor
    applications use `infor-nid:…` ids, which the bridge also reads.)"""
    name = f"{ctx.tenant}|{ctx.accounting_entity}|{verb}{noun}|{document_id}|{variation}"
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def _q(name: str) -> str:
    # Elements are built unqualified and the root declares the default namespace (`xmlns=`): ElementTree's
    # `default_namespace` option refuses the unqualified attributes BODs use.
    return name


def _sub(parent: Element, tag: str, text: object = None, /, **attrs: str) -> Element:
    element = SubElement(parent, _q(tag), {k: v for k, v in attrs.items() if v != ""})
    if text is not None:
        element.text = _value(text)
    return element


def _value(value: object) -> str:
    if isinstance(value, datetime):
        stamp = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return stamp.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def _now() -> datetime:
    return datetime.now(UTC)


def _envelope(
    ctx: BodContext,
    noun: str,
    document_id: str,
    variation: int,
    action: ActionCode,
    creation: datetime | None,
    verb: str = "Sync",
) -> tuple[Element, Element, str]:
    """Root + ApplicationArea + DataArea/{verb}; returns (root, data_area, bod_id)."""
    bod_id = make_bod_id(ctx, noun, document_id, variation, verb=verb)
    root = Element(
        _q(f"{verb}{noun}"),
        {"xmlns": INFOR_OAGIS_NS, "releaseID": "9.2", "versionID": "2.14.0", "languageCode": "en-US"},
    )  # attribute values inferred
    app = _sub(root, "ApplicationArea")
    sender = _sub(app, "Sender")
    _sub(sender, "LogicalID", ctx.logical_id)
    _sub(sender, "ComponentID", ctx.component_id)
    _sub(sender, "ConfirmationCode", "OnError")
    _sub(app, "CreationDateTime", creation or _now())
    _sub(app, "BODID", bod_id)
    data_area = _sub(root, "DataArea")
    verb_element = _sub(data_area, verb)
    _sub(verb_element, "AccountingEntityID", ctx.accounting_entity)
    _sub(verb_element, "LocationID", ctx.location)
    criteria = _sub(verb_element, "ActionCriteria")
    _sub(criteria, "ActionExpression", f"/{verb}{noun}/DataArea/{noun}", actionCode=action, expressionLanguage="XPath")
    return root, data_area, bod_id


def _id(parent: Element, ctx: BodContext, value: str, variation: int) -> Element:
    return _sub(
        parent,
        "ID",
        value,
        accountingEntity=ctx.accounting_entity,
        lid=ctx.logical_id,
        variationID=str(variation),
    )


def _finish(root: Element, noun: str, verb: str, document_id: str, variation: int, bod_id: str) -> Bod:
    xml = tostring(root, encoding="utf-8", xml_declaration=True)
    return Bod(noun, verb, document_id, variation, bod_id, xml)


def build_item_master(
    ctx: BodContext,
    *,
    item_number: str,
    description: str = "",
    long_description: str = "",
    unit_of_measure: str = "",
    item_group: str = "",
    item_type: str = "",
    status: str = "",
    action: ActionCode = "Replace",
    variation: int = 1,
    changed_at: datetime | None = None,
    creation: datetime | None = None,
) -> Bod:
    root, data_area, bod_id = _envelope(ctx, "ItemMaster", item_number, variation, action, creation)
    header = _sub(_sub(data_area, "ItemMaster"), "ItemMasterHeader")
    _id(_sub(header, "ItemID"), ctx, item_number, variation)
    _sub(header, "Description", description)
    if long_description:
        _sub(header, "Description", long_description, type="Long")
    _sub(header, "BaseUOMCode", unit_of_measure)
    for kind, code, list_id in (("ItemGroup", item_group, "Item Groups"), ("ItemType", item_type, "Item Types")):
        if code:
            _sub(_sub(_sub(header, "Classification", type=kind), "Codes"), "Code", code, listID=list_id)
    _sub(_sub(header, "ItemStatus"), "Code", status, listID="M3 Item Status")
    _sub(header, "LastModificationDateTime", changed_at or _now())
    return _finish(root, "ItemMaster", "Sync", item_number, variation, bod_id)


def build_customer_party_master(
    ctx: BodContext,
    *,
    customer_number: str,
    name: str = "",
    address_lines: Sequence[str] = (),
    town: str = "",
    postal_code: str = "",
    country: str = "",
    phone: str = "",
    email: str = "",
    status: str = "",
    action: ActionCode = "Replace",
    variation: int = 1,
    changed_at: datetime | None = None,
    creation: datetime | None = None,
) -> Bod:
    root, data_area, bod_id = _envelope(ctx, "CustomerPartyMaster", customer_number, variation, action, creation)
    noun = _sub(data_area, "CustomerPartyMaster")
    _id(_sub(noun, "PartyIDs"), ctx, customer_number, variation)
    _sub(noun, "Name", name)
    address = _sub(_sub(noun, "Location", type="Customer"), "Address", type="text")
    for number, line in enumerate(address_lines, start=1):
        if line:
            _sub(address, "AddressLine", line, sequence=str(number))
    _sub(address, "CityName", town)
    _sub(address, "CountryCode", country)
    _sub(address, "PostalCode", postal_code)
    if phone:
        communication = _sub(noun, "Communication")
        _sub(communication, "ChannelCode", "Phone", listID="Communication Channels")
        _sub(communication, "UseCode", "Office", listID="Communication Use Codes")
        _sub(communication, "DialNumber", phone)
    if email:
        communication = _sub(noun, "Communication")
        _sub(communication, "ChannelCode", "EMail", listID="Communication Channels")
        _sub(communication, "UseCode", "Office", listID="Communication Use Codes")
        _sub(communication, "URI", email)
    _sub(_sub(noun, "Status"), "Code", status, listID="M3 Customer Status")
    _sub(noun, "LastModificationDateTime", changed_at or _now())
    return _finish(root, "CustomerPartyMaster", "Sync", customer_number, variation, bod_id)


def build_sales_order(
    ctx: BodContext,
    *,
    order_number: str,
    status: str,
    customer_order_number: str = "",
    customer_number: str = "",
    highest_status: str = "",
    action: ActionCode = "Replace",
    variation: int = 1,
    changed_at: datetime | None = None,
    creation: datetime | None = None,
) -> Bod:
    root, data_area, bod_id = _envelope(ctx, "SalesOrder", order_number, variation, action, creation)
    header = _sub(_sub(data_area, "SalesOrder"), "SalesOrderHeader")
    _id(_sub(header, "DocumentID"), ctx, order_number, variation)
    if customer_order_number:
        _sub(_sub(_sub(header, "CustomerPurchaseOrderReference"), "DocumentID"), "ID", customer_order_number)
    status_element = _sub(header, "Status")
    _sub(status_element, "Code", status, listID="M3 Order Status")
    _sub(status_element, "EffectiveDateTime", changed_at or _now())
    if customer_number:
        _sub(_sub(_sub(header, "CustomerParty"), "PartyIDs"), "ID", customer_number)
    if highest_status:
        _sub(_sub(_sub(header, "UserArea"), "Property"), "NameValue", highest_status, name="ORST", type="StringType")
    return _finish(root, "SalesOrder", "Sync", order_number, variation, bod_id)


def inventory_document_id(item_number: str, warehouse: str) -> str:
    return f"{item_number}_{warehouse}"


def build_inventory_count(
    ctx: BodContext,
    *,
    item_number: str,
    warehouse: str,
    on_hand: Decimal | str,
    allocatable: Decimal | str,
    allocated: Decimal | str = "0",
    unit: str = "",
    action: ActionCode = "Replace",
    variation: int = 1,
    changed_at: datetime | None = None,
    creation: datetime | None = None,
) -> Bod:
    document_id = inventory_document_id(item_number, warehouse)
    root, data_area, bod_id = _envelope(ctx, "InventoryCount", document_id, variation, action, creation)
    noun = _sub(data_area, "InventoryCount")
    header = _sub(noun, "InventoryCountHeader")
    _id(_sub(header, "DocumentID"), ctx, document_id, variation)
    _sub(header, "LastModificationDateTime", changed_at or _now())
    line = _sub(noun, "InventoryCountLine")
    _sub(_sub(_sub(line, "Item"), "ItemID"), "ID", item_number)
    _sub(_sub(line, "WarehouseLocation"), "ID", warehouse)
    _sub(line, "CountQuantity", on_hand, unitCode=unit)
    _sub(line, "AvailableQuantity", allocatable, unitCode=unit)
    _sub(line, "AllocatedQuantity", allocated, unitCode=unit)
    return _finish(root, "InventoryCount", "Sync", document_id, variation, bod_id)


def build_price_list(
    ctx: BodContext,
    *,
    price_list: str,
    currency: str,
    lines: Sequence[PriceLine],
    action: ActionCode = "Replace",
    variation: int = 1,
    changed_at: datetime | None = None,
    creation: datetime | None = None,
) -> Bod:
    root, data_area, bod_id = _envelope(ctx, "PriceList", price_list, variation, action, creation)
    noun = _sub(data_area, "PriceList")
    header = _sub(noun, "PriceListHeader")
    _id(header, ctx, price_list, variation)
    _sub(header, "CurrencyCode", currency)
    _sub(header, "LastModificationDateTime", changed_at or _now())
    for price in lines:
        line = _sub(noun, "PriceListLine")
        _sub(_sub(_sub(line, "Item"), "ItemID"), "ID", price.item_number)
        if price.customer_number:
            _sub(_sub(_sub(line, "CustomerParty"), "PartyIDs"), "ID", price.customer_number)
        _sub(_sub(line, "Price"), "Amount", price.sales_price, currencyID=currency)
        if price.valid_from is not None:
            start = datetime(price.valid_from.year, price.valid_from.month, price.valid_from.day, tzinfo=UTC)
            _sub(_sub(line, "EffectiveTimePeriod"), "StartDateTime", start)
    return _finish(root, "PriceList", "Sync", price_list, variation, bod_id)


# --- emitter ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Delivery:
    url: str
    headers: dict[str, str]
    body: bytes
    message_id: str  # "" for raw deliveries
    encoding: str  # NONE / BASE64, or "raw"


@dataclass
class DeliveryStats:
    generated: int = 0
    delivered: int = 0
    failed: int = 0
    retries: int = 0
    not_sent: int = 0  # generated while no target was configured
    last_sent: deque[str] = field(default_factory=lambda: deque(maxlen=100))
    last_failed: deque[dict[str, str]] = field(default_factory=lambda: deque(maxlen=100))
    # The delivery log: one entry per delivered or given-up BOD (messageId, document, encoding, answers).
    last_deliveries: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=100))

    def snapshot(self) -> dict[str, Any]:
        return {
            "generated": self.generated,
            "delivered": self.delivered,
            "failed": self.failed,
            "retries": self.retries,
            "not_sent": self.not_sent,
            "last_bod_ids": list(self.last_sent),
            "last_failed": list(self.last_failed),
            "last_deliveries": list(self.last_deliveries),
        }


def ims_message(
    bod: Bod,
    *,
    message_id: str,
    encoding: Encoding,
    from_logical_id: str,
    to_logical_id: str,
    accounting_entity: str = "",
    location: str = "",
) -> tuple[bytes, str]:
    """One IMS v3 multipartMessage body and its Content-Type: the `ParameterRequest` part (JSON) and the
    `MessagePayload` part (the BOD, base64 when `encoding` is BASE64), each with its fixed Content-Disposition name."""
    parameters = {
        "documentName": f"{bod.verb}.{bod.noun}",
        "messageId": message_id,
        "fromLogicalId": from_logical_id,
        "toLogicalId": to_logical_id,
        "encoding": encoding,
        "characterSet": "UTF-8",
        "accountingEntity": accounting_entity,
        "location": location,
        "documentId": bod.document_id,
        "variationId": bod.variation,
    }
    payload = base64.b64encode(bod.xml) if encoding == "BASE64" else bod.xml
    boundary = uuid.uuid4().hex
    body = b"".join([
        f"--{boundary}\r\n".encode(),
        b'Content-Disposition: form-data; name="ParameterRequest"\r\nContent-Type: application/json\r\n\r\n',
        json.dumps(parameters).encode(),
        f"\r\n--{boundary}\r\n".encode(),
        b'Content-Disposition: form-data; name="MessagePayload"\r\nContent-Type: application/octet-stream\r\n'
        b"Content-Transfer-Encoding: binary\r\n\r\n",
        payload,
        f"\r\n--{boundary}--\r\n".encode(),
    ])  # fmt: skip
    return body, f"multipart/form-data; boundary={boundary}"


class BodEmitter:
    """Delivers BODs to `target_url` (IMS: the IMS end point's base URL; raw: the URL itself), in order per entity,
    with retries. Call `emit` from the running event loop."""

    def __init__(
        self,
        target_url: str | None = None,
        headers: dict[str, str] | None = None,
        *,
        protocol: Protocol = "ims",
        encodings: Sequence[Encoding] = ("NONE", "BASE64"),
        tenant: str = "",
        from_logical_id: str = M3_LOGICAL_ID,
        to_logical_id: str = "lid://infor.ims.m3bridge",
        attempts: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.target_url = target_url
        self.headers = dict(headers or {})
        self.protocol: Protocol = protocol
        self.encodings: tuple[Encoding, ...] = tuple(encodings) or ("NONE",)
        self.tenant = tenant
        self.from_logical_id = from_logical_id
        self.to_logical_id = to_logical_id
        self.accounting_entity = ""  # the ParameterRequest's accountingEntity / location (set by BodPublisher)
        self.location = ""
        self._sent = 0  # BODs handed to delivery: picks the encoding in turn
        self.attempts = max(attempts, 1)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self.stats = DeliveryStats()
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._tails: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def configure(self, target_url: str | None, headers: dict[str, str] | None = None) -> None:
        """Change the target (affects BODs emitted from now on)."""
        self.target_url = target_url
        if headers is not None:
            self.headers = dict(headers)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def snapshot(self) -> dict[str, Any]:
        return {
            "target_url": self.target_url,
            "protocol": self.protocol,
            "encodings": list(self.encodings),
            "pending": self.pending,
            **self.stats.snapshot(),
        }

    def emit(self, bod: Bod) -> None:
        self.stats.generated += 1
        if not self.target_url:
            self.stats.not_sent += 1
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            log.warning("BOD %s not sent: no running event loop", bod.bod_id)
            self.stats.not_sent += 1
            return
        previous = self._tails.get(bod.entity)
        encoding = self.encodings[self._sent % len(self.encodings)]
        self._sent += 1
        request = self._request(bod, self.target_url, encoding)
        task = loop.create_task(self._deliver_after(previous, bod, request))
        self._tails[bod.entity] = task
        self._tasks.add(task)
        entity = bod.entity
        task.add_done_callback(lambda done: self._done(entity, done))

    def _done(self, key: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._tails.get(key) is task:
            del self._tails[key]

    def _request(self, bod: Bod, target: str, encoding: Encoding) -> _Delivery:
        """What is sent for one BOD (every retry sends the same, so a redelivery keeps its messageId)."""
        if self.protocol == "raw":
            headers = {**self.headers, "Content-Type": "application/xml"}
            return _Delivery(target, headers, bod.xml, "", "raw")
        message_id = f"m3bridge-sim-{uuid.uuid4().hex}"
        body, content_type = ims_message(
            bod, message_id=message_id, encoding=encoding, from_logical_id=self.from_logical_id,
            to_logical_id=self.to_logical_id, accounting_entity=self.accounting_entity, location=self.location,
        )  # fmt: skip
        headers = {**self.headers, "Content-Type": content_type}
        if self.tenant:
            headers["X-TenantId"] = self.tenant
        return _Delivery(target.rstrip("/") + IMS_MESSAGE_PATH, headers, body, message_id, encoding)

    async def _deliver_after(self, previous: asyncio.Task[None] | None, bod: Bod, request: _Delivery) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait({previous})
        await self._deliver(bod, request)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(transport=self._transport, timeout=self.timeout_s)
        return self._client

    async def _deliver(self, bod: Bod, request: _Delivery) -> None:
        """Like ION: every answer but a 2xx (and every transport error) is retried, up to `attempts`."""
        problem = ""
        answers: list[str] = []
        for attempt in range(1, self.attempts + 1):
            try:
                response = await self._http().post(request.url, content=request.body, headers=request.headers)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if 200 <= response.status_code < 300:
                    answers.append(str(response.status_code))
                    self.stats.delivered += 1
                    self.stats.last_sent.append(bod.bod_id)
                    self._log(bod, request, answers, "delivered", response)
                    return
                problem = f"HTTP {response.status_code}"
            answers.append(problem)
            if attempt == self.attempts:
                break
            self.stats.retries += 1
            await asyncio.sleep(min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s))
        self.stats.failed += 1
        self.stats.last_failed.append({"bod_id": bod.bod_id, "problem": problem})
        self._log(bod, request, answers, "failed", None)
        log.warning("BOD %s not delivered to %s: %s", bod.bod_id, request.url, problem)

    def _log(
        self, bod: Bod, request: _Delivery, answers: list[str], result: str, response: httpx.Response | None
    ) -> None:
        outcome = ""
        if response is not None and response.headers.get("content-type", "").startswith("application/json"):
            try:
                outcome = str(response.json().get("outcome", ""))
            except (ValueError, AttributeError):
                outcome = ""
        self.stats.last_deliveries.append({
            "bod_id": bod.bod_id, "document": f"{bod.verb}.{bod.noun}", "document_id": bod.document_id,
            "message_id": request.message_id, "encoding": request.encoding, "result": result, "answers": answers,
            "outcome": outcome,
        })  # fmt: skip

    async def drain(self) -> None:
        """Wait until every emitted BOD was delivered or given up (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None


# --- publisher: M3 simulator changes → BODs --------------------------------------------------------------------------
class EditError(ValueError):
    """An admin edit that cannot be applied; `status` is the HTTP status to answer (404 or 422)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


_ITEM_FIELDS = {"ITDS": "itds", "FUDS": "fuds", "STAT": "stat", "UNMS": "unms", "ITGR": "itgr", "ITCL": "itcl"}
_ITEM_FIELDS_EXTRA = {"ITTY": "itty"}
_CUSTOMER_FIXED = ("CONO", "DIVI", "CUNO")


def _decimal(name: str, value: object) -> Decimal:
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise EditError(422, f"{name} must be a number, got {value!r}") from None
    if not number.is_finite():
        raise EditError(422, f"{name} must be a finite number")
    return number


class BodPublisher:
    """Builds a BOD for every change of the simulated M3 and hands it to the emitter; also the admin edits."""

    def __init__(self, sim: M3Simulator, emitter: BodEmitter, ctx: BodContext) -> None:
        self.sim = sim
        self.emitter = emitter
        self.ctx = ctx
        self.variations: dict[str, int] = {}
        emitter.accounting_entity, emitter.location = ctx.accounting_entity, ctx.location
        sim.on_change.append(self.on_change)

    def _variation(self, noun: str, document_id: str) -> int:
        key = f"{noun}:{document_id}"
        self.variations[key] = self.variations.get(key, 0) + 1
        return self.variations[key]

    def on_change(self, event: ChangeEvent) -> None:
        self.emitter.emit(self.build(event))

    def build(self, event: ChangeEvent) -> Bod:
        data, ctx, action = event.data, self.ctx, _ACTION_CODES[event.action]
        now = _now()

        def text(name: str) -> str:
            value = data.get(name)
            return "" if value is None else str(value)

        if event.kind == "item":
            return build_item_master(
                ctx,
                item_number=event.key,
                description=text("ITDS"),
                long_description=text("FUDS"),
                unit_of_measure=text("UNMS"),
                item_group=text("ITGR"),
                item_type=text("ITTY"),
                status=text("STAT"),
                action=action,
                variation=self._variation("ItemMaster", event.key),
                changed_at=now,
            )
        if event.kind == "customer":
            return build_customer_party_master(
                ctx,
                customer_number=event.key,
                name=text("CUNM"),
                address_lines=[text(f"CUA{n}") for n in range(1, 5)],
                town=text("TOWN"),
                postal_code=text("PONO"),
                country=text("CSCD"),
                phone=text("PHNO"),
                email=text("MAIL"),
                status=text("STAT"),
                action=action,
                variation=self._variation("CustomerPartyMaster", event.key),
                changed_at=now,
            )
        if event.kind == "order":
            return build_sales_order(
                ctx,
                order_number=event.key,
                status=text("ORSL") or text("STAT"),
                highest_status=text("ORST"),
                customer_order_number=text("CUOR"),
                customer_number=text("CUNO"),
                action=action,
                variation=self._variation("SalesOrder", event.key),
                changed_at=now,
            )
        if event.kind == "balance":
            whlo = text("WHLO")
            item = self.sim.store.item(event.key)
            return build_inventory_count(
                ctx,
                item_number=event.key,
                warehouse=whlo,
                on_hand=text("STQT"),
                allocatable=text("AV01"),
                allocated=text("ALQT"),
                unit=item.unms if item is not None else "",
                variation=self._variation("InventoryCount", inventory_document_id(event.key, whlo)),
                changed_at=now,
            )
        # price
        price_list = text("PRRF")
        valid_from = data.get("FVDT")
        line = PriceLine(event.key, text("SAPR"), valid_from if isinstance(valid_from, date) else None)
        return build_price_list(
            ctx,
            price_list=price_list,
            currency=text("CUCD"),
            lines=[line],
            variation=self._variation("PriceList", price_list),
            changed_at=now,
        )

    # --- admin edits: a user changes the record in M3 ---------------------------------------------------------------
    def edit_item(self, itno: str, fields: dict[str, Any]) -> dict[str, object]:
        item = self.sim.store.item(itno)
        if item is None:
            raise EditError(404, f"Item number {itno} does not exist")
        allowed = {**_ITEM_FIELDS, **_ITEM_FIELDS_EXTRA}
        unknown = sorted(set(fields) - set(allowed))
        if unknown:
            raise EditError(422, f"not editable: {', '.join(unknown)} (editable: {', '.join(sorted(allowed))})")
        for name, value in fields.items():
            setattr(item, allowed[name], str(value))
        item.lmdt = self.sim.store.today
        record = item.record()
        self.sim.notify(ChangeEvent("item", "change", itno, record))
        return record

    def add_item(self, fields: dict[str, Any]) -> dict[str, object]:
        """A user creates an item in M3 (MMS001): ITNO and ITDS required, active (STAT 20) unless given; its price
        `SAPR` (default 10.00) on the price list; publishes SyncItemMaster with actionCode Add."""
        store = self.sim.store
        itno = str(fields.get("ITNO") or "").strip()
        if not itno or len(itno) > 15:
            raise EditError(422, "ITNO (1 to 15 characters) is required")
        if store.item(itno) is not None:
            raise EditError(409, f"Item number {itno} already exists")
        allowed = {**_ITEM_FIELDS, **_ITEM_FIELDS_EXTRA}
        unknown = sorted(set(fields) - set(allowed) - {"ITNO", "SAPR"})
        if unknown:
            raise EditError(
                422, f"not settable: {', '.join(unknown)} (settable: ITNO, SAPR, {', '.join(sorted(allowed))})"
            )
        itds = str(fields.get("ITDS") or "").strip()
        if not itds:
            raise EditError(422, "ITDS (the item name) is required")
        item = Item(
            itno=itno, itds=itds[:30], fuds=str(fields.get("FUDS") or itds)[:60], stat=str(fields.get("STAT") or "20"),
            unms=str(fields.get("UNMS") or "PCS"), itgr=str(fields.get("ITGR") or "GENERAL")[:8],
            itcl=str(fields.get("ITCL") or "NEW")[:5], itty=str(fields.get("ITTY") or "FIN")[:3], newe=Decimal("1.00"),
            lmdt=store.today, rgdt=store.today, price=_decimal("SAPR", fields.get("SAPR", "10.00")),
        )  # fmt: skip
        store.add_item(item)
        record = item.record()
        self.sim.notify(ChangeEvent("item", "add", itno, record))
        return record

    def edit_balance(self, whlo: str, itno: str, fields: dict[str, Any]) -> dict[str, object]:
        store = self.sim.store
        if store.item(itno) is None:
            raise EditError(404, f"Item number {itno} does not exist")
        if whlo not in store.warehouses:
            raise EditError(404, f"Warehouse {whlo} does not exist")
        unknown = sorted(set(fields) - {"STQT", "ALQT"})
        if unknown:
            raise EditError(422, f"not editable: {', '.join(unknown)} (editable: ALQT, STQT)")
        values = {name: _decimal(name, value) for name, value in fields.items()}
        balance = store.balance(itno, whlo)
        balance.stqt = values.get("STQT", balance.stqt)
        balance.alqt = values.get("ALQT", balance.alqt)
        record: dict[str, object] = {
            "ITNO": itno,
            "WHLO": whlo,
            "STQT": balance.stqt,
            "ALQT": balance.alqt,
            "AV01": balance.available,
        }
        self.sim.notify(ChangeEvent("balance", "change", itno, record))
        return record

    def edit_price(self, itno: str, fields: dict[str, Any]) -> dict[str, object]:
        store = self.sim.store
        item = store.item(itno)
        if item is None:
            raise EditError(404, f"Item number {itno} does not exist")
        unknown = sorted(set(fields) - {"SAPR"})
        if unknown or "SAPR" not in fields:
            raise EditError(422, "only SAPR (the base sales price of price list STD) is editable")
        item.price = _decimal("SAPR", fields["SAPR"])
        record: dict[str, object] = {
            "ITNO": itno,
            "PRRF": PRICE_LIST,
            "CUCD": PRICE_CURRENCY,
            "SAPR": item.price,
            "FVDT": store.price_valid_from,
        }
        self.sim.notify(ChangeEvent("price", "change", itno, record))
        return record

    def progress_order(self, orno: str, fields: dict[str, Any]) -> dict[str, object]:
        """The order moves on in M3 (picked, delivered, invoiced): every line to `ORST`; publishes SyncSalesOrder."""
        order = self.sim.store.orders.get(orno)
        if order is None:
            raise EditError(404, f"Order number {orno} does not exist")
        status = str(fields.get("ORST") or "")
        if set(fields) != {"ORST"} or not (status.isdigit() and len(status) == 2):
            raise EditError(422, 'only {"ORST": "<two digits>"} (the new status of every line) is accepted')
        for line in order.lines:
            line["ORST"] = status
        order.head.update({"ORSL": status, "ORST": status, "STAT": status})
        self.sim.notify(ChangeEvent("order", "change", orno, dict(order.head)))
        return dict(order.head)

    def delete_order(self, orno: str) -> dict[str, object]:
        """A user deletes the order in M3 (OIS300); publishes SyncSalesOrder with actionCode Delete."""
        order = self.sim.store.orders.pop(orno, None)
        if order is None:
            raise EditError(404, f"Order number {orno} does not exist")
        self.sim.notify(ChangeEvent("order", "delete", orno, dict(order.head)))
        return dict(order.head)

    def customer(self, cuno: str) -> dict[str, object]:
        record = self.sim.store.customers.get(cuno)
        if record is None:
            raise EditError(404, f"Customer number {cuno} does not exist")
        return dict(record)

    def add_customer(self, fields: dict[str, Any]) -> dict[str, object]:
        """A user creates a customer in M3 (CRS610 with the first customer as template); publishes an Add."""
        store = self.sim.store
        if not str(fields.get("CUNM") or "").strip():
            raise EditError(422, "CUNM (the customer name) is required")
        template = store.customer_keys[0]
        unknown = sorted(name for name in fields if name not in store.customers[template] or name in _CUSTOMER_FIXED)
        if unknown:
            raise EditError(422, f"not editable: {', '.join(unknown)}")
        cuno = store.next_customer_number()
        record = dict(store.customers[template])
        for name in ("CUA1", "CUA2", "CUA3", "CUA4", "TOWN", "PONO", "PHNO", "MAIL", "YREF"):
            if name in record:
                record[name] = ""
        record.update({name: str(value) for name, value in fields.items()})
        record.update({"CUNO": cuno, "PYNO": cuno, "LMDT": store.today, "RGDT": store.today})
        store.add_customer(record)
        self.sim.notify(ChangeEvent("customer", "add", cuno, dict(record)))
        return dict(record)

    def edit_customer(self, cuno: str, fields: dict[str, Any]) -> dict[str, object]:
        record = self.sim.store.customers.get(cuno)
        if record is None:
            raise EditError(404, f"Customer number {cuno} does not exist")
        unknown = sorted(name for name in fields if name not in record or name in _CUSTOMER_FIXED)
        if unknown:
            raise EditError(422, f"not editable: {', '.join(unknown)}")
        for name, value in fields.items():
            if isinstance(record[name], int):
                record[name] = int(_decimal(name, value))
            else:
                record[name] = str(value)
        record["LMDT"] = self.sim.store.today
        self.sim.notify(ChangeEvent("customer", "change", cuno, dict(record)))
        return dict(record)
