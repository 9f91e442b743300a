"""The BOD envelope: safe XML, verb + noun, ApplicationArea, BODID, actionCode; `parse_bod` reads one BOD."""

from __future__ import annotations

import re
from dataclasses import dataclass
from xml.etree.ElementTree import Element, ParseError

import defusedxml  # type: ignore[import-untyped]
import defusedxml.ElementTree as DefusedET  # type: ignore[import-untyped]

from services.bod_listener.bods.elements import attribute, children, find, is_count, local_name, parse_datetime, text_of
from services.bod_listener.bods.model import Action, BodError, NormalizedEvent, ParsedBod
from services.bod_listener.bods.nouns import NOUNS, NounContext

#: The namespace of Infor's OAGIS BODs (matched by local name only; any namespace or none is accepted).
INFOR_OAGIS_NS = "http://schema.infor.com/InforOAGIS/2"
#: M3's logical id as the sender of its BODs.
M3_LOGICAL_ID = "lid://infor.m3.m3"
#: Larger documents are refused as malformed (an M3 master-data BOD is a few kB).
MAX_BOD_BYTES = 5 * 1024 * 1024

_ACTIONS: dict[str, Action] = {"Add": "add", "Change": "change", "Replace": "change", "Delete": "delete"}


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
        elif name == "variationID" and is_count(value):
            variation = int(value)
    return BodId(tenant, entity, location, document_id, revision, noun, verb, variation)


# Sync: a change; Show: what M3 sends for an initial load (EVS005, e.g. M3BE_Out_ShowItemMaster), read the same way.
VERBS = ("Sync", "Show")
SUPPORTED_DOCUMENTS = tuple(f"{verb}{noun}" for verb in VERBS for noun in NOUNS)

_ROOT = re.compile(r"^([A-Z][a-z]+)([A-Z]\w*)$")


def _parse_xml(xml: bytes) -> Element:
    if len(xml) > MAX_BOD_BYTES:
        raise BodError("malformed", f"BOD is {len(xml)} bytes, more than {MAX_BOD_BYTES}")
    try:
        root: Element = DefusedET.fromstring(xml, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DefusedXmlException as exc:
        raise BodError("malformed", f"refused XML construct: {type(exc).__name__} ({exc})") from None
    except ParseError as exc:
        raise BodError("malformed", f"not well-formed XML: {exc}") from None
    except LookupError as exc:  # an XML declaration naming an encoding Python does not know
        raise BodError("malformed", f"unknown encoding in the XML declaration: {exc}") from None
    return root


def parse_bod(xml: bytes) -> ParsedBod:
    """Read one BOD. Raises BodError (see `services.bod_listener.bods` for the reasons)."""
    root = _parse_xml(xml)
    name = local_name(root.tag)
    match = _ROOT.match(name)
    if match is None:
        raise BodError("unknown_document", f"root element <{name}> is not a verb + noun BOD")
    verb, noun_name = match.groups()
    if verb not in VERBS or noun_name not in NOUNS:
        supported = ", ".join(SUPPORTED_DOCUMENTS)
        raise BodError("unknown_document", f"{name} is not a document the bridge reads (supported: {supported})")
    spec = NOUNS[noun_name]

    application = find(root, "ApplicationArea")
    data_area = find(root, "DataArea")
    if application is None or data_area is None:
        raise BodError("malformed", f"{name}: ApplicationArea and DataArea are required")
    bod_id = text_of(application, "BODID")
    if not bod_id:
        raise BodError("malformed", f"{name}: ApplicationArea/BODID is missing")
    creation_text = text_of(application, "CreationDateTime")
    if not creation_text:
        raise BodError("malformed", f"{name}: ApplicationArea/CreationDateTime is missing")
    creation = parse_datetime(creation_text, f"{name}/ApplicationArea/CreationDateTime")

    verb_element = find(data_area, verb)
    if verb_element is None:
        raise BodError("malformed", f"{name}: DataArea/{verb} is missing")
    code = attribute(find(verb_element, "ActionCriteria/ActionExpression"), "actionCode") or "Replace"
    action = _ACTIONS.get(code)
    if action is None:
        raise BodError("unsupported_action", f"{name}: actionCode {code!r} (known: {', '.join(_ACTIONS)})")
    if action == "delete" and not spec.deletable:
        raise BodError("unsupported_action", f"{name}: actionCode Delete is not supported for {noun_name}")

    nouns = children(data_area, noun_name)
    if not nouns:
        raise BodError("malformed", f"{name}: DataArea/{noun_name} is missing")
    parsed_id = parse_bod_id(bod_id)
    events: list[NormalizedEvent] = []
    first_id, first_variation = "", 0
    for index, noun in enumerate(nouns):
        id_element = find(noun, spec.id_path)
        document_id = text_of(id_element) or parsed_id.document_id
        variation_text = attribute(id_element, "variationID")
        if variation_text:
            if not is_count(variation_text):
                raise BodError("invalid_content", f"{name}: {noun_name}/{spec.id_path}/@variationID {variation_text!r}")
            variation = int(variation_text)
        else:
            variation = parsed_id.variation or 0
        if index == 0:
            first_id, first_variation = document_id, variation
        ctx = NounContext(name, document_id, action, variation, creation, bod_id)
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
