"""Namespace-agnostic access to BOD XML (elements matched by local name only) and the BOD value formats."""

from __future__ import annotations

from datetime import UTC, date, datetime
from xml.etree.ElementTree import Element

from services.bod_listener.bods.model import BodError


def local_name(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def children(element: Element, name: str) -> list[Element]:
    return [child for child in element if local_name(child.tag) == name]


def find(element: Element, path: str) -> Element | None:
    found: Element | None = element
    for step in path.split("/"):
        if found is None:
            return None
        found = next(iter(children(found, step)), None)
    return found


def text_of(element: Element | None, path: str = "") -> str:
    target = find(element, path) if element is not None and path else element
    if target is None or target.text is None:
        return ""
    return target.text.strip()


def attribute(element: Element | None, name: str) -> str:
    if element is None:
        return ""
    for key, value in element.attrib.items():
        if local_name(key) == name:
            return value.strip()
    return ""


def name_value(element: Element, name: str) -> str:
    """A `UserArea/Property/NameValue[@name]`: where M3 puts its own fields (STAT, ORST)."""
    user_area = find(element, "UserArea")
    if user_area is None:
        return ""
    for prop in children(user_area, "Property"):
        for pair in children(prop, "NameValue"):
            if attribute(pair, "name") == name:
                return text_of(pair)
    return ""


def is_count(text: str) -> bool:
    """ASCII digits, few enough for `int()` (`"²".isdigit()` is True, and int() refuses more than 4300 digits)."""
    return text.isascii() and text.isdigit() and len(text) <= 18


def parse_datetime(text: str, where: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise BodError("invalid_content", f"{where}: {text!r} is not an ISO 8601 date-time") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def parse_date(text: str, where: str) -> date | None:
    if not text:
        return None
    if len(text) == 10:
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    return parse_datetime(text, where).date()
