"""`services.bod_listener.bods.parse_bod`: round trips with the simulator's builders, action codes, variation, and
refusals."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from services.bod_listener.bods import INFOR_OAGIS_NS, BodError, parse_bod, parse_bod_id
from shared import contracts
from shared.contracts import topics
from simulators.ion.bods import (
    BodContext,
    PriceLine,
    build_customer_party_master,
    build_inventory_count,
    build_item_master,
    build_price_list,
    build_sales_order,
)

pytestmark = pytest.mark.unit

CTX = BodContext(tenant="TST", accounting_entity="100_AAA", location="100")
WHEN = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def _reason(xml: bytes) -> BodError:
    with pytest.raises(BodError) as caught:
        parse_bod(xml)
    return caught.value


# --- round trips -----------------------------------------------------------------------------------------------------
def test_item_master_round_trip() -> None:
    bod = build_item_master(
        CTX,
        item_number="ITM000001",
        description="Steel Bolt M8",
        long_description="Steel Bolt M8, fast range",
        unit_of_measure="PCS",
        item_group="FAST",
        item_type="FIN",
        status="20",
        variation=7,
        changed_at=WHEN,
        creation=WHEN,
    )
    parsed = parse_bod(bod.xml)
    assert (parsed.verb, parsed.noun, parsed.document_id, parsed.variation) == ("Sync", "ItemMaster", "ITM000001", 7)
    assert parsed.bod_id == bod.bod_id
    assert str(uuid.UUID(parsed.bod_id)) == parsed.bod_id  # M3 sends UUID BODIDs
    assert parsed.creation == WHEN
    [event] = parsed.events
    assert event.topic is topics.ITEM_CHANGED
    assert event.key == "ITM000001"
    assert event.payload == contracts.ItemChanged(
        item_number="ITM000001",
        action="change",
        description="Steel Bolt M8",
        long_description="Steel Bolt M8, fast range",
        unit_of_measure="PCS",
        item_group="FAST",
        item_type="FIN",
        status="20",
        changed_at=WHEN,
        variation=7,
    )


def test_customer_party_master_round_trip() -> None:
    bod = build_customer_party_master(
        CTX,
        customer_number="C000042",
        name="Nordic Tools AB",
        address_lines=["1 Harbour Road", "", "Dock 4"],
        town="Stockholm",
        postal_code="11122",
        country="SE",
        phone="+46 1234567",
        email="orders@nordic.example.com",
        status="20",
        action="Add",
        variation=1,
        changed_at=WHEN,
    )
    parsed = parse_bod(bod.xml)
    [event] = parsed.events
    assert event.topic is topics.M3_CUSTOMER_CHANGED
    assert event.key == "C000042"
    payload = event.payload
    assert isinstance(payload, contracts.M3CustomerChanged)
    assert payload.action == "add"
    assert payload.name == "Nordic Tools AB"
    assert payload.address_lines == ["1 Harbour Road", "Dock 4"]
    assert (payload.town, payload.postal_code, payload.country) == ("Stockholm", "11122", "SE")
    assert (payload.phone, payload.email, payload.status) == ("+46 1234567", "orders@nordic.example.com", "20")
    assert payload.changed_at == WHEN
    assert payload.origin == "m3"


def test_sales_order_round_trip_carries_the_customer_reference() -> None:
    bod = build_sales_order(
        CTX,
        order_number="1000000001",
        status="22",
        highest_status="23",
        customer_order_number="AAAQ1001",
        customer_number="C000001",
        variation=2,
        changed_at=WHEN,
    )
    parsed = parse_bod(bod.xml)
    [event] = parsed.events
    assert event.topic is topics.ORDER_STATUS
    assert event.key == "1000000001"
    assert event.payload == contracts.OrderStatusChanged(
        order_number="1000000001",
        customer_order_number="AAAQ1001",
        customer_number="C000001",
        status="22",
        highest_status="23",
        changed_at=WHEN,
        bod_id=bod.bod_id,
    )


def test_inventory_count_round_trip_keyed_by_item() -> None:
    bod = build_inventory_count(
        CTX, item_number="ITM000005", warehouse="200", on_hand="12", allocatable="10", allocated="2", unit="PCS"
    )
    parsed = parse_bod(bod.xml)
    assert parsed.noun == "InventoryCount"
    [event] = parsed.events
    assert event.topic is topics.INVENTORY_CHANGED
    assert event.key == "ITM000005"
    payload = event.payload
    assert isinstance(payload, contracts.InventoryChanged)
    assert (payload.item_number, payload.warehouse) == ("ITM000005", "200")
    assert (payload.on_hand, payload.allocatable, payload.allocated) == (Decimal(12), Decimal(10), Decimal(2))


def test_price_list_gives_one_event_per_line() -> None:
    bod = build_price_list(
        CTX,
        price_list="STD",
        currency="EUR",
        lines=[
            PriceLine("ITM000001", Decimal("12.50"), date(2025, 1, 1)),
            PriceLine("ITM000002", "3", None, customer_number="C000007"),
        ],
        variation=4,
    )
    parsed = parse_bod(bod.xml)
    assert (parsed.document_id, parsed.variation) == ("STD", 4)
    assert [e.key for e in parsed.events] == ["ITM000001", "ITM000002"]
    first, second = (e.payload for e in parsed.events)
    assert isinstance(first, contracts.PriceChanged)
    assert isinstance(second, contracts.PriceChanged)
    assert all(e.topic is topics.PRICE_CHANGED for e in parsed.events)
    assert (first.price_list, first.currency, first.sales_price, first.valid_from) == (
        "STD",
        "EUR",
        Decimal("12.50"),
        date(2025, 1, 1),
    )
    assert (second.customer_number, second.sales_price, second.valid_from) == ("C000007", Decimal(3), None)


# --- action codes and variation --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "action"), [("Add", "add"), ("Change", "change"), ("Replace", "change"), ("Delete", "delete")]
)
def test_action_codes(code: str, action: str) -> None:
    bod = build_item_master(CTX, item_number="ITM000003", action=code)  # type: ignore[arg-type]
    payload = parse_bod(bod.xml).events[0].payload
    assert isinstance(payload, contracts.ItemChanged)
    assert payload.action == action


def test_missing_action_criteria_means_replace() -> None:
    xml = build_item_master(CTX, item_number="ITM000003").xml
    start, end = xml.index(b"<ActionCriteria>"), xml.index(b"</ActionCriteria>") + len(b"</ActionCriteria>")
    payload = parse_bod(xml[:start] + xml[end:]).events[0].payload
    assert isinstance(payload, contracts.ItemChanged)
    assert payload.action == "change"


def test_unknown_action_code_and_delete_without_contract_support() -> None:
    xml = build_item_master(CTX, item_number="ITM000003").xml.replace(b'actionCode="Replace"', b'actionCode="Cancel"')
    assert _reason(xml).reason == "unsupported_action"
    order = build_sales_order(CTX, order_number="1000000001", status="22", action="Delete")
    error = _reason(order.xml)
    assert error.reason == "unsupported_action"
    assert "SalesOrder" in str(error)


def test_variation_from_the_id_attribute_or_an_infor_nid_bodid() -> None:
    bod = build_item_master(CTX, item_number="ITM000003", variation=12)
    assert parse_bod(bod.xml).variation == 12
    # Without the attribute, an `infor-nid:` BODID (other Infor senders) may carry it; a UUID (M3) carries none.
    stripped = bod.xml.replace(b' variationID="12"', b"")
    assert parse_bod(stripped).variation == 0
    nid = "infor-nid:TST:100_AAA:100:ITM000003:1?ItemMaster&amp;verb=Sync&amp;variationID=12"
    with_nid = stripped.replace(bod.bod_id.encode(), nid.encode())
    parsed = parse_bod(with_nid)
    assert parsed.variation == 12
    payload = parsed.events[0].payload
    assert isinstance(payload, contracts.ItemChanged)
    assert payload.variation == 12


def test_show_documents_of_an_initial_load_are_read_like_sync() -> None:
    bod = build_item_master(CTX, item_number="ITM000004", description="Initial", status="20", variation=1)
    shown = bod.xml.replace(b"SyncItemMaster", b"ShowItemMaster").replace(b"<Sync>", b"<Show>")
    shown = shown.replace(b"</Sync>", b"</Show>").replace(b"/SyncItemMaster/", b"/ShowItemMaster/")
    parsed = parse_bod(shown)
    assert (parsed.verb, parsed.noun) == ("Show", "ItemMaster")
    payload = parsed.events[0].payload
    assert isinstance(payload, contracts.ItemChanged)
    assert (payload.item_number, payload.status, payload.action) == ("ITM000004", "20", "change")


def test_customer_address_and_channels_as_infor_sends_them() -> None:
    """Two Address blocks (text lines and discrete parts), ChannelCode Phone / EMail with UseCode."""
    xml = b"""<SyncCustomerPartyMaster xmlns="http://schema.infor.com/InforOAGIS/2">
  <ApplicationArea><Sender><LogicalID>lid://infor.m3.m3</LogicalID></Sender>
    <CreationDateTime>2026-12-01T10:00:00Z</CreationDateTime><BODID>0b61d005-7e42-41e8-bf47-13039b8bd10d</BODID>
  </ApplicationArea>
  <DataArea><Sync><AccountingEntityID>100_AAA</AccountingEntityID>
    <ActionCriteria><ActionExpression actionCode="Replace"/></ActionCriteria></Sync>
    <CustomerPartyMaster>
      <PartyIDs><ID accountingEntity="100_AAA" variationID="4">C000042</ID></PartyIDs>
      <Name>Nordic Pump AB</Name>
      <Location><Address type="Discrete"><StreetName>Harbour Road</StreetName><BuildingNumber>12</BuildingNumber>
        </Address>
        <Address type="text"><AddressLine sequence="2">Box 7</AddressLine><AddressLine sequence="1">12 Harbour Road
        </AddressLine><CityName>Goteborg</CityName><CountryCode listID="Countries">SE</CountryCode>
        <PostalCode>41101</PostalCode></Address></Location>
      <Communication><ChannelCode listID="Communication Channels">Phone</ChannelCode><UseCode>Office</UseCode>
        <DialNumber>+46 31 555</DialNumber></Communication>
      <Communication><ChannelCode>EMail</ChannelCode><URI>orders@nordic.example</URI></Communication>
      <Status><Code>Open</Code></Status>
    </CustomerPartyMaster></DataArea></SyncCustomerPartyMaster>"""
    parsed = parse_bod(xml)
    assert (parsed.document_id, parsed.variation) == ("C000042", 4)
    payload = parsed.events[0].payload
    assert isinstance(payload, contracts.M3CustomerChanged)
    assert payload.address_lines == ["12 Harbour Road", "Box 7"]
    assert (payload.town, payload.country, payload.postal_code) == ("Goteborg", "SE", "41101")
    assert (payload.phone, payload.email, payload.action) == ("+46 31 555", "orders@nordic.example", "change")
    assert payload.status == "20"  # Infor's "Open" as M3's active status


def test_status_words_and_codes() -> None:
    def item_status(code: bytes) -> str:
        bod = build_item_master(CTX, item_number="ITM000005", description="x", status="20", variation=1)
        payload = parse_bod(bod.xml.replace(b">20</Code>", b">" + code + b"</Code>")).events[0].payload
        assert isinstance(payload, contracts.ItemChanged)
        return payload.status

    assert (item_status(b"20"), item_status(b"90"), item_status(b"Active"), item_status(b"Obsolete")) == (
        "20", "90", "20", "90"
    )  # fmt: skip
    with pytest.raises(BodError, match="'Pending' is neither an M3 status nor one of Active"):
        item_status(b"Pending")


def test_parse_bod_id() -> None:
    parts = parse_bod_id("infor-nid:TST:100_AAA:LOC:C000001:3?CustomerPartyMaster&verb=Sync&variationID=9")
    assert (parts.tenant, parts.accounting_entity, parts.location) == ("TST", "100_AAA", "LOC")
    assert (parts.document_id, parts.revision, parts.noun, parts.verb, parts.variation) == (
        "C000001",
        "3",
        "CustomerPartyMaster",
        "Sync",
        9,
    )
    assert parse_bod_id("7b7f6b8e-1b3c-4f7e-9a8e-0d1f2a3b4c5d").variation is None


# --- namespaces ------------------------------------------------------------------------------------------------------
_PREFIXED = f"""<?xml version="1.0" encoding="UTF-8"?>
<inf:SyncItemMaster xmlns:inf="{INFOR_OAGIS_NS}" releaseID="9.2">
  <inf:ApplicationArea>
    <inf:Sender><inf:LogicalID>lid://infor.m3.m3</inf:LogicalID><inf:ComponentID>M3BE</inf:ComponentID></inf:Sender>
    <inf:CreationDateTime>2026-11-23T10:00:00Z</inf:CreationDateTime>
    <inf:BODID>infor-nid:TST:100_AAA::ITM000009:1?ItemMaster&amp;verb=Sync&amp;variationID=5</inf:BODID>
  </inf:ApplicationArea>
  <inf:DataArea>
    <inf:Sync><inf:ActionCriteria><inf:ActionExpression actionCode="Replace"/></inf:ActionCriteria></inf:Sync>
    <inf:ItemMaster>
      <inf:ItemMasterHeader>
        <inf:ItemID><inf:ID>ITM000009</inf:ID></inf:ItemID>
        <inf:Description>Brass Valve 1/2in</inf:Description>
        <inf:Status><inf:Code>90</inf:Code></inf:Status>
      </inf:ItemMasterHeader>
    </inf:ItemMaster>
  </inf:DataArea>
</inf:SyncItemMaster>
""".encode()


def test_prefixed_namespace() -> None:
    parsed = parse_bod(_PREFIXED)
    assert (parsed.noun, parsed.document_id, parsed.variation) == ("ItemMaster", "ITM000009", 5)
    payload = parsed.events[0].payload
    assert isinstance(payload, contracts.ItemChanged)
    assert (payload.description, payload.status, payload.action) == ("Brass Valve 1/2in", "90", "change")
    assert payload.changed_at == datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # CreationDateTime when no LastMod…


def test_default_namespace_and_no_namespace() -> None:
    xml = build_item_master(CTX, item_number="ITM000009").xml
    assert f'xmlns="{INFOR_OAGIS_NS}"'.encode() in xml
    assert parse_bod(xml).document_id == "ITM000009"
    bare = xml.replace(f' xmlns="{INFOR_OAGIS_NS}"'.encode(), b"")
    assert parse_bod(bare).document_id == "ITM000009"


# --- refusals --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "xml",
    [
        b"",
        b"<SyncItemMaster><ApplicationArea>",
        b"not xml at all",
        # billion laughs: nested entity definitions
        b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<SyncItemMaster>&lol3;</SyncItemMaster>""",
        # XXE: an external entity
        b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>
<SyncItemMaster><ApplicationArea><BODID>&e;</BODID></ApplicationArea></SyncItemMaster>""",
        # any DTD at all, even an empty internal one or an external reference
        b"""<?xml version="1.0"?><!DOCTYPE SyncItemMaster []><SyncItemMaster/>""",
        b"""<?xml version="1.0"?><!DOCTYPE SyncItemMaster SYSTEM "http://example.invalid/bod.dtd"><SyncItemMaster/>""",
    ],
    ids=["empty", "truncated", "text", "billion-laughs", "xxe", "internal-dtd", "external-dtd"],
)
def test_malformed_and_hostile_xml_is_refused(xml: bytes) -> None:
    assert _reason(xml).reason == "malformed"


def test_dtd_in_a_real_bod_is_refused() -> None:
    bod = build_item_master(CTX, item_number="ITM000001").xml
    declaration_end = bod.index(b"?>") + 2
    with_dtd = bod[:declaration_end] + b"<!DOCTYPE SyncItemMaster []>" + bod[declaration_end:]
    assert _reason(with_dtd).reason == "malformed"


def test_missing_structure_is_malformed() -> None:
    assert _reason(b"<SyncItemMaster><DataArea/></SyncItemMaster>").reason == "malformed"
    no_noun = build_item_master(CTX, item_number="ITM000001").xml
    start = no_noun.index(b"<ItemMaster>")
    end = no_noun.index(b"</ItemMaster>") + len(b"</ItemMaster>")
    assert _reason(no_noun[:start] + no_noun[end:]).reason == "malformed"


@pytest.mark.parametrize("root", [b"SyncShipment", b"ProcessItemMaster", b"AcknowledgeSalesOrder", b"Whatever"])
def test_unknown_documents(root: bytes) -> None:
    xml = b"<" + root + b' xmlns="' + INFOR_OAGIS_NS.encode() + b'"><ApplicationArea/></' + root + b">"
    error = _reason(xml)
    assert error.reason == "unknown_document"
    assert root.decode() in str(error)


def test_value_over_a_contract_limit_names_the_field() -> None:
    bod = build_item_master(CTX, item_number="ITM000001", description="x" * 61)
    error = _reason(bod.xml)
    assert error.reason == "invalid_content"
    assert "description" in str(error)
    assert "ItemMasterHeader/Description" in str(error)

    too_long_item = build_item_master(CTX, item_number="I" * 16)
    assert "item_number" in str(_reason(too_long_item.xml))


def test_non_numeric_quantity_and_bad_dates_are_invalid_content() -> None:
    bod = build_inventory_count(CTX, item_number="ITM000001", warehouse="100", on_hand="lots", allocatable="1")
    error = _reason(bod.xml)
    assert error.reason == "invalid_content"
    assert "on_hand" in str(error)
    assert "CountQuantity" in str(error)

    price = build_price_list(CTX, price_list="STD", currency="EUR", lines=[PriceLine("ITM1", "NaN")])
    assert _reason(price.xml).reason == "invalid_content"

    created = build_item_master(CTX, item_number="ITM000001", creation=WHEN).xml
    bad_date = created.replace(b"2026-11-23T10:00:00Z", b"yesterday")
    assert _reason(bad_date).reason == "invalid_content"


def test_oversized_bod_is_refused() -> None:
    xml = b"<SyncItemMaster>" + b" " * (6 * 1024 * 1024) + b"</SyncItemMaster>"
    assert _reason(xml).reason == "malformed"
