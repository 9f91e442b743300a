"""Per-noun BOD readers: each noun's element paths and how its content becomes contract payloads (`NOUNS`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from xml.etree.ElementTree import Element

from pydantic import BaseModel, ValidationError

from services.bod_listener.bods.elements import (
    attribute,
    children,
    find,
    is_count,
    name_value,
    parse_date,
    parse_datetime,
    text_of,
)
from services.bod_listener.bods.model import Action, BodError, NormalizedEvent
from shared import contracts
from shared.contracts import topics

# Infor's standard status texts (BODs may carry these instead of M3's numeric codes) → the M3 master-data status.
_STATUS_WORDS = {
    "open": "20", "active": "20", "released": "20", "approved": "20",
    "inactive": "90", "closed": "90", "blocked": "90", "obsolete": "90", "cancelled": "90", "canceled": "90",
}  # fmt: skip


def _master_status(element: Element, path: str, where: str) -> str:
    """An item's or customer's status as M3's code (20 = active): the M3 field STAT in the UserArea when present,
    else Status/Code as a number, else as one of Infor's status words; another word cannot be judged."""
    from_user_area = name_value(element, "STAT")
    if from_user_area:
        return from_user_area
    text = text_of(element, path)
    if not text or (text.isdigit() and len(text) <= 2):
        return text
    code = _STATUS_WORDS.get(text.casefold())
    if code is None:
        known = ", ".join(sorted({w.capitalize() for w in _STATUS_WORDS}))
        raise BodError("invalid_content", f"{where}: {path} {text!r} is neither an M3 status nor one of {known}")
    return code


@dataclass(frozen=True)
class NounContext:
    """What the envelope tells a noun reader: the document, its action and variation, the BOD's creation time."""

    noun: str
    document_id: str
    action: Action
    variation: int
    creation: datetime
    bod_id: str

    def changed_at(self, element: Element, path: str = "LastModificationDateTime") -> datetime:
        text = text_of(element, path)
        return parse_datetime(text, f"{self.noun}/{path}") if text else self.creation


def build_payload(model: type[BaseModel], data: dict[str, Any], paths: dict[str, str], where: str) -> BaseModel:
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


# Each reader gets the noun element and returns (topic, payload, key) per event.
NounReader = Callable[[Element, NounContext], list[NormalizedEvent]]

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
    for classification in children(header, "Classification"):
        if attribute(classification, "type") == kind:
            return text_of(classification, "Codes/Code") or text_of(classification, "Code")
    return ""


def _read_item(noun: Element, ctx: NounContext) -> list[NormalizedEvent]:
    header = find(noun, "ItemMasterHeader")
    if header is None:
        raise BodError("malformed", f"{ctx.noun}: ItemMaster has no ItemMasterHeader")
    descriptions = children(header, "Description")
    short = next((d for d in descriptions if attribute(d, "type") in ("", "Name", "Short")), None)
    long = next((d for d in descriptions if attribute(d, "type") == "Long"), None)
    data = {
        "item_number": text_of(header, "ItemID/ID"),
        "action": ctx.action,
        "description": text_of(short),
        "long_description": text_of(long),
        "unit_of_measure": text_of(header, "BaseUOMCode"),
        "item_group": _classification(header, "ItemGroup"),
        "item_type": _classification(header, "ItemType"),
        "status": _master_status(
            header, "ItemStatus/Code" if find(header, "ItemStatus") is not None else "Status/Code", ctx.noun
        ),
        "changed_at": ctx.changed_at(header),
        "variation": ctx.variation,
    }
    payload = build_payload(contracts.ItemChanged, data, ITEM_PATHS, f"{ctx.noun} {ctx.document_id!r}")
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
    for communication in children(noun, "Communication"):
        if text_of(communication, "ChannelCode").lower() in wanted and text_of(communication, value):
            return text_of(communication, value)
    return ""


def _postal_address(noun: Element) -> Element | None:
    """Infor may send the address twice (`type="text"` with AddressLine, `type="Discrete"` with street parts):
    the one with address lines, else the first."""
    addresses = [a for location in children(noun, "Location") for a in children(location, "Address")]
    return next((a for a in addresses if children(a, "AddressLine")), next(iter(addresses), None))


def _sequence(element: Element) -> int:
    text = attribute(element, "sequence")
    return int(text) if is_count(text) else 0


def _read_customer(noun: Element, ctx: NounContext) -> list[NormalizedEvent]:
    address = _postal_address(noun)
    lines: list[str] = []
    if address is not None:
        ordered = sorted(children(address, "AddressLine"), key=_sequence)
        lines = [text for text in (text_of(line) for line in ordered) if text]
    data = {
        "customer_number": text_of(noun, "PartyIDs/ID"),
        "action": ctx.action,
        "name": text_of(noun, "Name"),
        "address_lines": lines,
        "town": text_of(address, "CityName"),
        "postal_code": text_of(address, "PostalCode"),
        "country": text_of(address, "CountryCode"),
        "phone": _communication(noun, ("Phone", "Telephone"), "DialNumber"),
        "email": _communication(noun, ("EMail", "E-mail", "Email"), "URI"),
        "status": _master_status(noun, "Status/Code", ctx.noun),
        "changed_at": ctx.changed_at(noun),
    }
    payload = build_payload(contracts.M3CustomerChanged, data, CUSTOMER_PATHS, f"{ctx.noun} {ctx.document_id!r}")
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


def _read_order(noun: Element, ctx: NounContext) -> list[NormalizedEvent]:
    header = find(noun, "SalesOrderHeader")
    if header is None:
        raise BodError("malformed", f"{ctx.noun}: SalesOrder has no SalesOrderHeader")
    effective = text_of(header, "Status/EffectiveDateTime")
    data = {
        "order_number": text_of(header, "DocumentID/ID"),
        "customer_order_number": text_of(header, "CustomerPurchaseOrderReference/DocumentID/ID"),
        "customer_number": text_of(header, "CustomerParty/PartyIDs/ID"),
        "status": text_of(header, "Status/Code"),
        "highest_status": name_value(header, "ORST"),
        "changed_at": parse_datetime(effective, f"{ctx.noun}/Status/EffectiveDateTime")
        if effective
        else ctx.changed_at(header),
        "bod_id": ctx.bod_id,
    }
    payload = build_payload(contracts.OrderStatusChanged, data, ORDER_PATHS, f"{ctx.noun} {ctx.document_id!r}")
    return [NormalizedEvent(topics.ORDER_STATUS, payload, str(data["order_number"]))]


INVENTORY_PATHS = {
    "item_number": "InventoryCountLine/Item/ItemID/ID",
    "warehouse": "InventoryCountLine/WarehouseLocation/ID",
    "on_hand": "InventoryCountLine/CountQuantity",
    "allocatable": "InventoryCountLine/AvailableQuantity",
    "allocated": "InventoryCountLine/AllocatedQuantity",
    "changed_at": "InventoryCountHeader/LastModificationDateTime",
}


def _read_inventory(noun: Element, ctx: NounContext) -> list[NormalizedEvent]:
    header = find(noun, "InventoryCountHeader")
    changed_at = ctx.changed_at(header) if header is not None else ctx.creation
    events: list[NormalizedEvent] = []
    for n, line in enumerate(children(noun, "InventoryCountLine"), start=1):
        data: dict[str, Any] = {
            "item_number": text_of(line, "Item/ItemID/ID"),
            "warehouse": text_of(line, "WarehouseLocation/ID"),
            "on_hand": text_of(line, "CountQuantity") or None,
            "allocatable": text_of(line, "AvailableQuantity") or None,
            "allocated": text_of(line, "AllocatedQuantity") or "0",
            "changed_at": changed_at,
        }
        where = f"{ctx.noun} {ctx.document_id!r} line {n}"
        payload = build_payload(contracts.InventoryChanged, data, INVENTORY_PATHS, where)
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


def _read_price(noun: Element, ctx: NounContext) -> list[NormalizedEvent]:
    header = find(noun, "PriceListHeader")
    price_list = text_of(header, "ID")
    changed_at = ctx.changed_at(header) if header is not None else ctx.creation
    events: list[NormalizedEvent] = []
    for n, line in enumerate(children(noun, "PriceListLine"), start=1):
        amount = find(line, "Price/Amount")
        data: dict[str, Any] = {
            "item_number": text_of(line, "Item/ItemID/ID"),
            "price_list": price_list,
            "currency": attribute(amount, "currencyID") or text_of(header, "CurrencyCode"),
            "customer_number": text_of(line, "CustomerParty/PartyIDs/ID"),
            "sales_price": text_of(amount) or None,
            "valid_from": parse_date(
                text_of(line, "EffectiveTimePeriod/StartDateTime"), f"{ctx.noun} line {n}/StartDateTime"
            ),
            "changed_at": changed_at,
        }
        where = f"{ctx.noun} {ctx.document_id!r} line {n}"
        payload = build_payload(contracts.PriceChanged, data, PRICE_PATHS, where)
        events.append(NormalizedEvent(topics.PRICE_CHANGED, payload, data["item_number"]))
    if not events:
        raise BodError("malformed", f"{ctx.noun} {ctx.document_id!r}: no PriceListLine")
    return events


@dataclass(frozen=True)
class Noun:
    """A noun the bridge reads: where its document id is, its reader, and whether it may be deleted."""

    id_path: str  # relative to the noun element: the document id (its `variationID` attribute is the variation)
    reader: NounReader
    deletable: bool  # whether the contract can say "delete"


#: Supported documents: verb + noun.
NOUNS: dict[str, Noun] = {
    "ItemMaster": Noun("ItemMasterHeader/ItemID/ID", _read_item, deletable=True),
    "CustomerPartyMaster": Noun("PartyIDs/ID", _read_customer, deletable=True),
    "SalesOrder": Noun("SalesOrderHeader/DocumentID/ID", _read_order, deletable=False),
    "InventoryCount": Noun("InventoryCountHeader/DocumentID/ID", _read_inventory, deletable=False),
    "PriceList": Noun("PriceListHeader/ID", _read_price, deletable=False),
}
