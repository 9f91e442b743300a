"""bod-listener's IMS v3 end points as ION calls them: ping, protocol, versions and v3/multipartMessage, each message
read by `ims.read_message`, authenticated, and handed to the BOD receiver; the answers IMS expects."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.bod_listener.ims import (
    MULTIPART_MESSAGE_BODY,
    TENANT_HEADER,
    ImsConfig,
    ImsError,
    codec_of,
    ims_requests_total,
    read_message,
    to_utf8,
)
from services.bod_listener.receive import BodReceiver, Origin, bods_total
from shared.contracts.topics import BOD_INBOUND
from shared.platform.inbound import InboundAuth, RejectedDeliveryError, authenticate, note_rejection, read_body

log = logging.getLogger(__name__)


def _answer(endpoint: str, status: int, body: dict[str, Any]) -> JSONResponse:
    ims_requests_total.labels(endpoint, str(status)).inc()
    return JSONResponse(body, status)


def _refused(endpoint: str, status: int, reason: str, message: str, *, service: str) -> JSONResponse:
    bods_total.labels("-", reason).inc()
    note_rejection(service, status, reason, f"IMS {endpoint}: {message}")
    return _answer(endpoint, status, {"status": "FAIL", "code": status, "reason": reason, "message": message})


def ims_router(config: ImsConfig, auth: InboundAuth, receiver: Callable[[], BodReceiver]) -> APIRouter:
    """The IMS v3 endpoints; mount under the deployment's context path (`M3B_IMS_PATH_PREFIX`)."""
    router = APIRouter(tags=["ims"])

    async def admitted(request: Request, endpoint: str) -> bytes | JSONResponse:
        """The body once the request is authenticated and for our tenant, else the answer refusing it."""
        try:
            body = await read_body(request, config.max_bytes)
            authenticate(request.headers, body, auth)
        except RejectedDeliveryError as exc:
            return _refused(endpoint, exc.status, exc.reason, str(exc), service=config.service)
        tenant = request.headers.get(TENANT_HEADER, "")
        if config.tenant_id and tenant != config.tenant_id:
            message = f"{TENANT_HEADER} {tenant[:40]!r} is not this tenant"
            return _refused(endpoint, 403, "wrong_tenant", message, service=config.service)
        return body

    @router.get("/ping", summary="IMS ping: ION reaches the application and is authorized")
    async def ping(request: Request) -> JSONResponse:
        admitted_body = await admitted(request, "ping")
        if isinstance(admitted_body, JSONResponse):
            return admitted_body
        return _answer("ping", 200, {"code": 200, "status": "OK"})

    @router.get("/protocol", summary="IMS protocol: what this IMS end point speaks")
    async def protocol(request: Request) -> JSONResponse:
        admitted_body = await admitted(request, "protocol")
        if isinstance(admitted_body, JSONResponse):
            return admitted_body
        return _answer(
            "protocol",
            200,
            {
                "version": "v3",
                "messageMethod": "multipartMessage",
                "supportedEncoding": "NONE",  # BASE64 and DEFLATE are read too
                "supportedCharacterSet": "UTF-8",
                "hasDiscovery": False,  # documents are set on the connection point in ION Desk
            },
        )

    @router.get("/versions", summary="IMS versions this end point supports")
    async def versions(request: Request) -> JSONResponse:
        admitted_body = await admitted(request, "versions")
        if isinstance(admitted_body, JSONResponse):
            return admitted_body
        return _answer("versions", 200, {"supportedVersions": ["v3"]})

    @router.post(
        "/v3/multipartMessage",
        summary="IMS v3 message: ParameterRequest (JSON) + MessagePayload (the BOD)",
        openapi_extra=MULTIPART_MESSAGE_BODY,
        responses={202: {"description": "accepted: published, duplicate, stale or kept as a dead letter"},
                   400: {}, 401: {}, 403: {}, 412: {}, 413: {}, 503: {}},
    )  # fmt: skip
    async def multipart_message(request: Request) -> JSONResponse:
        endpoint = "v3/multipartMessage"
        admitted_body = await admitted(request, endpoint)
        if isinstance(admitted_body, JSONResponse):
            return admitted_body
        try:
            message = read_message(request.headers.get("content-type", ""), admitted_body, config)
        except ImsError as exc:  # logged once, by _refused
            return _refused(endpoint, exc.status, exc.reason, str(exc), service=config.service)
        parameters = message.parameters
        origin = Origin(
            via="http",
            headers={
                "content-type": BOD_INBOUND.content_type, "received-as": "ims-v3",
                "ims-message-id": parameters.message_id, "ims-document-name": parameters.document_name,
                "ims-from-logical-id": parameters.from_logical_id,
            },
        )  # fmt: skip
        try:
            try:
                document = to_utf8(message.payload, codec_of(parameters.character_set))
            except (UnicodeDecodeError, ValueError, LookupError) as exc:
                detail = f"MessagePayload is not {parameters.character_set} text: {exc}"[:300]
                received = await receiver().reject(message.payload, origin, "undecodable", detail)
            else:
                received = await receiver().receive(
                    document,
                    origin,
                    document_name=parameters.document_name,
                    delivery_id=f"{parameters.from_logical_id} {parameters.message_id}",
                )
        except Exception as exc:  # the broker or the state store: not the message's fault, ION delivers again
            log.error("IMS message %s not taken: %s: %s", parameters.message_id, type(exc).__name__, exc)
            unavailable = "the bridge cannot take messages now; deliver again"
            refused = {"status": "FAIL", "code": 503, "reason": "unavailable", "message": unavailable}
            return _answer(endpoint, 503, refused)
        if received.status == "dead-lettered":
            log.warning("IMS message %s not usable (%s): %s; kept in the dead letters", parameters.message_id,
                        received.reason, received.detail)  # fmt: skip
        body = {
            "status": "OK", "code": 202, "message": "The request was processed successfully",
            "outcome": received.status, "detail": received.detail,
        }  # fmt: skip
        if received.reason:
            body["reason"] = received.reason
        return _answer(endpoint, 202, body)

    return router
