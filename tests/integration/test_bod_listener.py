"""bod-listener as a process: BODs from the ION simulator (delivered as ION does, IMS v3 multipart messages) become
normalized events; hostile or broken XML, malformed IMS messages and fuzzed bodies are refused (4xx) or kept as a
dead letter while the listener keeps serving: never a 500."""

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from hypothesis import HealthCheck, given, settings, strategies as st

from m3bridge import dead_letters
from shared.contracts import ItemChanged
from shared.contracts.topics import ITEM_CHANGED
from shared.platform.crash_points import CRASH_EXIT_CODE
from shared.platform.settings import BridgeSettings
from simulators.ion.bods import BodContext, build_customer_party_master, build_item_master, ims_message
from simulators.processes import Captured
from simulators.stack import IonSim, start_ion, start_service
from tests.fuzz import examples

SECRET = "bod-secret-for-tests"
HEADER = "X-M3Bridge-BOD-Secret"


@pytest.fixture(scope="module")
def listener(kafka_bootstrap: str, module_postgres_url: str) -> Iterator[tuple[Captured, str]]:
    process, url = start_service(
        "bod-listener", kafka_bootstrap, {"M3B_STATE_URL": module_postgres_url, "M3B_BOD_SECRET": SECRET,
                                          "M3B_BOD_MAX_BYTES": "200000"}
    )  # fmt: skip
    yield process, url
    process.kill_all()


@pytest.fixture(scope="module")
def ion(tmp_path_factory: pytest.TempPathFactory, listener: tuple[Captured, str]) -> Iterator[IonSim]:
    sim = start_ion(
        tmp_path_factory.mktemp("ion-bods"),
        {"bod_target_url": f"{listener[1]}/ims", "bod_headers": {HEADER: SECRET}},
    )
    yield sim
    sim.stop()


def item_events(bootstrap: str, item: str, expected: int, timeout_s: float = 20) -> list[ItemChanged]:
    async def read() -> list[ItemChanged]:
        consumer = AIOKafkaConsumer(ITEM_CHANGED.name, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
        await consumer.start()
        found: list[ItemChanged] = []
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline and len(found) < expected:
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    for record in records:
                        if record.key == item.encode():
                            found.append(ItemChanged.model_validate_json(record.value or b""))
        finally:
            await consumer.stop()
        return found

    return asyncio.run(read())


def test_an_item_edited_in_m3_becomes_an_item_changed_event(ion: IonSim, kafka_bootstrap: str) -> None:
    ion.admin("POST", "m3/items/ITM000010", {"ITDS": "Renamed in M3"})
    ion.admin("POST", "m3/items/ITM000010", {"STAT": "90"})
    events = item_events(kafka_bootstrap, "ITM000010", 2)
    assert [e.description for e in events][:1] == ["Renamed in M3"]
    assert events[-1].status == "90"
    assert events[0].variation < events[-1].variation
    # Both went as IMS v3 messages, one in each encoding, and were accepted (202) and published.
    log = [d for d in ion.admin("GET", "bods")["last_deliveries"] if d["document_id"] == "ITM000010"]
    assert {d["encoding"] for d in log} == {"NONE", "BASE64"}
    assert [(d["result"], d["answers"][-1], d["outcome"]) for d in log] == [("delivered", "202", "published")] * 2


def post(listener: tuple[Captured, str], body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{listener[1]}/bods", content=body, headers={"Content-Type": "application/xml", **(headers or
                      {HEADER: SECRET})}, timeout=10)  # fmt: skip


def test_unauthenticated_and_oversized_deliveries_are_refused(listener: tuple[Captured, str]) -> None:
    assert post(listener, b"<x/>", {"X-Other": "1"}).status_code == 401
    assert post(listener, b"<x/>", {HEADER: "wrong"}).status_code == 401
    assert post(listener, b"<x>" + b"a" * 300_000 + b"</x>").status_code == 413


@pytest.mark.parametrize(
    "body",
    [
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>',
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
        b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]><l>&d;</l>',
        b"<not-closed>",
        b"<SyncShipment><ApplicationArea/><DataArea/></SyncShipment>",
    ],
    ids=["xxe", "billion-laughs", "malformed", "unknown-noun"],
)
def test_hostile_or_unusable_xml_is_kept_as_a_dead_letter_and_the_listener_keeps_serving(
    listener: tuple[Captured, str], kafka_bootstrap: str, body: bytes
) -> None:
    response = post(listener, body)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "dead-lettered"
    assert httpx.get(f"{listener[1]}/readyz", timeout=5).status_code == 200
    settings = BridgeSettings(kafka_bootstrap_servers=kafka_bootstrap)
    kept = asyncio.run(dead_letters.read_all(settings, "bod-listener", idle_s=1.0))
    assert any(f.letter.original_payload == body.decode() for f in kept)


def test_the_same_bod_twice_is_published_once_and_an_older_variation_is_stale(
    listener: tuple[Captured, str], kafka_bootstrap: str
) -> None:
    context = BodContext()
    newer = build_item_master(context, item_number="ITM000012", description="Newer", status="20", variation=7)
    older = build_item_master(context, item_number="ITM000012", description="Older", status="20", variation=6)
    assert post(listener, newer.xml).json()["status"] == "published"
    assert post(listener, newer.xml).json()["status"] == "duplicate"
    assert post(listener, older.xml).json()["status"] == "stale"
    events = item_events(kafka_bootstrap, "ITM000012", 2, timeout_s=5)
    assert [e.description for e in events] == ["Newer"]


# --- IMS v3 --------------------------------------------------------------------------------------------------------
AUTH = {HEADER: SECRET}


def ims(
    listener: tuple[Captured, str], body: bytes, content_type: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    sent = {"Content-Type": content_type, **(AUTH if headers is None else headers)}
    return httpx.post(f"{listener[1]}/ims/v3/multipartMessage", content=body, headers=sent, timeout=10)


def send(listener: tuple[Captured, str], xml: bytes, *, document: str = "Sync.ItemMaster", message_id: str = "",
         encoding: str = "NONE", charset: str = "UTF-8") -> httpx.Response:  # fmt: skip
    parameters = {
        "documentName": document, "messageId": message_id or uuid.uuid4().hex, "encoding": encoding,
        "characterSet": charset, "fromLogicalId": "lid://infor.m3.m3", "toLogicalId": "lid://default",
    }  # fmt: skip
    payload = base64.b64encode(xml) if encoding == "BASE64" else xml
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="ParameterRequest"\r\n'
            f"Content-Type: application/json\r\n\r\n{json.dumps(parameters)}\r\n"
            f'--{boundary}\r\nContent-Disposition: form-data; name="MessagePayload"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return ims(listener, body, f"multipart/form-data; boundary={boundary}")


def kept(bootstrap: str) -> list[Any]:
    settings_ = BridgeSettings(kafka_bootstrap_servers=bootstrap)
    return list(asyncio.run(dead_letters.read_all(settings_, "bod-listener", idle_s=1.0)))


def test_ims_ping_protocol_and_versions_answer_only_an_authenticated_caller(listener: tuple[Captured, str]) -> None:
    base = f"{listener[1]}/ims"
    assert httpx.get(f"{base}/ping", headers=AUTH, timeout=5).json() == {"code": 200, "status": "OK"}
    protocol = httpx.get(f"{base}/protocol", headers=AUTH, timeout=5).json()
    assert (protocol["version"], protocol["messageMethod"], protocol["hasDiscovery"]) == (
        "v3",
        "multipartMessage",
        False,
    )
    assert httpx.get(f"{base}/versions", headers=AUTH, timeout=5).json() == {"supportedVersions": ["v3"]}
    for path in ("ping", "protocol", "versions"):
        assert httpx.get(f"{base}/{path}", timeout=5).status_code == 401
    assert ims(listener, b"x", "multipart/form-data; boundary=x", {HEADER: "wrong"}).status_code == 401
    assert ims(listener, b"x" * 300_000, "multipart/form-data; boundary=x").status_code == 413


@pytest.mark.parametrize("encoding", ["NONE", "BASE64"])
def test_an_ims_message_is_published_once_by_message_id_and_by_bodid(
    listener: tuple[Captured, str], kafka_bootstrap: str, encoding: str
) -> None:
    item = f"ITM0000{30 if encoding == 'NONE' else 31}"
    bod = build_item_master(BodContext(), item_number=item, description=f"Via IMS {encoding}", status="20")
    message_id = uuid.uuid4().hex
    first = send(listener, bod.xml, message_id=message_id, encoding=encoding)
    assert first.status_code == 202, first.text
    assert first.json()["outcome"] == "published"
    again = send(listener, bod.xml, message_id=message_id, encoding=encoding)  # ION delivering the message again
    assert (again.status_code, again.json()["outcome"]) == (202, "duplicate")
    assert "message" in again.json()["detail"]
    other = send(listener, bod.xml, encoding=encoding)  # another message, the same BOD
    assert (other.status_code, other.json()["outcome"]) == (202, "duplicate")
    assert bod.bod_id in other.json()["detail"]
    events = item_events(kafka_bootstrap, item, 2, timeout_s=5)
    assert [e.description for e in events] == [f"Via IMS {encoding}"]


def test_a_document_name_that_disagrees_with_the_bod_is_kept_as_a_dead_letter(
    listener: tuple[Captured, str], kafka_bootstrap: str
) -> None:
    bod = build_customer_party_master(BodContext(), customer_number="C000040", name="Mislabelled AB", status="20")
    response = send(listener, bod.xml, document="Sync.ItemMaster")
    assert response.status_code == 202, response.text
    assert (response.json()["outcome"], response.json()["reason"]) == ("dead-lettered", "document_mismatch")
    letters = [f.letter for f in kept(kafka_bootstrap) if f.letter.error_class == "document_mismatch"]
    assert any(letter.original_payload == bod.xml.decode() for letter in letters)
    assert letters[-1].original_headers["ims-document-name"] == "Sync.ItemMaster"


def test_a_payload_that_is_not_text_in_its_character_set_is_kept_as_a_dead_letter(
    listener: tuple[Captured, str], kafka_bootstrap: str
) -> None:
    response = send(listener, b"<SyncItemMaster>\xff\xfe</SyncItemMaster>", charset="UTF-8")
    assert (response.status_code, response.json()["reason"]) == (202, "undecodable")
    assert any(f.letter.error_class == "undecodable" for f in kept(kafka_bootstrap))
    latin = build_item_master(BodContext(), item_number="ITM000032", description="Br\u00e4nd", status="20")
    text = latin.xml.decode().replace("utf-8", "ISO-8859-1").encode("iso-8859-1")
    honoured = send(listener, text, charset="ISO-8859-1")
    assert honoured.json()["outcome"] == "published", honoured.text
    assert [e.description for e in item_events(kafka_bootstrap, "ITM000032", 1, timeout_s=5)] == ["Br\u00e4nd"]


@pytest.mark.parametrize(
    ("content_type", "body", "status", "reason"),
    [
        ("application/xml", b"<x/>", 400, "not_multipart"),
        ("multipart/form-data", b"--x--", 400, "bad_boundary"),
        ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data", 400, "malformed_multipart"),
        ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data; name=\"MessagePayload\"\r\n\r\n"
         b"<x/>\r\n--x--\r\n", 400, "missing_part"),
    ],
)  # fmt: skip
def test_malformed_ims_requests_are_refused_with_400(
    listener: tuple[Captured, str], content_type: str, body: bytes, status: int, reason: str
) -> None:
    response = ims(listener, body, content_type)
    assert (response.status_code, response.json()["reason"]) == (status, reason), response.text


def test_wrong_encoding_base64_garbage_and_documents_not_configured_are_refused(listener: tuple[Captured, str]) -> None:
    bod = build_item_master(BodContext(), item_number="ITM000033", description="x", status="20")
    assert send(listener, bod.xml, encoding="UUENCODE").json()["reason"] == "unsupported_encoding"
    garbage = send(listener, b"%%%%", encoding="NONE")
    assert garbage.status_code == 202  # NONE: the bytes are the document, which is not XML: a dead letter
    assert garbage.json()["reason"] == "malformed"
    boundary = "q"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="ParameterRequest"\r\n\r\n'
            '{"documentName": "Sync.ItemMaster", "messageId": "m", "encoding": "BASE64"}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="MessagePayload"\r\n\r\n@@@not base64@@@\r\n'
            f"--{boundary}--\r\n").encode()  # fmt: skip
    refused = ims(listener, body, f"multipart/form-data; boundary={boundary}")
    assert (refused.status_code, refused.json()["reason"]) == (400, "bad_base64")
    not_configured = send(listener, bod.xml, document="Sync.Shipment")
    assert (not_configured.status_code, not_configured.json()["reason"]) == (412, "document_not_accepted")


@settings(max_examples=examples(40, quick=8), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
          HealthCheck.too_slow])  # fmt: skip
@given(data=st.data())
def test_fuzzed_ims_requests_never_get_a_500(listener: tuple[Captured, str], data: st.DataObject) -> None:
    bod = build_item_master(BodContext(), item_number="ITM000034", description="Fuzz", status="20")
    encoding = data.draw(st.sampled_from(["NONE", "BASE64"]))
    body, content_type = ims_message(bod, message_id=uuid.uuid4().hex, encoding=encoding,  # type: ignore[arg-type]
                                     from_logical_id="lid://infor.m3.m3", to_logical_id="lid://default")  # fmt: skip
    cut = data.draw(st.integers(0, len(body)))
    noise = data.draw(st.binary(max_size=64))
    at = data.draw(st.integers(0, cut))
    mangled = body[:at] + noise + body[at:cut]
    if data.draw(st.booleans()):
        content_type = data.draw(st.sampled_from(
            ["multipart/form-data", "multipart/form-data; boundary=", "text/plain", "multipart/mixed; boundary=zz"]
        ))  # fmt: skip
    response = ims(listener, mangled, content_type)
    assert response.status_code in (202, 400, 412, 413), response.text
    assert response.json()["status"] in ("OK", "FAIL")


def test_a_listener_killed_after_recording_a_bod_publishes_its_events_once_started_again(
    kafka_bootstrap: str, module_postgres_url: str
) -> None:
    """A second bod-listener on the module's state store, killed at its crash point (the BOD's claim and events are
    committed, nothing is published): started again, its outbox relay publishes the events, and ION's redelivery
    is a duplicate."""
    item = f"CRASH{uuid.uuid4().hex[:6].upper()}"
    bod = build_item_master(BodContext(), item_number=item, description="Recorded before the crash", status="20")
    settings = {"M3B_STATE_URL": module_postgres_url, "M3B_BOD_SECRET": SECRET, "M3B_INSTANCE_ID": "bod-crash",
                "M3B_OUTBOX_RELAY_INTERVAL_S": "0.5"}  # fmt: skip
    process, url = start_service("bod-listener", kafka_bootstrap, {**settings,
                                 "M3B_CRASH_POINTS": "bod-listener.after-claim"})  # fmt: skip
    try:
        with pytest.raises(httpx.HTTPError):  # the process dies before it answers
            post((process, url), bod.xml)
        assert process.process.wait(30) == CRASH_EXIT_CODE
    finally:
        process.kill_all()
    restarted, url = start_service("bod-listener", kafka_bootstrap, settings)
    try:
        events = item_events(kafka_bootstrap, item, 1)
        assert [e.description for e in events] == ["Recorded before the crash"]
        again = post((restarted, url), bod.xml)
        assert (again.status_code, again.json()["status"]) == (200, "duplicate"), again.text
        assert len(item_events(kafka_bootstrap, item, 2, timeout_s=3)) == 1, "published once"
    finally:
        restarted.kill_all()
