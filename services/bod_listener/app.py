"""bod-listener wiring: ION BODs in (HTTP `/bods` and the inbound topic), normalized M3 change events out."""

# No `from __future__ import annotations`: FastAPI reads the route signatures at runtime.
import logging

from fastapi import Request
from fastapi.responses import JSONResponse
from faststream import AckPolicy
from faststream.kafka.annotations import KafkaMessage
from pydantic import Field, SecretStr, field_validator

from services.bod_listener.bods import NOUNS, VERBS
from services.bod_listener.ims import ImsConfig
from services.bod_listener.ims_routes import ims_router
from services.bod_listener.receive import BodReceiver, Origin, bods_total
from shared.contracts.topics import BOD_INBOUND
from shared.platform.inbound import InboundAuth, RejectedDeliveryError, authenticate, note_rejection, read_body
from shared.platform.runtime import ServiceRuntime
from shared.platform.settings import BridgeSettings
from shared.platform.started import StartedPart

log = logging.getLogger(__name__)

#: `/bods`' request body in the OpenAPI document (the route reads the raw body itself).
XML_TEXT = {"type": "string", "description": "a BOD document"}
#: IMS documentName of every BOD the bridge reads: `Sync.ItemMaster`, …, `Show.PriceList`.
IMS_DOCUMENTS = [f"{verb}.{noun}" for verb in VERBS for noun in NOUNS]


class BodListenerSettings(BridgeSettings):
    service_name: str = "bod-listener"
    bod_secret_header: str = Field(
        "X-M3Bridge-BOD-Secret", description="Header the ION connection point sends the shared secret in."
    )
    bod_secret: SecretStr = Field(SecretStr(""), description="The shared secret BOD deliveries carry.")
    bod_signature_header: str = Field("X-M3Bridge-Signature", description="HMAC signature header, for signers.")
    bod_signing_secret: SecretStr = Field(SecretStr(""), description="HMAC key for signed BOD deliveries.")
    bod_max_bytes: int = Field(
        2_097_152, ge=1024, description="Largest BOD accepted (bytes): the body of a delivery, and an IMS payload "
        "once decoded."
    )  # fmt: skip
    ims_path_prefix: str = Field(
        "/ims",
        description="Path of the ION Messaging Service v3 end point (`ping`, `protocol`, `versions`, "
        "`v3/multipartMessage` below it): the Context of the deployment in the ION API suite.",
    )
    ims_accepted_documents: list[str] = Field(
        default_factory=lambda: list(IMS_DOCUMENTS),
        description="IMS documentNames accepted (JSON list); another one is answered 412. Default: every BOD the "
        "bridge reads (Sync and Show of ItemMaster, CustomerPartyMaster, SalesOrder, InventoryCount, PriceList).",
    )
    ims_sender_logical_ids: list[str] = Field(
        default_factory=list,
        description="IMS fromLogicalIds accepted (JSON list); another one is answered 403. Empty: any.",
    )
    ims_tenant_id: str = Field(
        "", description="The tenant ION delivers for (header X-TenantId); another one is answered 403. Empty: any."
    )

    @field_validator("ims_path_prefix")
    @classmethod
    def _path(cls, value: str) -> str:
        path = "/" + value.strip().strip("/")
        if path == "/" or " " in path:
            raise ValueError("a path such as /ims")
        return path


def create_runtime(settings: BodListenerSettings | None = None) -> ServiceRuntime:
    settings = settings or BodListenerSettings()
    runtime = ServiceRuntime(
        settings,
        description="Receives ION BODs and turns them into normalized M3 change events.",
        uses_state=True,
        uses_outbox=True,
    )
    auth = InboundAuth.from_settings(settings, "bod", tolerance_s=300)
    receiver = StartedPart[BodReceiver](runtime.name)

    @runtime.on_startup
    async def start() -> None:
        receiver.set(BodReceiver(runtime.state, runtime.outbox, service=runtime.name))

    @runtime.app.post(
        "/bods",
        tags=["bods"],
        summary="An ION BOD (XML): Sync ItemMaster, CustomerPartyMaster, SalesOrder, inventory and price nouns",
        responses={202: {"description": "published (or kept as a dead letter)"}, 401: {}, 413: {}},
        openapi_extra={"requestBody": {"required": True, "content": {"application/xml": {"schema": XML_TEXT}}}},
    )
    async def receive(request: Request) -> JSONResponse:
        try:
            body = await read_body(request, settings.bod_max_bytes)
            authenticate(request.headers, body, auth)
        except RejectedDeliveryError as exc:
            bods_total.labels("-", exc.reason).inc()
            note_rejection(settings.service_name, exc.status, exc.reason, f"BOD: {exc}")
            return JSONResponse({"status": "rejected", "reason": exc.reason, "detail": str(exc)}, exc.status)
        # Kept as the inbound topic's kind of message, so that a replay there is read as XML whatever was sent.
        received_as = request.headers.get("content-type", "")
        origin = Origin(via="http", headers={"content-type": BOD_INBOUND.content_type, "received-as": received_as})
        received = await receiver().receive(body, origin)
        if received.status == "dead-lettered":
            log.warning("BOD not usable (%s): %s; kept in the dead letters", received.reason, received.detail)
            return JSONResponse({"status": "dead-lettered", "reason": received.reason, "detail": received.detail}, 202)
        status = 202 if received.status in ("published", "recorded") else 200
        return JSONResponse({"status": received.status, "detail": received.detail}, status)

    @runtime.subscriber(
        BOD_INBOUND,
        # Committed once the events (or the dead letter) are on the broker; a failed publish is retried.
        group="m3bridge.bod-listener.inbound",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        raw=True,  # XML, read as received whatever content type the message claims
        title="bod-listener/inbound-bods",
        description="Raw BOD documents (XML) from the inbound topic, handled like HTTP deliveries; dead-lettered "
        "BODs are replayed here.",
    )
    async def on_inbound_bod(body: bytes, message: KafkaMessage) -> None:
        origin = Origin.of_message(message, via="kafka")
        received = await receiver().receive(body, origin)
        if received.status == "dead-lettered":
            log.warning("inbound BOD not usable (%s): %s; kept in the dead letters", received.reason, received.detail)

    # ION Messaging Service v3: how ION delivers through an "IMS via ION API" connection point (ims.py).
    ims = ImsConfig(
        accepted_documents=tuple(settings.ims_accepted_documents),
        sender_logical_ids=tuple(settings.ims_sender_logical_ids),
        tenant_id=settings.ims_tenant_id,
        max_bytes=settings.bod_max_bytes,
        service=settings.service_name,
    )
    runtime.app.include_router(ims_router(ims, auth, receiver), prefix=settings.ims_path_prefix)

    runtime.health.set_detail(
        "logic",
        {"endpoint": "/bods", "ims": f"{settings.ims_path_prefix}/v3/multipartMessage", "topic": BOD_INBOUND.name,
         "max_bytes": settings.bod_max_bytes},
    )  # fmt: skip
    return runtime
