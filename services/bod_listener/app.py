"""bod-listener wiring: ION BOD deliveries in, normalized M3 change events out."""

# No `from __future__ import annotations`: FastAPI reads the route signatures at runtime.
import logging
from datetime import UTC, datetime

from fastapi import Request
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from pydantic import Field, SecretStr

from shared.bods import BodError, ParsedBod, parse_bod
from shared.contracts import DeadLetter
from shared.dead_letters import send_to_dead_letters
from shared.inbound import InboundAuth, RejectedDeliveryError, authenticate, read_body
from shared.kafka import publish
from shared.runtime import ServiceRuntime
from shared.settings import BridgeSettings
from shared.state import deliveries, fingerprints

log = logging.getLogger(__name__)

DEAD_LETTER_PAYLOAD_BYTES = 256 * 1024

bods_total = Counter("m3bridge_bods_received_total", "ION BOD deliveries by noun and outcome.", ["noun", "outcome"])


class BodListenerSettings(BridgeSettings):
    service_name: str = "bod-listener"
    bod_secret_header: str = Field(
        "X-M3Bridge-BOD-Secret", description="Header the ION connection point sends the shared secret in."
    )
    bod_secret: SecretStr = Field(SecretStr(""), description="The shared secret BOD deliveries carry.")
    bod_signature_header: str = Field("X-M3Bridge-Signature", description="HMAC signature header, for signers.")
    bod_signing_secret: SecretStr = Field(SecretStr(""), description="HMAC key for signed BOD deliveries.")
    bod_max_bytes: int = Field(2_097_152, ge=1024, description="Largest BOD accepted (bytes).")


async def process(runtime: ServiceRuntime, settings: BodListenerSettings, bod: ParsedBod) -> tuple[str, str]:
    """Publish the BOD's events once, in variation order per document. Returns (outcome, detail)."""
    assert runtime.engine is not None
    engine = runtime.engine
    if await deliveries.seen(engine, "bod", bod.bod_id):
        return "duplicate", f"BOD {bod.bod_id} was already received"
    entity = f"{bod.noun}:{bod.document_id}"
    newest = await fingerprints.get(engine, "bod-variation", entity)
    if newest is not None and bod.variation and bod.variation < int(newest):
        # ION may deliver an older variation after a newer one: the newer state has been published already.
        await deliveries.remember(engine, "bod", bod.bod_id)
        return "stale", f"variation {bod.variation} of {entity} is older than {newest}"
    for event in bod.events:
        await publish(
            runtime.broker, event.topic, event.payload, key=event.key, max_bytes=settings.kafka_max_request_size
        )
    if bod.variation:
        await fingerprints.put(engine, "bod-variation", entity, str(bod.variation))
    await deliveries.remember(engine, "bod", bod.bod_id)
    return "published", f"{len(bod.events)} events from {bod.noun} {bod.document_id}"


def create_runtime(settings: BodListenerSettings | None = None) -> ServiceRuntime:
    settings = settings or BodListenerSettings()
    runtime = ServiceRuntime(
        settings,
        title="M3 Bridge bod-listener",
        description="Receives ION BODs and turns them into normalized M3 change events.",
        uses_state=True,
    )
    auth = InboundAuth(
        secret_header=settings.bod_secret_header,
        shared_secret=settings.bod_secret.get_secret_value(),
        signature_header=settings.bod_signature_header,
        signing_secret=settings.bod_signing_secret.get_secret_value(),
        tolerance_s=300,
    )
    if not auth.shared_secret and not auth.signing_secret:
        log.warning("no BOD secret configured: every delivery will be refused")

    @runtime.app.post(
        "/bods",
        tags=["bods"],
        summary="An ION BOD (XML): Sync ItemMaster, CustomerPartyMaster, SalesOrder, inventory and price nouns",
        responses={202: {"description": "published (or kept as a dead letter)"}, 401: {}, 413: {}},
    )
    async def receive(request: Request) -> JSONResponse:
        try:
            body = await read_body(request, settings.bod_max_bytes)
            authenticate(request.headers, body, auth)
        except RejectedDeliveryError as exc:
            bods_total.labels("-", exc.reason).inc()
            return JSONResponse({"status": "rejected", "reason": exc.reason, "detail": str(exc)}, exc.status)
        try:
            bod = parse_bod(body)
        except BodError as exc:
            # Kept, not dropped: a person can read why and replay it once the cause is fixed.
            letter = DeadLetter(
                service=settings.service_name,
                origin_topic="http:/bods",
                origin_partition=0,
                origin_offset=0,
                original_headers={"content-type": request.headers.get("content-type", "")},
                # A dead letter must fit in one Kafka message; the start of a huge document says what it was.
                original_payload=body[:DEAD_LETTER_PAYLOAD_BYTES].decode(errors="replace"),
                error_class=exc.reason,
                error_message=str(exc),
                details={"bytes": len(body), "truncated": len(body) > DEAD_LETTER_PAYLOAD_BYTES},
                attempts=1,
                failed_at=datetime.now(UTC),
            )
            await send_to_dead_letters(runtime.broker, letter, max_bytes=settings.kafka_max_request_size)
            bods_total.labels("-", exc.reason).inc()
            log.warning("BOD not usable (%s): %s; kept in the dead letters", exc.reason, exc)
            return JSONResponse({"status": "dead-lettered", "reason": exc.reason, "detail": str(exc)}, 202)
        outcome, detail = await process(runtime, settings, bod)
        bods_total.labels(bod.noun, outcome).inc()
        return JSONResponse({"status": outcome, "detail": detail}, 202 if outcome == "published" else 200)

    runtime.health.set_detail("logic", {"endpoint": "/bods", "max_bytes": settings.bod_max_bytes})
    return runtime
