"""Reading Infor ION BODs (Business Object Documents) that M3 publishes: the ONE place the bridge parses them.

`parse_bod(xml)` turns one BOD into normalized events for the bridge's topics, or raises `BodError` with a reason:

- `malformed`: not well-formed XML, a DTD / entity declaration / external reference (refused outright), too large,
  or not BOD-shaped (no ApplicationArea, DataArea, BODID, verb element or noun);
- `unknown_document`: a verb + noun the bridge does not read (e.g. `SyncShipment`, `ProcessItemMaster`);
- `unsupported_action`: an `actionCode` we do not know, or `Delete` on a noun whose contract has no delete;
- `invalid_content`: a value the contract refuses (too long, not a number, not a date); the message names the field.

Parsing is namespace-agnostic (only local names are matched): real BODs use `http://schema.infor.com/InforOAGIS/2`,
prefixed or as the default namespace. Element paths per noun are documented in `docs/m3-interfaces.md` ("ION BODs");
`simulators/ion/bods.py` builds the same shapes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal
from xml.etree.ElementTree import Element, ParseError

import defusedxml  # type: ignore[import-untyped]
import defusedxml.ElementTree as DefusedET  # type: ignore[import-untyped]
from pydantic import BaseModel, ValidationError

from shared import contracts, topics
from shared.topics import Topic

#: The namespace of Infor's OAGIS BODs (matched by local name only; any namespace or none is accepted).
INFOR_OAGIS_NS = "http://schema.infor.com/InforOAGIS/2"
#: M3's logical id as the sender of its BODs.
M3_LOGICAL_ID = "lid://infor.m3.m3"
#: Larger documents are refused as malformed (an M3 master-data BOD is a few kB).
MAX_BOD_BYTES = 5 * 1024 * 1024

Reason = Literal["malformed", "unknown_document", "unsupported_action", "invalid_content"]
Action = Literal["add", "change", "delete"]

_ACTIONS: dict[str, Action] = {"Add": "add", "Change": "change", "Replace": "change", "Delete": "delete"}


class BodError(ValueError):
    """A BOD the bridge cannot read; `reason` is one of `Reason`, the message says what and where."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason


@dataclass(frozen=True)
class NormalizedEvent:
    """One message for a bridge topic: the contract payload and its Kafka key."""

    topic: Topic
    payload: BaseModel
    key: str


@dataclass(frozen=True)
class ParsedBod:
    noun: str
    verb: str
    bod_id: str
    document_id: str
    variation: int
    creation: datetime
    events: list[NormalizedEvent]


@dataclass(frozen=True)
class BodId:
    """The parts of an Infor BODID `infor-nid:{tenant}:{accountingEntity}:{location}:{documentId}:{revision}?
    {Noun}&verb={Verb}&variationID={n}` (fields are "" / None when the BODID has another form)."""

    tenant: str = ""
    accounting_entity: str = ""
    location: str = ""
    document_id: str = ""
    revision: str = ""
    noun: str = ""
    verb: str = ""
    variation: int | None = None


def parse_bod_id(text: str) -> BodId:
    """Split an `infor-nid:` BODID; anything else (e.g. a UUID) gives an empty `BodId`."""
    if not text.startswith("infor-nid:"):
        return BodId()
    head, _, query = text[len("infor-nid:") :].partition("?")
    parts = head.split(":", 3)
    if len(parts) < 4:
        return BodId()
    tenant, entity, location, rest = parts
    document_id, _, revision = rest.rpartition(":")
    noun, verb, variation = "", "", None
    for n, token in enumerate(query.split("&")):
        name, sep, value = token.partition("=")
        if not sep and n == 0:
            noun = name
        elif name == "verb":
            verb = value
        elif name == "variationID" and value.isdigit():
            variation = int(value)
    return BodId(tenant, entity, location, document_id, revision, noun, verb, variation)


# --- element helpers (local names only) ------------------------------------------------------------------------------
def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _children(element: Element, name: str) -> list[Element]:
    return [child for child in element if _local(child.tag) == name]


def _find(element: Element, path: str) -> Element | None:
    found: Element | None = element
    for step in path.split("/"):
        if found is None:
            return None
        found = next(iter(_children(found, step)), None)
    return found


def _text(element: Element | None, path: str = "") -> str:
    target = _find(element, path) if element is not None and path else element
    if target is None or target.text is None:
        return ""
    return target.text.strip()


def _attr(element: Element | None, name: str) -> str:
    if element is None:
        return ""
    for key, value in element.attrib.items():
        if _local(key) == name:
            return value.strip()
    return ""


# --- values ----------------------------------------------------------------------------------------------------------
def _datetime(text: str, where: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise BodError("invalid_content", f"{where}: {text!r} is not an ISO 8601 date-time") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _date(text: str, where: str) -> date | None:
    if not text:
        return None
    if len(text) == 10:
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    return _datetime(text, where).date()


# Infor's standard status texts (BODs may carry these instead of M3's numeric codes) → the M3 master-data status.
_STATUS_WORDS = {
    "open": "20", "active": "20", "released": "20", "approved": "20",
    "inactive": "90", "closed": "90", "blocked": "90", "obsolete": "90", "cancelled": "90", "canceled": "90",
}  # fmt: skip


def _master_status(element: Element, path: str, where: str) -> str:
    """An item's or customer's status as M3's code (20 = active): the M3 field STAT in the UserArea when present,
    else Status/Code as a number, else as one of Infor's status words; another word cannot be judged."""
    from_user_area = _name_value(element, "STAT")
    if from_user_area:
        return from_user_area
    text = _text(element, path)
    if not text or (text.isdigit() and len(text) <= 2):
        return text
    code = _STATUS_WORDS.get(text.casefold())
    if code is None:
        known = ", ".join(sorted({w.capitalize() for w in _STATUS_WORDS}))
        raise BodError("invalid_content", f"{where}: {path} {text!r} is neither an M3 status nor one of {known}")
    return code


@dataclass(frozen=True)
class _Context:
    noun: str
    document_id: str
    action: Action
    variation: int
    creation: datetime
    bod_id: str

    def changed_at(self, element: Element, path: str = "LastModificationDateTime") -> datetime:
        text = _text(element, path)
        return _datetime(text, f"{self.noun}/{path}") if text else self.creation


def _validate(model: type[BaseModel], data: dict[str, Any], paths: dict[str, str], where: str) -> BaseModel:
    """Build a contract payload; a refused value becomes BodError("invalid_content") naming field and element."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "?"
        path = paths.get(field, "?")
        raise BodError(
            "invalid_content", f"{where}: {path} ({model.__name__}.{field}) is invalid: {error['msg']}"
        ) from None


# --- nouns -----------------------------------------------------------------------------------------------------------
# Each reader gets the noun element and returns (topic, payload, key) per event.
_Reader = Callable[[Element, _Context], list[NormalizedEvent]]

ITEM_PATHS = {
    "item_number": "ItemMasterHeader/ItemID/ID",
    "description": "ItemMasterHeader/Description",
    "long_description": "ItemMasterHeader/Description[@type='Long']",
    "unit_of_measure": "ItemMasterHeader/BaseUOMCode",
    "item_group": "ItemMasterHeader/Classification[@type='ItemGroup']/Codes/Code",
    "item_type": "ItemMasterHeader/Classification[@type='ItemType']/Codes/Code",
    "status": "ItemMasterHeader/ItemStatus/Code (else ItemMasterHeader/Status/Code)",
    "changed_at": "ItemMasterHeader/LastModificationDateTime",
}


def _classification(header: Element, kind: str) -> str:
    for classification in _children(header, "Classification"):
        if _attr(classification, "type") == kind:
            return _text(classification, "Codes/Code") or _text(classification, "Code")
    return ""


def _read_item(noun: Element, ctx: _Context) -> list[NormalizedEvent]:
    header = _find(noun, "ItemMasterHeader")
    if header is None:
        raise BodError("malformed", f"{ctx.noun}: ItemMaster has no ItemMasterHeader")
    descriptions = _children(header, "Description")
    short = next((d for d in descriptions if _attr(d, "type") in ("", "Name", "Short")), None)
    long = next((d for d in descriptions if _attr(d, "type") == "Long"), None)
    data = {
        "item_number": _text(header, "ItemID/ID"),
        "action": ctx.action,
        "description": _text(short),
        "long_description": _text(long),
        "unit_of_measure": _text(header, "BaseUOMCode"),
        "item_group": _classification(header, "ItemGroup"),
        "item_type": _classification(header, "ItemType"),
        "status": _master_status(
            header, "ItemStatus/Code" if _find(header, "ItemStatus") is not None else "Status/Code", ctx.noun
        ),
        "changed_at": ctx.changed_at(header),
        "variation": ctx.variation,
    }
    payload = _validate(contracts.ItemChanged, data, ITEM_PATHS, f"{ctx.noun} {ctx.document_id!r}")
    return [NormalizedEvent(topics.ITEM_CHANGED, payload, str(data["item_number"]))]


CUSTOMER_PATHS = {
    "customer_number": "CustomerPartyMaster/PartyIDs/ID",
    "name": "CustomerPartyMaster/Name",
    "address_lines": "CustomerPartyMaster/Location/Address[AddressLine]/AddressLine",
    "town": "CustomerPartyMaster/Location/Address/CityName",
    "postal_code": "CustomerPartyMaster/Location/Address/PostalCode",
    "country": "CustomerPartyMaster/Location/Address/CountryCode",
    "phone": "CustomerPartyMaster/Communication[ChannelCode='Phone' or 'Telephone']/DialNumber",
    "email": "CustomerPartyMaster/Communication[ChannelCode='EMail']/URI",
    "status": "CustomerPartyMaster/Status/Code",
    "changed_at": "CustomerPartyMaster/LastModificationDateTime",
}


def _communication(noun: Element, channels: tuple[str, ...], value: str) -> str:
    """The first channel of those kinds with a value (Infor sends `Phone`; `Telephone` is OAGIS' own word)."""
    wanted = {channel.lower() for channel in channels}
    for communication in _children(noun, "Communication"):
        if _text(communication, "ChannelCode").lower() in wanted and _text(communication, value):
            return _text(communication, value)
    return ""


def _postal_address(noun: Element) -> Element | None:
    """Infor may send the address twice (`type="text"` with AddressLine, `type="Discrete"` with street parts):
    the one with address lines, else the first."""
    addresses = [a for location in _children(noun, "Location") for a in _children(location, "Address")]
    return next((a for a in addresses if _children(a, "AddressLine")), next(iter(addresses), None))


def _sequence(element: Element) -> int:
    text = _attr(element, "sequence")
    return int(text) if text.isdigit() else 0


def _read_customer(noun: Element, ctx: _Context) -> list[NormalizedEvent]:
    address = _postal_address(noun)
    lines: list[str] = []
    if address is not None:
        ordered = sorted(_children(address, "AddressLine"), key=_sequence)
        lines = [text for text in (_text(line) for line in ordered) if text]
    data = {
        "customer_number": _text(noun, "PartyIDs/ID"),
        "action": ctx.action,
        "name": _text(noun, "Name"),
        "address_lines": lines,
        "town": _text(address, "CityName"),
        "postal_code": _text(address, "PostalCode"),
        "country": _text(address, "CountryCode"),
        "phone": _communication(noun, ("Phone", "Telephone"), "DialNumber"),
        "email": _communication(noun, ("EMail", "E-mail", "Email"), "URI"),
        "status": _master_status(noun, "Status/Code", ctx.noun),
        "changed_at": ctx.changed_at(noun),
    }
    payload = _validate(contracts.M3CustomerChanged, data, CUSTOMER_PATHS, f"{ctx.noun} {ctx.document_id!r}")
    return [NormalizedEvent(topics.M3_CUSTOMER_CHANGED, payload, str(data["customer_number"]))]


ORDER_PATHS = {
    "order_number": "SalesOrderHeader/DocumentID/ID",
    "customer_order_number": "SalesOrderHeader/CustomerPurchaseOrderReference/DocumentID/ID",
    "customer_number": "SalesOrderHeader/CustomerParty/PartyIDs/ID",
    "status": "SalesOrderHeader/Status/Code",
    "highest_status": "SalesOrderHeader/UserArea/Property/NameValue[@name='ORST']",
    "changed_at": "SalesOrderHeader/Status/EffectiveDateTime",
    "bod_id": "ApplicationArea/BODID",
}


def _name_value(element: Element, name: str) -> str:
    user_area = _find(element, "UserArea")
    if user_area is None:
        return ""
    for prop in _children(user_area, "Property"):
        for name_value in _children(prop, "NameValue"):
            if _attr(name_value, "name") == name:
                return _text(name_value)
    return ""


def _read_order(noun: Element, ctx: _Context) -> list[NormalizedEvent]:
    header = _find(noun, "SalesOrderHeader")
    if header is None:
        raise BodError("malformed", f"{ctx.noun}: SalesOrder has no SalesOrderHeader")
    effective = _text(header, "Status/EffectiveDateTime")
    data = {
        "order_number": _text(header, "DocumentID/ID"),
        "customer_order_number": _text(header, "CustomerPurchaseOrderReference/DocumentID/ID"),
        "customer_number": _text(header, "CustomerParty/PartyIDs/ID"),
        "status": _text(header, "Status/Code"),
        "highest_status": _name_value(header, "ORST"),
        "changed_at": _datetime(effective, f"{ctx.noun}/Status/EffectiveDateTime")
        if effective
        else ctx.changed_at(header),
        "bod_id": ctx.bod_id,
    }
    payload = _validate(contracts.OrderStatusChanged, data, ORDER_PATHS, f"{ctx.noun} {ctx.document_id!r}")
    return [NormalizedEvent(topics.ORDER_STATUS, payload, str(data["order_number"]))]


INVENTORY_PATHS = {
    "item_number": "InventoryCountLine/Item/ItemID/ID",
    "warehouse": "InventoryCountLine/WarehouseLocation/ID",
    "on_hand": "InventoryCountLine/CountQuantity",
    "allocatable": "InventoryCountLine/AvailableQuantity",
    "allocated": "InventoryCountLine/AllocatedQuantity",
    "changed_at": "InventoryCountHeader/LastModificationDateTime",
}


def _read_inventory(noun: Element, ctx: _Context) -> list[NormalizedEvent]:
    header = _find(noun, "InventoryCountHeader")
    changed_at = ctx.changed_at(header) if header is not None else ctx.creation
    events: list[NormalizedEvent] = []
    for n, line in enumerate(_children(noun, "InventoryCountLine"), start=1):
        data: dict[str, Any] = {
            "item_number": _text(line, "Item/ItemID/ID"),
            "warehouse": _text(line, "WarehouseLocation/ID"),
            "on_hand": _text(line, "CountQuantity") or None,
            "allocatable": _text(line, "AvailableQuantity") or None,
            "allocated": _text(line, "AllocatedQuantity") or "0",
            "changed_at": changed_at,
        }
        where = f"{ctx.noun} {ctx.document_id!r} line {n}"
        payload = _validate(contracts.InventoryChanged, data, INVENTORY_PATHS, where)
        events.append(NormalizedEvent(topics.INVENTORY_CHANGED, payload, data["item_number"]))
    if not events:
        raise BodError("malformed", f"{ctx.noun} {ctx.document_id!r}: no InventoryCountLine")
    return events


PRICE_PATHS = {
    "price_list": "PriceListHeader/ID",
    "item_number": "PriceListLine/Item/ItemID/ID",
    "customer_number": "PriceListLine/CustomerParty/PartyIDs/ID",
    "sales_price": "PriceListLine/Price/Amount",
    "currency": "PriceListLine/Price/Amount/@currencyID (else PriceListHeader/CurrencyCode)",
    "valid_from": "PriceListLine/EffectiveTimePeriod/StartDateTime",
    "changed_at": "PriceListHeader/LastModificationDateTime",
}


def _read_price(noun: Element, ctx: _Context) -> list[NormalizedEvent]:
    header = _find(noun, "PriceListHeader")
    price_list = _text(header, "ID")
    changed_at = ctx.changed_at(header) if header is not None else ctx.creation
    events: list[NormalizedEvent] = []
    for n, line in enumerate(_children(noun, "PriceListLine"), start=1):
        amount = _find(line, "Price/Amount")
        data: dict[str, Any] = {
            "item_number": _text(line, "Item/ItemID/ID"),
            "price_list": price_list,
            "currency": _attr(amount, "currencyID") or _text(header, "CurrencyCode"),
            "customer_number": _text(line, "CustomerParty/PartyIDs/ID"),
            "sales_price": _text(amount) or None,
            "valid_from": _date(_text(line, "EffectiveTimePeriod/StartDateTime"), f"{ctx.noun} line {n}/StartDateTime"),
            "changed_at": changed_at,
        }
        where = f"{ctx.noun} {ctx.document_id!r} line {n}"
        payload = _validate(contracts.PriceChanged, data, PRICE_PATHS, where)
        events.append(NormalizedEvent(topics.PRICE_CHANGED, payload, data["item_number"]))
    if not events:
        raise BodError("malformed", f"{ctx.noun} {ctx.document_id!r}: no PriceListLine")
    return events


@dataclass(frozen=True)
class _Noun:
    id_path: str  # relative to the noun element: the document id (its `variationID` attribute is the variation)
    reader: _Reader
    deletable: bool  # whether the contract can say "delete"


#: Supported documents: verb + noun.
NOUNS: dict[str, _Noun] = {
    "ItemMaster": _Noun("ItemMasterHeader/ItemID/ID", _read_item, deletable=True),
    "CustomerPartyMaster": _Noun("PartyIDs/ID", _read_customer, deletable=True),
    "SalesOrder": _Noun("SalesOrderHeader/DocumentID/ID", _read_order, deletable=False),
    "InventoryCount": _Noun("InventoryCountHeader/DocumentID/ID", _read_inventory, deletable=False),
    "PriceList": _Noun("PriceListHeader/ID", _read_price, deletable=False),
}
# Sync: a change; Show: what M3 sends for an initial load (EVS005, e.g. M3BE_Out_ShowItemMaster), read the same way.
VERBS = ("Sync", "Show")
SUPPORTED_DOCUMENTS = tuple(f"{verb}{noun}" for verb in VERBS for noun in NOUNS)

_ROOT = re.compile(r"^([A-Z][a-z]+)([A-Z]\w*)$")


# --- the parser ------------------------------------------------------------------------------------------------------
def _parse_xml(xml: bytes) -> Element:
    if len(xml) > MAX_BOD_BYTES:
        raise BodError("malformed", f"BOD is {len(xml)} bytes, more than {MAX_BOD_BYTES}")
    try:
        root: Element = DefusedET.fromstring(xml, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DefusedXmlException as exc:
        raise BodError("malformed", f"refused XML construct: {type(exc).__name__} ({exc})") from None
    except ParseError as exc:
        raise BodError("malformed", f"not well-formed XML: {exc}") from None
    return root


def parse_bod(xml: bytes) -> ParsedBod:
    """Read one BOD. Raises BodError (see the module docstring for the reasons)."""
    root = _parse_xml(xml)
    name = _local(root.tag)
    match = _ROOT.match(name)
    if match is None:
        raise BodError("unknown_document", f"root element <{name}> is not a verb + noun BOD")
    verb, noun_name = match.groups()
    if verb not in VERBS or noun_name not in NOUNS:
        supported = ", ".join(SUPPORTED_DOCUMENTS)
        raise BodError("unknown_document", f"{name} is not a document the bridge reads (supported: {supported})")
    spec = NOUNS[noun_name]

    application = _find(root, "ApplicationArea")
    data_area = _find(root, "DataArea")
    if application is None or data_area is None:
        raise BodError("malformed", f"{name}: ApplicationArea and DataArea are required")
    bod_id = _text(application, "BODID")
    if not bod_id:
        raise BodError("malformed", f"{name}: ApplicationArea/BODID is missing")
    creation_text = _text(application, "CreationDateTime")
    if not creation_text:
        raise BodError("malformed", f"{name}: ApplicationArea/CreationDateTime is missing")
    creation = _datetime(creation_text, f"{name}/ApplicationArea/CreationDateTime")

    verb_element = _find(data_area, verb)
    if verb_element is None:
        raise BodError("malformed", f"{name}: DataArea/{verb} is missing")
    code = _attr(_find(verb_element, "ActionCriteria/ActionExpression"), "actionCode") or "Replace"
    action = _ACTIONS.get(code)
    if action is None:
        raise BodError("unsupported_action", f"{name}: actionCode {code!r} (known: {', '.join(_ACTIONS)})")
    if action == "delete" and not spec.deletable:
        raise BodError("unsupported_action", f"{name}: actionCode Delete is not supported for {noun_name}")

    nouns = _children(data_area, noun_name)
    if not nouns:
        raise BodError("malformed", f"{name}: DataArea/{noun_name} is missing")
    parsed_id = parse_bod_id(bod_id)
    events: list[NormalizedEvent] = []
    first_id, first_variation = "", 0
    for index, noun in enumerate(nouns):
        id_element = _find(noun, spec.id_path)
        document_id = _text(id_element) or parsed_id.document_id
        variation_text = _attr(id_element, "variationID")
        if variation_text:
            if not variation_text.isdigit():
                raise BodError("invalid_content", f"{name}: {noun_name}/{spec.id_path}/@variationID {variation_text!r}")
            variation = int(variation_text)
        else:
            variation = parsed_id.variation or 0
        if index == 0:
            first_id, first_variation = document_id, variation
        ctx = _Context(name, document_id, action, variation, creation, bod_id)
        events.extend(spec.reader(noun, ctx))
    return ParsedBod(
        noun=noun_name,
        verb=verb,
        bod_id=bod_id,
        document_id=first_id,
        variation=first_variation,
        creation=creation,
        events=events,
    )
