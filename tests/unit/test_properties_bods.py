"""Property tests: for ANY bytes posted as an ION BOD, `services.bod_listener.bods.parse_bod` returns a valid
`ParsedBod` or raises
`BodError`, never another exception, and never hangs: noise, mutated BOD trees (renamed, dropped, duplicated
elements and attributes), damaged bytes, DTDs and entities. Inputs and settings: `tests/unit/outside_inputs.py`."""

from __future__ import annotations

import copy
import re
import xml.etree.ElementTree as ET

import pytest
from hypothesis import example, given, strategies as st

from services.bod_listener.bods import BodError, ParsedBod, parse_bod
from tests.unit.outside_inputs import (
    BOD_SEEDS,
    DEPTHS,
    FUZZ,
    NUMBER_LIKE,
    TRICKY_TEXT,
    mutated_bytes,
    parsed_or_refused,
)

pytestmark = pytest.mark.unit

# --- 2. ION BODs -------------------------------------------------------------------------------------------------

BOD_NAMES = (
    "SyncItemMaster", "ShowItemMaster", "ProcessItemMaster", "SyncShipment", "Sync", "syncItemMaster",
    "ApplicationArea", "DataArea", "BODID", "CreationDateTime", "ActionCriteria", "ActionExpression", "ItemMaster",
    "ItemMasterHeader", "ItemID", "ID", "Description", "Status", "Code", "UserArea", "Property", "NameValue",
    "CustomerPartyMaster", "PartyIDs", "Location", "Address", "AddressLine", "Communication", "ChannelCode",
    "SalesOrder", "SalesOrderHeader", "DocumentID", "EffectiveDateTime", "InventoryCount", "InventoryCountLine",
    "CountQuantity", "PriceList", "PriceListHeader", "PriceListLine", "Price", "Amount", "LastModificationDateTime",
)  # fmt: skip
BOD_ATTRIBUTES = ("variationID", "actionCode", "type", "currencyID", "sequence", "name", "xmlns", "{urn:x}type")
XML_PROLOGUES = (
    b'<!DOCTYPE r [<!ENTITY e "x">]>',
    b'<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>',
    b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
    b'<!DOCTYPE r SYSTEM "http://127.0.0.1:9/evil.dtd">',
    b"<?xml-stylesheet href='x'?>",
    b"<!-- a comment -->",
)
XML_FRAGMENTS = (
    b"&e;", b"&nope;", b"&amp;", b"&#0;", b"&#xD800;", b"&#1114112;", b"&#x1F600;", b"<![CDATA[x]]>", b"<?pi x?>",
    b"<!-- c -->", b"<a:b xmlns:a='urn:a'/>", b"<undeclared:x/>", b"\xff", b"\xc3\x28", b"<", b">", b"]]>",
)  # fmt: skip
XML_DECLARATIONS = (
    b"<?xml version='1.0' encoding='latin-1'?>", b"<?xml version='1.0' encoding='utf-16'?>",
    b"<?xml version='1.0' encoding='x-unknown'?>", b"<?xml version='1.0' encoding='ebcdic-cp-us'?>",
    b"<?xml version='2.0'?>", b"<?xml version='1.0' standalone='no'?>",
)  # fmt: skip


def _rename(tag: str, name: str) -> str:
    namespace = tag[: tag.index("}") + 1] if tag.startswith("{") else ""
    return namespace + name


@st.composite
def mutated_bod_tree(draw: st.DrawFn) -> bytes:
    """A valid BOD with elements dropped, duplicated, renamed, emptied, or given odd text and attributes."""
    root = ET.fromstring(draw(st.sampled_from(BOD_SEEDS)))
    for _ in range(draw(st.integers(1, 5))):
        elements = list(root.iter())
        parents = {child: parent for parent in elements for child in parent}
        element = draw(st.sampled_from(elements))
        parent = parents.get(element)
        change = draw(st.sampled_from(["drop", "duplicate", "rename", "text", "attribute", "number", "empty", "move"]))
        if change == "drop" and parent is not None:
            parent.remove(element)
        elif change == "duplicate" and parent is not None:
            parent.insert(list(parent).index(element), copy.deepcopy(element))
        elif change == "rename":
            element.tag = _rename(element.tag, draw(st.sampled_from(BOD_NAMES) | st.from_regex(r"\A[A-Za-z]\w{0,8}\Z")))
        elif change == "text":
            element.text = draw(st.sampled_from(TRICKY_TEXT) | st.text(max_size=20) | NUMBER_LIKE)
        elif change == "attribute":
            # Mostly an attribute the reader looks at (variationID, actionCode, sequence, ...), else a new one.
            element = draw(st.sampled_from([e for e in elements if e.attrib] or elements))
            element.set(
                draw(st.sampled_from(sorted(element.attrib) or BOD_ATTRIBUTES) | st.sampled_from(BOD_ATTRIBUTES)),
                draw(st.sampled_from(TRICKY_TEXT) | st.text(max_size=8) | NUMBER_LIKE),
            )
        elif change == "number":
            # The numbers the envelope reads: the variation (attribute, or in the BODID) and address line order.
            numbered = [(e, key) for e in elements for key in e.attrib if key in ("variationID", "sequence")]
            bod_ids = [e for e in elements if e.tag.endswith("BODID")]
            value = draw(NUMBER_LIKE | st.sampled_from(TRICKY_TEXT))
            in_an_attribute = draw(st.booleans())
            if numbered and in_an_attribute:
                numbered_element, key = draw(st.sampled_from(numbered))
                numbered_element.set(key, value)
            elif bod_ids:
                noun = root.tag.rsplit("}", 1)[-1][len("Sync") :]
                bod_ids[0].text = f"infor-nid:TST:100_AAA:100:DOC1:1?{noun}&verb=Sync&variationID={value}"
        elif change == "empty":
            element[:] = []
        elif change == "move" and parent is not None:
            parent.remove(element)
            root.append(element)
    # Encoded by hand: a lone surrogate in the odd texts must reach the parser, not stop the serializer.
    return b"<?xml version='1.0' encoding='utf-8'?>\n" + ET.tostring(root, encoding="unicode").encode(
        "utf-8", "surrogatepass"
    )


@st.composite
def damaged_bod_bytes(draw: st.DrawFn) -> bytes:
    """A valid BOD damaged as text: DTDs and entities, fragments anywhere, another declared encoding, deep nesting."""
    xml = draw(st.sampled_from(BOD_SEEDS))
    declaration, _, body = xml.partition(b"?>")
    declaration += b"?>"
    change = draw(st.sampled_from(["prologue", "fragment", "declaration", "deep", "re-encode", "truncate"]))
    if change == "prologue":
        return declaration + draw(st.sampled_from(XML_PROLOGUES)) + body.replace(b"BOD", b"BOD&e;", 1)
    if change == "fragment":
        at = draw(st.integers(0, len(body)))
        return declaration + body[:at] + draw(st.sampled_from(XML_FRAGMENTS)) + body[at:]
    if change == "declaration":
        encoding = draw(st.from_regex(r"\A[A-Za-z][A-Za-z0-9_-]{0,11}\Z").map(lambda name: name.encode()))
        return (
            draw(st.sampled_from(XML_DECLARATIONS) | st.just(b"<?xml version='1.0' encoding='%s'?>" % encoding)) + body
        )
    if change == "deep":
        depth = draw(DEPTHS)
        at = body.index(b"</DataArea>") if draw(st.booleans()) else body.index(b"<ApplicationArea>")
        return declaration + body[:at] + b"<D>" * depth + b"</D>" * depth + body[at:]
    if change == "re-encode":
        return body.decode("utf-8").encode(draw(st.sampled_from(["utf-16", "utf-32", "latin-1", "cp500"])), "replace")
    return xml[: draw(st.integers(0, len(xml)))]


def assert_valid_bod(parsed: ParsedBod) -> None:
    assert parsed.bod_id
    assert parsed.events
    for event in parsed.events:
        payload = event.payload
        assert isinstance(payload, event.topic.payload)
        # What bod-listener publishes is what the topic's consumers will read back.
        assert type(payload).model_validate_json(payload.model_dump_json()) == payload


#: "²".isdigit() is True, int("²") raises.
INFOR_NID_WITH_SUPERSCRIPT_VARIATION = (
    b"infor-nid:TST:100_AAA:100:ITM000001:1?ItemMaster&amp;verb=Sync&amp;variationID=\xc2\xb2"
)


def test_the_seed_bods_are_valid() -> None:
    for xml in BOD_SEEDS:
        assert_valid_bod(parse_bod(xml))


@FUZZ
@given(xml=st.binary(max_size=400) | mutated_bod_tree() | damaged_bod_bytes() | mutated_bytes(BOD_SEEDS))
@example(xml=b"<?xml version='1.0' encoding='x-unknown'?><SyncItemMaster/>")
@example(xml=BOD_SEEDS[0].replace(b'variationID="3"', b'variationID="\xc2\xb2"'))
@example(xml=BOD_SEEDS[0].replace(b'variationID="3"', b'variationID="' + b"9" * 5000 + b'"'))
@example(xml=BOD_SEEDS[1].replace(b'sequence="1"', b'sequence="\xc2\xb2"'))
@example(xml=re.sub(rb"<BODID>[^<]*", b"<BODID>" + INFOR_NID_WITH_SUPERSCRIPT_VARIATION, BOD_SEEDS[0]))
@example(xml=b" " * (5 * 1024 * 1024 + 1))
def test_a_bod_is_parsed_or_refused_with_a_bod_error(xml: bytes) -> None:
    parsed = parsed_or_refused(lambda: parse_bod(xml), BodError, shown=xml)
    if parsed is not None:
        assert_valid_bod(parsed)
