"""Authenticating and reading QuoteWerks webhook deliveries (pure functions)."""

import json

import pytest
from pydantic import SecretStr

from services.bod_listener.app import BodListenerSettings
from services.quote_ingest.app import QuoteIngestSettings
from services.quote_ingest.webhooks import parse
from shared.platform.inbound import InboundAuth, RejectedDeliveryError, authenticate, sign
from tests.log_records import records_of

AUTH = InboundAuth(
    secret_header="X-M3Bridge-Webhook-Secret",
    shared_secret="shared-secret-123",
    signature_header="X-M3Bridge-Signature",
    signing_secret="signing-secret-456",
    tolerance_s=300,
)
BODY = json.dumps({"event": "QuoteValet.Accepted", "tenant": "T1", "DocNo": "AAAQ1001", "DocID": "7"}).encode()


def test_the_quotewerks_way_is_a_shared_secret_header() -> None:
    assert authenticate({"x-m3bridge-webhook-secret": "shared-secret-123"}, BODY, AUTH) == "secret"


def test_a_signed_delivery_within_the_window() -> None:
    headers = {"X-M3Bridge-Signature": sign(BODY, "signing-secret-456", 1_000_000)}
    assert authenticate(headers, BODY, AUTH, now=1_000_100) == "signature"


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "unsigned"),
        ({"X-M3Bridge-Webhook-Secret": "wrong"}, "bad_secret"),
        ({"X-M3Bridge-Signature": sign(BODY, "other-key", 1_000_000)}, "bad_signature"),
        ({"X-M3Bridge-Signature": sign(BODY, "signing-secret-456", 1_000_000 - 301)}, "stale_signature"),
        ({"X-M3Bridge-Signature": "v1=abc"}, "bad_signature"),
    ],
)
def test_unauthenticated_deliveries_are_refused(headers: dict[str, str], reason: str) -> None:
    with pytest.raises(RejectedDeliveryError) as caught:
        authenticate(headers, BODY, AUTH, now=1_000_000)
    assert (caught.value.status, caught.value.reason) == (401, reason)


def test_a_tampered_body_fails_the_signature() -> None:
    headers = {"X-M3Bridge-Signature": sign(BODY, "signing-secret-456", 1_000_000)}
    with pytest.raises(RejectedDeliveryError, match="does not match"):
        authenticate(headers, BODY.replace(b"AAAQ1001", b"AAAQ9999"), AUTH, now=1_000_000)


def test_nothing_is_accepted_when_no_secret_is_configured() -> None:
    bare = InboundAuth("X-S", "", "X-Sig", "", 300)
    with pytest.raises(RejectedDeliveryError):
        authenticate({"X-S": ""}, BODY, bare)


def test_thin_bodies_are_read() -> None:
    delivery = parse(BODY)
    assert (delivery.event, delivery.doc_no, delivery.customer_id) == ("QuoteValet.Accepted", "AAAQ1001", "")
    customer = parse(json.dumps({"event": "QuoteWerks.CustomerChanged", "CMAccountNo": "C9"}).encode())
    assert customer.customer_id == "C9"


@pytest.mark.parametrize(
    "body", [b"not json", b"[1]", json.dumps({"DocNo": "X"}).encode(), json.dumps({"event": "E"}).encode()]
)
def test_malformed_bodies_are_refused(body: bytes) -> None:
    with pytest.raises(RejectedDeliveryError) as caught:
        parse(body)
    assert caught.value.status in (400, 422)


def test_inbound_auth_is_read_from_a_services_prefixed_settings() -> None:
    webhooks = QuoteIngestSettings(
        webhook_secret=SecretStr("shared"), webhook_signing_secret=SecretStr("hmac"), webhook_secret_header="X-QW"
    )
    with records_of("shared.platform.inbound") as configured:
        auth = InboundAuth.from_settings(webhooks, "webhook", tolerance_s=60)
    assert auth == InboundAuth("X-QW", "shared", webhooks.webhook_signature_header, "hmac", 60)
    assert not configured  # nothing to warn about

    bods = BodListenerSettings(bod_max_bytes=4_000_000, max_body_bytes=1_000_000)
    with records_of("shared.platform.inbound") as unconfigured:
        bare = InboundAuth.from_settings(bods, "bod", tolerance_s=300)
    assert (bare.secret_header, bare.shared_secret, bare.signing_secret) == (bods.bod_secret_header, "", "")
    said = " | ".join(record.getMessage() for record in unconfigured)
    assert "neither M3B_BOD_SECRET nor M3B_BOD_SIGNING_SECRET is set" in said
    assert "M3B_BOD_MAX_BYTES 4000000 is over M3B_MAX_BODY_BYTES 1000000" in said
