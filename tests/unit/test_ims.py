"""The IMS v3 receiver's reading of a request (services/bod_listener/ims.py): the multipart body, the
ParameterRequest, the payload's encoding and character set. Hand-made bodies for each way a message can be wrong,
and fuzzed ones: anything is read or refused with a 4xx and a reason, never an unexpected exception (a 500)."""

from __future__ import annotations

import base64
import contextlib
import json
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from services.bod_listener.app import IMS_DOCUMENTS, BodListenerSettings
from services.bod_listener.bods import parse_bod
from services.bod_listener.ims import (
    ImsConfig,
    ImsError,
    codec_of,
    decode_payload,
    parse_multipart,
    read_message,
    to_utf8,
)
from simulators.ion.bods import BodContext, Encoding, build_item_master, ims_message
from tests.fuzz import examples

pytestmark = pytest.mark.unit

CONFIG = ImsConfig(accepted_documents=tuple(IMS_DOCUMENTS), max_bytes=200_000)
BOD = build_item_master(BodContext(), item_number="ITM000001", description="Bolt", status="20", variation=3)
BOUNDARY = "b0undary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def multipart(*parts: tuple[str, str, bytes], boundary: str = BOUNDARY, close: bool = True) -> bytes:
    """A multipart/form-data body from (name, content type, data) parts."""
    chunks = []
    for name, kind, data in parts:
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n'.encode())
        chunks.append(f"Content-Type: {kind}\r\n\r\n".encode() + data + b"\r\n")
    if close:
        chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks)


def parameters(**overrides: Any) -> bytes:
    values: dict[str, Any] = {
        "documentName": "Sync.ItemMaster", "messageId": "msg-1", "fromLogicalId": "lid://infor.m3.m3",
        "toLogicalId": "lid://infor.ims.m3bridge", "encoding": "NONE", "characterSet": "UTF-8",
    }  # fmt: skip
    values.update(overrides)
    return json.dumps({k: v for k, v in values.items() if v is not None}).encode()


def message(payload: bytes = BOD.xml, **overrides: Any) -> bytes:
    return multipart(
        ("ParameterRequest", "application/json", parameters(**overrides)),
        ("MessagePayload", "application/octet-stream", payload),
    )


def refused(body: bytes, content_type: str = CONTENT_TYPE, config: ImsConfig = CONFIG) -> ImsError:
    with pytest.raises(ImsError) as caught:
        read_message(content_type, body, config)
    return caught.value


@pytest.mark.parametrize("encoding", ["NONE", "BASE64"])
def test_the_simulators_message_is_read_back_to_the_same_bod(encoding: Encoding) -> None:
    body, content_type = ims_message(
        BOD, message_id="m-42", encoding=encoding, from_logical_id="lid://infor.m3.m3", to_logical_id="lid://x"
    )
    read = read_message(content_type, body, CONFIG)
    assert read.payload == BOD.xml
    assert (read.parameters.document_name, read.parameters.message_id) == ("Sync.ItemMaster", "m-42")
    assert read.parameters.model_extra == {"variationId": 3}
    assert parse_bod(to_utf8(read.payload, codec_of(read.parameters.character_set))).bod_id == BOD.bod_id


def test_base64_may_be_wrapped_in_lines_and_deflate_is_inflated() -> None:
    wrapped = base64.encodebytes(BOD.xml)  # 76-character lines
    assert read_message(CONTENT_TYPE, message(wrapped, encoding="base64"), CONFIG).payload == BOD.xml
    assert read_message(CONTENT_TYPE, message(zlib.compress(BOD.xml), encoding="DEFLATE"), CONFIG).payload == BOD.xml
    raw = zlib.compressobj(wbits=-15)
    deflated = raw.compress(BOD.xml) + raw.flush()
    assert read_message(CONTENT_TYPE, message(deflated, encoding="DEFLATE"), CONFIG).payload == BOD.xml


def test_parts_in_either_order_with_extra_parts_and_headers() -> None:
    body = multipart(
        ("MessagePayload", "application/octet-stream", BOD.xml),
        ("Other", "text/plain", b"ignored"),
        ("ParameterRequest", "application/json; charset=utf-8", parameters()),
    )
    assert read_message(CONTENT_TYPE, body, CONFIG).payload == BOD.xml


@pytest.mark.parametrize(
    ("content_type", "body", "reason"),
    [
        ("application/xml", BOD.xml, "not_multipart"),
        ("multipart/form-data", message(), "bad_boundary"),
        (f"multipart/form-data; boundary={'x' * 71}", message(), "bad_boundary"),
        ("multipart/form-data; boundary=other", message(), "malformed_multipart"),
        (CONTENT_TYPE, message()[:-30], "malformed_multipart"),  # cut before the closing boundary
        (CONTENT_TYPE, b"", "malformed_multipart"),
        (CONTENT_TYPE, b"--b0undary\r\nno header end", "malformed_multipart"),
        (CONTENT_TYPE, multipart(("MessagePayload", "application/octet-stream", BOD.xml)), "missing_part"),
        (CONTENT_TYPE, multipart(("ParameterRequest", "application/json", parameters())), "missing_part"),
        (CONTENT_TYPE, multipart(("parameterrequest", "application/json", parameters()),
                                 ("messagepayload", "application/octet-stream", BOD.xml)), "missing_part"),
        (CONTENT_TYPE, multipart(*[(f"p{n}", "text/plain", b"x") for n in range(9)]), "too_many_parts"),
        (CONTENT_TYPE, message(messageId=None), "bad_parameters"),
        (CONTENT_TYPE, message(documentName=""), "bad_parameters"),
        (CONTENT_TYPE, message(messageId=["not", "text"]), "bad_parameters"),
        (CONTENT_TYPE, multipart(("ParameterRequest", "application/json", b"{not json"),
                                 ("MessagePayload", "application/octet-stream", BOD.xml)), "bad_parameters"),
        (CONTENT_TYPE, multipart(("ParameterRequest", "application/json", b"[1, 2]"),
                                 ("MessagePayload", "application/octet-stream", BOD.xml)), "bad_parameters"),
        (CONTENT_TYPE, multipart(("ParameterRequest", "application/json", b"\xff\xfe{}"),
                                 ("MessagePayload", "application/octet-stream", BOD.xml)), "bad_parameters"),
        (CONTENT_TYPE, message(encoding="GZIP"), "unsupported_encoding"),
        (CONTENT_TYPE, message(b"%%% not base64 %%%", encoding="BASE64"), "bad_base64"),
        (CONTENT_TYPE, message(b"QUJDR", encoding="BASE64"), "bad_base64"),  # incomplete
        (CONTENT_TYPE, message(b"<xml/>", encoding="DEFLATE"), "bad_deflate"),
        (CONTENT_TYPE, message(zlib.compress(BOD.xml)[:-8], encoding="DEFLATE"), "bad_deflate"),  # truncated
        (CONTENT_TYPE, message(characterSet="KLINGON-8"), "unknown_charset"),
        (CONTENT_TYPE, message(b"  \r\n "), "empty_payload"),
        (CONTENT_TYPE, message(documentName="Sync.Shipment"), "document_not_accepted"),
        (CONTENT_TYPE, message(documentName="Process.ItemMaster"), "document_not_accepted"),
    ],
    ids=lambda value: value if isinstance(value, str) and len(value) < 40 else "",
)  # fmt: skip
def test_a_malformed_or_unexpected_message_is_refused_with_its_reason(
    content_type: str, body: bytes, reason: str
) -> None:
    error = refused(body, content_type)
    assert error.reason == reason, str(error)
    assert error.status == (412 if reason == "document_not_accepted" else 400)
    assert len(str(error)) <= 400


def test_the_first_part_of_a_name_wins_and_part_headers_are_read() -> None:
    body = multipart(("MessagePayload", "application/octet-stream", b"first"), ("MessagePayload", "text/plain", b"2"))
    parts = parse_multipart(CONTENT_TYPE, body)
    assert (parts["MessagePayload"].data, parts["MessagePayload"].content_type) == (
        b"first",
        "application/octet-stream",
    )


def test_a_deflate_bomb_is_refused_as_too_large() -> None:
    bomb = zlib.compress(b"<" + b"a" * 5_000_000)
    error = refused(message(bomb, encoding="DEFLATE"))
    assert (error.status, error.reason) == (413, "too_large")


def test_only_the_configured_senders_are_accepted() -> None:
    config = ImsConfig(accepted_documents=("Sync.ItemMaster",), sender_logical_ids=("lid://infor.m3.m3",))
    assert read_message(CONTENT_TYPE, message(), config).payload == BOD.xml
    error = refused(message(fromLogicalId="lid://infor.ims.someone"), config=config)
    assert (error.status, error.reason) == (403, "sender_not_allowed")


def test_document_names_are_matched_without_regard_to_case_and_a_numeric_message_id_is_text() -> None:
    read = read_message(CONTENT_TYPE, message(documentName="sync.itemmaster", messageId=12345), CONFIG)
    assert (read.payload, read.parameters.message_id) == (BOD.xml, "12345")


def test_the_character_set_is_honoured_and_the_document_becomes_utf8() -> None:
    latin = BOD.xml.replace(b"Bolt", "Bult \u00e5\u00e4\u00f6".encode()).decode("utf-8").replace("utf-8", "ISO-8859-1")
    payload = latin.encode("iso-8859-1")
    read = read_message(CONTENT_TYPE, message(payload, characterSet="ISO-8859-1"), CONFIG)
    document = to_utf8(read.payload, codec_of(read.parameters.character_set))
    assert document.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert parse_bod(document).events[0].payload.description == "Bult \u00e5\u00e4\u00f6"  # type: ignore[attr-defined]
    # UTF-16 with a byte order mark
    utf16 = BOD.xml.decode().replace("utf-8", "UTF-16").encode("utf-16")
    assert parse_bod(to_utf8(utf16, codec_of("UTF-16"))).bod_id == BOD.bod_id
    # UTF-8 stays as it was
    assert to_utf8(BOD.xml, codec_of("utf8")) is BOD.xml


def test_bytes_that_are_not_text_in_the_character_set_raise_unicode_errors() -> None:
    with pytest.raises(UnicodeDecodeError):
        to_utf8(b"<a>\xff\xfe\xfa</a>", codec_of("UTF-8"))


def test_decode_payload_refuses_unknown_encodings() -> None:
    with pytest.raises(ImsError, match="supported: NONE, BASE64, DEFLATE"):
        decode_payload("QUOTED-PRINTABLE", b"x", 100)


def test_settings_default_to_every_document_the_bridge_reads() -> None:
    settings_ = BodListenerSettings()
    assert settings_.ims_path_prefix == "/ims"
    assert "Sync.ItemMaster" in settings_.ims_accepted_documents
    assert "Show.CustomerPartyMaster" in settings_.ims_accepted_documents
    assert BodListenerSettings(ims_path_prefix="ion/ims/").ims_path_prefix == "/ion/ims"


# --- fuzzing ---------------------------------------------------------------------------------------------------------
def read_or_refuse(content_type: str, body: bytes) -> None:
    """What the endpoint does with a request before the BOD is handed on: read it, or refuse it with a 4xx."""
    error: ImsError | None = None
    try:
        read = read_message(content_type, body, CONFIG)
    except ImsError as exc:
        error = exc
    if error is not None:
        assert 400 <= error.status < 500
        assert error.reason
        return
    with contextlib.suppress(UnicodeDecodeError, ValueError, LookupError):  # kept as a dead letter ("undecodable")
        to_utf8(read.payload, codec_of(read.parameters.character_set))


FUZZ = settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(body=st.binary(max_size=2000), boundary=st.text(min_size=0, max_size=80))
def test_fuzz_random_bodies_and_boundaries(body: bytes, boundary: str) -> None:
    read_or_refuse(f"multipart/form-data; boundary={boundary}", body)
    read_or_refuse(CONTENT_TYPE, body)


@FUZZ
@given(data=st.data())
def test_fuzz_a_valid_message_cut_or_corrupted(data: st.DataObject) -> None:
    body = message(encoding=data.draw(st.sampled_from(["NONE", "BASE64", "DEFLATE", "none", "x"])))
    cut = data.draw(st.integers(0, len(body)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(body) - 1), st.integers(0, 255)), max_size=6))
    corrupted = bytearray(body[:cut] + body[cut:] if data.draw(st.booleans()) else body[:cut])
    for index, value in flips:
        if index < len(corrupted):
            corrupted[index] = value
    read_or_refuse(CONTENT_TYPE, bytes(corrupted))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)


@FUZZ
@given(
    fields=st.dictionaries(
        st.sampled_from(["documentName", "messageId", "encoding", "characterSet", "fromLogicalId", "variationId"]),
        json_values,
    ),
    payload=st.binary(max_size=300),
)
def test_fuzz_parameter_requests_and_payloads(fields: dict[str, Any], payload: bytes) -> None:
    body = multipart(
        ("ParameterRequest", "application/json", json.dumps(fields).encode()),
        ("MessagePayload", "application/octet-stream", payload),
    )
    read_or_refuse(CONTENT_TYPE, body)
