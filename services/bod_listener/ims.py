"""The ION Messaging Service (IMS) v3, receiving side: how ION delivers BODs to an application.

ION reaches a third-party application through a connection point of type "IMS via ION API" whose application
has an IMS end point: the ION API Gateway forwards ION's calls to the API suite registered from the template
"ION Messaging Service v3" (context `ims`), i.e. to these endpoints under `M3B_IMS_PATH_PREFIX`:

- `GET ping`: ION checks that it reaches the application and is authorized (200 `{"code": 200, "status": "OK"}`);
- `GET protocol`: what the application speaks (`version` v3, `messageMethod` multipartMessage, encodings, …);
- `GET versions`: `{"supportedVersions": ["v3"]}`;
- `POST v3/multipartMessage`: one message, `multipart/form-data` with a part `ParameterRequest` (JSON:
  `documentName` such as `Sync.ItemMaster`, `messageId`, `fromLogicalId`, `toLogicalId`, `encoding`,
  `characterSet`, …) and a part `MessagePayload` (the BOD, `application/octet-stream`).

Answers (IMS v3): 202 accepted (published, a duplicate, stale, or kept as a dead letter), 400 malformed (multipart,
parameters, encoding, base64 or deflate data), 401 not authenticated, 403 another tenant or sender, 412 a document
the bridge is not configured to accept, 413 too large, 503 when the broker or the state store cannot take it now
(ION delivers again). Never a 500 for what a request holds. Facts and sources: `docs/m3-interfaces.md` ("ION
Messaging Service v3").

`read_message` is the pure part (headers + body → `ImsMessage`, or `ImsError`); `ims_routes.ims_router` is the
HTTP part, which hands the BOD to `BodReceiver.receive` (parse, claim, publish or dead-letter).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import logging
import re
import zlib
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from python_multipart.multipart import MultipartParser, parse_options_header

log = logging.getLogger(__name__)
# python-multipart logs a warning for every malformed body; the refusal is logged once here, with its reason.
logging.getLogger("python_multipart").setLevel(logging.ERROR)

PARAMETER_PART = "ParameterRequest"
PAYLOAD_PART = "MessagePayload"
#: `encoding` values: NONE and BASE64 (IMS clients), DEFLATE (zlib data, as Infor's IMS sample application sends).
ENCODINGS = ("NONE", "BASE64", "DEFLATE")
TENANT_HEADER = "X-TenantId"
#: A message has two parts; a few more are tolerated and ignored, a flood is refused.
MAX_PARTS = 8
MAX_PART_HEADERS = 8

ims_requests_total = Counter(
    "m3bridge_ims_requests_total",
    "ION Messaging Service (IMS v3) requests by endpoint and answer.",
    ["endpoint", "status"],
)


class ImsError(Exception):
    """A request refused; `status` is the HTTP answer, `reason` a short label (metrics, the answer's `reason`)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class ParameterRequest(BaseModel):
    """The `ParameterRequest` part. Keys as IMS clients send them; others (batch fields, `custom_*`) are kept."""

    model_config = ConfigDict(
        extra="allow", populate_by_name=True, str_strip_whitespace=True, coerce_numbers_to_str=True
    )

    document_name: str = Field(alias="documentName", min_length=1, max_length=255)
    message_id: str = Field(alias="messageId", min_length=1, max_length=255)
    from_logical_id: str = Field("", alias="fromLogicalId", max_length=255)
    to_logical_id: str = Field("", alias="toLogicalId", max_length=255)
    encoding: str = Field("NONE", max_length=32)
    character_set: str = Field("UTF-8", alias="characterSet", max_length=64)
    accounting_entity: str = Field("", alias="accountingEntity", max_length=255)
    location: str = Field("", max_length=255)
    document_id: str = Field("", alias="documentId", max_length=255)


#: The request body as the OpenAPI document shows it (the route reads the raw multipart body itself).
MULTIPART_MESSAGE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [PARAMETER_PART, PAYLOAD_PART],
                    "properties": {
                        PARAMETER_PART: ParameterRequest.model_json_schema(by_alias=True),
                        PAYLOAD_PART: {"type": "string", "format": "binary", "description": "the BOD"},
                    },
                },
                "encoding": {PARAMETER_PART: {"contentType": "application/json"}},
            }
        },
    }
}


@dataclass(frozen=True)
class Part:
    name: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class ImsMessage:
    parameters: ParameterRequest
    payload: bytes  # after `encoding`, before `characterSet`


@dataclass(frozen=True)
class ImsConfig:
    accepted_documents: tuple[str, ...]
    sender_logical_ids: tuple[str, ...] = ()  # empty: any sender
    tenant_id: str = ""  # empty: any X-TenantId
    max_bytes: int = 2_097_152
    service: str = "bod-listener"  # in the log line and count of each refusal
    _accepted: frozenset[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_accepted", frozenset(name.casefold() for name in self.accepted_documents))

    def accepts(self, document_name: str) -> bool:
        return document_name.casefold() in self._accepted


# --- the pure part ---------------------------------------------------------------------------------------------------
def parse_multipart(content_type: str, body: bytes) -> dict[str, Part]:
    """The named parts of a `multipart/form-data` body (python-multipart's streaming parser). The first part of a
    name wins. Raises ImsError(400) for anything that is not a complete multipart body."""
    mime, options = _options(content_type)
    if not mime.startswith(b"multipart/"):
        raise ImsError(400, "not_multipart", f"Content-Type {content_type[:80]!r} is not multipart/form-data")
    boundary = options.get(b"boundary", b"")
    if not boundary or len(boundary) > 70:
        raise ImsError(400, "bad_boundary", "the multipart Content-Type has no usable boundary")
    parts: list[Part] = []
    headers: dict[str, str] = {}
    header_name, header_value, data = bytearray(), bytearray(), bytearray()
    ended: list[bool] = []

    def on_part_begin() -> None:
        if len(parts) >= MAX_PARTS:
            raise ImsError(400, "too_many_parts", f"more than {MAX_PARTS} parts")
        headers.clear()
        data.clear()

    def on_header_field(chunk: bytes, start: int, end: int) -> None:
        header_name.extend(chunk[start:end])

    def on_header_value(chunk: bytes, start: int, end: int) -> None:
        header_value.extend(chunk[start:end])

    def on_header_end() -> None:
        headers[header_name.decode("latin-1").strip().lower()] = header_value.decode("latin-1").strip()
        header_name.clear()
        header_value.clear()

    def on_part_data(chunk: bytes, start: int, end: int) -> None:
        data.extend(chunk[start:end])

    def on_part_end() -> None:
        _, disposition = _options(headers.get("content-disposition", ""))
        name = disposition.get(b"name", b"").decode("utf-8", errors="replace")
        kind = _options(headers.get("content-type", ""))[0].decode("latin-1")
        parts.append(Part(name, kind, bytes(data)))

    def on_end() -> None:
        ended.append(True)

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_end": on_end,
        },
        max_header_count=MAX_PART_HEADERS,
    )
    try:
        parser.write(body)
        parser.finalize()
    except ImsError:
        raise
    except Exception as exc:  # python-multipart raises MultipartParseError, and ValueError on odd input
        raise ImsError(400, "malformed_multipart", f"not a well-formed multipart body: {exc}"[:300]) from None
    if not ended:
        raise ImsError(400, "malformed_multipart", "the multipart body ends before its closing boundary")
    named: dict[str, Part] = {}
    for part in parts:
        named.setdefault(part.name, part)
    return named


def _options(value: str) -> tuple[bytes, dict[bytes, bytes]]:
    """A header's value and parameters (`multipart/form-data; boundary=…`, `form-data; name="…"`)."""
    try:
        return parse_options_header(value)
    except Exception:  # e.g. characters outside Latin-1: not something a client can send as a header
        raise ImsError(400, "bad_header", f"unreadable header value {value[:60]!r}") from None


def decode_payload(encoding: str, data: bytes, limit: int) -> bytes:
    """The payload's bytes per the `encoding` parameter. Raises ImsError (400 unknown encoding or bad data, 413 when
    inflated data would exceed `limit`)."""
    kind = encoding.strip().upper()
    if kind == "NONE":
        return data
    if kind == "BASE64":
        try:
            return base64.b64decode(re.sub(rb"\s+", b"", data), validate=True)
        except (binascii.Error, ValueError):
            raise ImsError(400, "bad_base64", "MessagePayload is not valid base64 (encoding BASE64)") from None
    if kind == "DEFLATE":
        return _inflate(data, limit)
    raise ImsError(400, "unsupported_encoding", f"encoding {encoding[:32]!r} (supported: {', '.join(ENCODINGS)})")


def _inflate(data: bytes, limit: int) -> bytes:
    for wbits in (zlib.MAX_WBITS, -zlib.MAX_WBITS):  # zlib-wrapped (Infor's sample), else raw deflate
        inflater = zlib.decompressobj(wbits)
        try:
            inflated = inflater.decompress(data, limit + 1)
        except zlib.error:
            continue
        if len(inflated) > limit:
            raise ImsError(413, "too_large", f"the inflated payload is over {limit} bytes")
        if inflater.eof:
            return inflated
    raise ImsError(400, "bad_deflate", "MessagePayload is not complete deflate data (encoding DEFLATE)")


def codec_of(character_set: str) -> str:
    """Python's codec for an IMS `characterSet`; ImsError(400) when there is none."""
    try:
        return codecs.lookup(character_set.strip() or "UTF-8").name
    except (LookupError, ValueError):
        raise ImsError(400, "unknown_charset", f"characterSet {character_set[:64]!r} is not a known charset") from None


_DECLARATION = re.compile(r"^\ufeff?\s*<\?xml\b[^>]*?\?>")
_DECLARED_ENCODING = re.compile(r"""\bencoding\s*=\s*["']([A-Za-z0-9._:-]+)["']""")


def to_utf8(payload: bytes, codec: str) -> bytes:
    """The document in UTF-8, its XML declaration saying so (what the BOD parser and the inbound topic read).
    Raises UnicodeDecodeError when the bytes are not text in `codec`."""
    text = payload.decode(codec)
    if codec == "utf-8":
        declaration = _DECLARATION.match(text)
        declared = _DECLARED_ENCODING.search(declaration.group(0)) if declaration else None
        if declared is None or declared.group(1).replace("_", "-").casefold() in ("utf-8", "utf8"):
            return payload
    return _DECLARATION.sub('<?xml version="1.0" encoding="UTF-8"?>', text.lstrip("\ufeff"), count=1).encode("utf-8")


def read_message(content_type: str, body: bytes, config: ImsConfig) -> ImsMessage:
    """Parts → parameters → payload, checked in that order; the charset is applied later (a payload that is not
    text in its charset is kept as a dead letter, not refused)."""
    parts = parse_multipart(content_type, body)
    missing = [name for name in (PARAMETER_PART, PAYLOAD_PART) if name not in parts]
    if missing:
        found = ", ".join(sorted(repr(name) for name in parts)) or "none"
        raise ImsError(400, "missing_part", f"multipart part(s) {', '.join(missing)} missing (found {found})")
    try:
        parameters = ParameterRequest.model_validate_json(parts[PARAMETER_PART].data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(step) for step in first["loc"]) or PARAMETER_PART
        raise ImsError(400, "bad_parameters", f"ParameterRequest: {where}: {first['msg']}"[:300]) from None
    if config.sender_logical_ids and parameters.from_logical_id not in config.sender_logical_ids:
        raise ImsError(403, "sender_not_allowed", f"fromLogicalId {parameters.from_logical_id[:80]!r} is not allowed")
    if not config.accepts(parameters.document_name):
        accepted = ", ".join(config.accepted_documents)
        raise ImsError(
            412, "document_not_accepted", f"documentName {parameters.document_name!r} is not accepted ({accepted})"
        )
    codec_of(parameters.character_set)  # an unknown charset is the request's fault: 400 before anything is kept
    payload = decode_payload(parameters.encoding, parts[PAYLOAD_PART].data, config.max_bytes)
    if not payload.strip():
        raise ImsError(400, "empty_payload", "MessagePayload is empty")
    return ImsMessage(parameters, payload)
