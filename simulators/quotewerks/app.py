"""Assembles the QuoteWerks simulator: `/api/v1` (documents, contacts, products, webhooks) and `/__admin`.

The REST API is the simulator's own: real QuoteWerks has no public REST API (its integration surfaces are the
database, the COM API, XML files and outbound webhooks). It stands in for "read the document, write the order
number and status back", which a real installation does through its database or scripting.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from simulators.quotewerks.config import QwSimConfig, WebhookSpec
from simulators.quotewerks.data import (
    CUSTOMER_COLUMNS,
    HEADER_COLUMNS,
    NUMERIC_HEADER_COLUMNS,
    READ_ONLY_HEADER_COLUMNS,
    QwStore,
    empty_party,
    parse_iso,
)
from simulators.quotewerks.webhooks import WebhookHub

ACCEPTED_EVENT = "QuoteValet.Accepted"
STATUS_EVENT = "QuoteWerks.DocumentStatusChanged"
CUSTOMER_EVENT = "QuoteWerks.CustomerChanged"


class ApiError(Exception):
    def __init__(self, status: int, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.status = status
        self.body = {"error": error, **extra}


@dataclass
class QwSim:
    """Everything a test may want to reach in-process (`app.state.qw`)."""

    config: QwSimConfig
    store: QwStore
    webhooks: WebhookHub

    @property
    def scenarios(self) -> dict[str, str]:
        return self.store.scenarios

    def stats(self) -> dict[str, Any]:
        return {
            "documents": len(self.store.documents),
            "customers": len(self.store.customers),
            "products": len(self.store.products),
            "webhooks": len(self.webhooks.webhooks),
            "deliveries": {**self.webhooks.stats.snapshot(), "pending": self.webhooks.pending},
        }

    async def reset(self) -> None:
        """Seeded data and the configured webhooks again; pending deliveries are cancelled, logs cleared."""
        transport = self.webhooks.transport
        await self.webhooks.aclose()
        self.store = QwStore(self.config)
        self.webhooks = WebhookHub(self.config, transport=transport)

    async def aclose(self) -> None:
        await self.webhooks.aclose()


# --- request bodies ------------------------------------------------------------------------------------------------
Scalar = str | int | float | bool | None


class DocumentPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fields: dict[str, Scalar] = Field(min_length=1, description="DocumentHeaders column -> new value")


class StatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    DocStatus: str = Field(min_length=1, max_length=64)


class CustomerBody(BaseModel):
    """A contact-manager record (PUT /customers/{CMAccountNo}); CMAccountNo comes from the path."""

    model_config = ConfigDict(extra="forbid")

    CMAccountNo: str | None = Field(None, max_length=64)
    Company: str = Field(min_length=1, max_length=255)
    Contact: str = Field("", max_length=255)
    Address1: str = Field("", max_length=255)
    Address2: str = Field("", max_length=255)
    Address3: str = Field("", max_length=255)
    City: str = Field("", max_length=255)
    State: str = Field("", max_length=255)
    PostalCode: str = Field("", max_length=64)
    Country: str = Field("", max_length=255)
    PhoneNumber: str = Field("", max_length=64)
    Email: str = Field("", max_length=255)


class ProductBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ManufacturerPartNumber: str | None = Field(None, max_length=255)
    Description: str = Field(min_length=1, max_length=4000)
    UnitOfMeasure: str = Field("", max_length=32)
    Price: float = Field(ge=0)
    Cost: float = Field(0, ge=0)
    Active: bool = True
    Availability: int = 0
    Manufacturer: str = Field("", max_length=255)
    Vendor: str = Field("", max_length=255)


class BatchProduct(ProductBody):
    ManufacturerPartNumber: str = Field(min_length=1, max_length=255)


class ProductBatch(BaseModel):
    """PUT /products: many products created or replaced in one request (all or none: one invalid product refuses
    the batch with 400)."""

    model_config = ConfigDict(extra="forbid")

    products: list[BatchProduct] = Field(min_length=1, max_length=1000)


class EventRequest(BaseModel):
    """POST /__admin/events: fire any event (e.g. QuoteValet.Viewed) for a document and/or customer."""

    model_config = ConfigDict(extra="forbid")

    Event: str = Field(pattern=r"^(QuoteValet|QuoteWerks)\.[A-Za-z][A-Za-z0-9]*$")
    DocNo: str | None = None
    CMAccountNo: str | None = None


class NewLine(BaseModel):
    """One product line of POST /__admin/documents: a catalog product, or any part with its own price."""

    model_config = ConfigDict(extra="forbid")

    ManufacturerPartNumber: str = Field(min_length=1, max_length=255)
    QtyTotal: int = Field(ge=0)
    DiscountPercent: float = Field(0, ge=0, le=100)
    #: For a part not in the catalog (e.g. one M3 does not know): its list price and description.
    UnitList: float | None = Field(None, ge=0)
    Description: str = Field("", max_length=4000)


class NewDocument(BaseModel):
    """POST /__admin/documents: a quote created by a sales rep (the simulator's seeding of test data)."""

    model_config = ConfigDict(extra="forbid")

    Number: str = Field(pattern=r"^[A-Z][0-9A-Z]{1,20}$", description="DocNo without the install prefix")
    DocName: str = Field("", max_length=255)
    DocStatus: str = Field("Quoted", min_length=1, max_length=64)
    ShipVia: str = Field("UPS Ground", max_length=255)
    #: An existing contact (its SoldTo* fields are copied), or `SoldTo` fields of a party not in the contacts.
    CMAccountNo: str | None = None
    SoldTo: dict[str, str] = Field(default_factory=dict, description="SoldTo<Field> -> value")
    Lines: list[NewLine] = Field(min_length=1, max_length=1000)


# --- helpers -------------------------------------------------------------------------------------------------------
def _since(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return parse_iso(value)
    except ValueError:
        raise ApiError(400, "invalid modified_since", field="modified_since") from None


def _modified_since(rows: list[dict[str, Any]], since: Any) -> list[dict[str, Any]]:
    if since is None:
        return rows
    return [row for row in rows if parse_iso(str(row["LastModified"])) >= since]


def _api_router(sim_ref: FastAPI) -> APIRouter:
    def qw() -> QwSim:
        sim: QwSim = sim_ref.state.qw
        return sim

    async def require_key(request: Request) -> None:
        given = request.headers.get("x-api-key", "")
        expected = qw().config.api_key.get_secret_value()
        if not given or not hmac.compare_digest(given.encode(), expected.encode()):
            raise ApiError(401, "unauthorized")

    router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_key)], tags=["QuoteWerks (simulated)"])

    def get_document(doc_no: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        found = qw().store.document(doc_no)
        if found is None:
            raise ApiError(404, "document not found", DocNo=doc_no)
        return found

    # --- documents -------------------------------------------------------------------------------------------------
    @router.get("/documents")
    async def list_documents(
        doc_type: str | None = Query(None, alias="DocType"),
        doc_status: str | None = Query(None, alias="DocStatus"),
        modified_since: str | None = None,
        limit: int = Query(1000, ge=1, le=10_000),
    ) -> dict[str, Any]:
        since = _since(modified_since)
        rows = list(qw().store.documents.values())
        if doc_type is not None:
            rows = [row for row in rows if row["DocType"] == doc_type.upper()]
        if doc_status is not None:
            rows = [row for row in rows if row["DocStatus"] == doc_status]
        rows = _modified_since(rows, since)
        rows.sort(key=lambda row: (parse_iso(row["LastModified"]), row["DocNo"]))
        return {"documents": rows[:limit]}

    @router.get("/documents/{doc_no}")
    async def read_document(doc_no: str) -> dict[str, Any]:
        header, items = get_document(doc_no)
        return {"DocumentHeader": header, "DocumentItems": items}

    @router.patch("/documents/{doc_no}")
    async def patch_document(doc_no: str, body: DocumentPatch) -> dict[str, Any]:
        header, _ = get_document(doc_no)
        for column, value in body.fields.items():
            if column not in HEADER_COLUMNS:
                raise ApiError(400, f"unknown column {column}", field=column)
            if column in READ_ONLY_HEADER_COLUMNS:
                raise ApiError(400, f"column {column} is read-only", field=column)
            numeric = column in NUMERIC_HEADER_COLUMNS
            if numeric != (isinstance(value, int | float) and not isinstance(value, bool)):
                kind = "a number" if numeric else "a string"
                raise ApiError(400, f"column {column} must be {kind}", field=column)
        # Write-back does not fire events: the bridge's own writes must not loop back to it.
        header.update(body.fields)
        header["LastModified"] = qw().store.now()
        return {"DocumentHeader": header}

    @router.post("/documents/{doc_no}/approve")
    async def approve(doc_no: str) -> dict[str, Any]:
        """A customer accepted the quote in QuoteValet."""
        header, _ = get_document(doc_no)
        if header["DocType"] != "QUOTE":
            raise ApiError(409, "only a QUOTE can be accepted", DocNo=doc_no, DocType=header["DocType"])
        header["DocStatus"] = qw().config.accepted_status
        header["LastModified"] = qw().store.now()
        scheduled = qw().webhooks.fire(ACCEPTED_EVENT, document=header)
        return {"DocumentHeader": header, "event": ACCEPTED_EVENT, "webhooks": scheduled}

    @router.post("/documents/{doc_no}/status")
    async def change_status(doc_no: str, body: StatusChange) -> dict[str, Any]:
        header, _ = get_document(doc_no)
        header["DocStatus"] = body.DocStatus
        header["LastModified"] = qw().store.now()
        scheduled = qw().webhooks.fire(STATUS_EVENT, document=header)
        return {"DocumentHeader": header, "event": STATUS_EVENT, "webhooks": scheduled}

    # --- customers (contact manager) -------------------------------------------------------------------------------
    @router.get("/customers")
    async def list_customers(modified_since: str | None = None) -> dict[str, Any]:
        rows = _modified_since(list(qw().store.customers.values()), _since(modified_since))
        return {"customers": rows}

    @router.get("/customers/{cm_account_no}")
    async def read_customer(cm_account_no: str) -> dict[str, Any]:
        customer = qw().store.customers.get(cm_account_no)
        if customer is None:
            raise ApiError(404, "customer not found", CMAccountNo=cm_account_no)
        return customer

    @router.put("/customers/{cm_account_no}")
    async def put_customer(
        cm_account_no: str,
        body: CustomerBody,
        response: Response,
        if_match: str | None = Header(None, description="Write only if LastModified is still this value."),
        if_none_match: str | None = Header(None, description="`*`: write only if the customer does not exist."),
    ) -> dict[str, Any]:
        """Create or replace a contact. `If-Match: <LastModified>` / `If-None-Match: *` make the write conditional
        (412 when someone else changed or created it first), so a writer never overwrites an edit it has not seen."""
        if body.CMAccountNo not in (None, cm_account_no):
            raise ApiError(400, "CMAccountNo in the body differs from the path", field="CMAccountNo")
        store = qw().store
        current = store.customers.get(cm_account_no)
        if if_none_match == "*" and current is not None:
            raise ApiError(412, "customer exists", CMAccountNo=cm_account_no, LastModified=current["LastModified"])
        if if_match is not None and (current is None or if_match.strip('"') != current["LastModified"]):
            raise ApiError(
                412, "customer changed since it was read", CMAccountNo=cm_account_no,
                LastModified=current["LastModified"] if current else None,
            )  # fmt: skip
        created = current is None
        record = {**body.model_dump(), "CMAccountNo": cm_account_no, "LastModified": store.now()}
        store.customers[cm_account_no] = {column: record.get(column, "") for column in CUSTOMER_COLUMNS}
        response.status_code = 201 if created else 200
        qw().webhooks.fire(CUSTOMER_EVENT, customer=store.customers[cm_account_no])
        return store.customers[cm_account_no]

    # --- products --------------------------------------------------------------------------------------------------
    @router.get("/products")
    async def list_products(modified_since: str | None = None) -> dict[str, Any]:
        rows = _modified_since(list(qw().store.products.values()), _since(modified_since))
        return {"products": rows}

    @router.get("/products/{part:path}")
    async def read_product(part: str) -> dict[str, Any]:
        product = qw().store.products.get(part)
        if product is None:
            raise ApiError(404, "product not found", ManufacturerPartNumber=part)
        return product

    @router.put("/products")
    async def put_products(body: ProductBatch) -> dict[str, Any]:
        parts = [product.ManufacturerPartNumber for product in body.products]
        if len(set(parts)) != len(parts):
            raise ApiError(400, "a part number appears twice in the batch", field="ManufacturerPartNumber")
        store = qw().store
        created = [part for part in parts if part not in store.products]
        new = set(created)
        stamp = store.now()
        for product in body.products:
            store.products[product.ManufacturerPartNumber] = {**product.model_dump(), "LastModified": stamp}
        return {"created": created, "updated": [part for part in parts if part not in new]}

    @router.put("/products/{part:path}")
    async def put_product(part: str, body: ProductBody, response: Response) -> dict[str, Any]:
        if body.ManufacturerPartNumber not in (None, part):
            raise ApiError(
                400, "ManufacturerPartNumber in the body differs from the path", field="ManufacturerPartNumber"
            )
        store = qw().store
        created = part not in store.products
        store.products[part] = {**body.model_dump(), "ManufacturerPartNumber": part, "LastModified": store.now()}
        response.status_code = 201 if created else 200
        return store.products[part]

    # --- webhooks --------------------------------------------------------------------------------------------------
    def get_webhook(webhook_id: int) -> Any:
        webhook = qw().webhooks.webhooks.get(webhook_id)
        if webhook is None:
            raise ApiError(404, "webhook not found", ID=webhook_id)
        return webhook

    @router.get("/webhooks")
    async def list_webhooks() -> dict[str, Any]:
        return {"webhooks": [webhook.view() for webhook in qw().webhooks.webhooks.values()]}

    @router.post("/webhooks", status_code=201)
    async def create_webhook(spec: WebhookSpec) -> dict[str, Any]:
        return qw().webhooks.add(spec).view()

    @router.put("/webhooks/{webhook_id}")
    async def replace_webhook(webhook_id: int, spec: WebhookSpec) -> dict[str, Any]:
        get_webhook(webhook_id)
        webhook = qw().webhooks.replace(webhook_id, spec)
        assert webhook is not None
        return webhook.view()

    @router.delete("/webhooks/{webhook_id}", status_code=204)
    async def delete_webhook(webhook_id: int) -> Response:
        get_webhook(webhook_id)
        qw().webhooks.remove(webhook_id)
        return Response(status_code=204)

    @router.get("/webhooks/{webhook_id}/deliveries")
    async def deliveries(webhook_id: int) -> dict[str, Any]:
        webhook = get_webhook(webhook_id)
        return {"ID": webhook_id, "deliveries": list(webhook.deliveries)}

    return router


def _product_line(sim: QwSim, line: NewLine) -> dict[str, Any]:
    """A document line of `line`: the catalog product, or a part with its own price when it has one or is unknown."""
    product = sim.store.products.get(line.ManufacturerPartNumber)
    if line.UnitList is not None or product is None:
        price = line.UnitList if line.UnitList is not None else 0.0
        product = {"Price": price, "Cost": price * 0.6, "Description": line.Description or "Non-catalog part",
                   "UnitOfMeasure": "EA"}  # fmt: skip
    discount = Decimal(str(line.DiscountPercent))
    return sim.store.product_line(line.ManufacturerPartNumber, line.QtyTotal, discount=discount, product=product)


def _admin_router(app: FastAPI) -> APIRouter:
    # The simulator's control plane: no API key. It is no part of QuoteWerks; never expose the simulator publicly.
    router = APIRouter(prefix="/__admin", tags=["simulator admin"])

    @router.get("/stats")
    async def stats() -> dict[str, Any]:
        sim: QwSim = app.state.qw
        return sim.stats()

    @router.post("/reset")
    async def reset() -> dict[str, Any]:
        sim: QwSim = app.state.qw
        await sim.reset()
        return sim.stats()

    @router.get("/scenarios")
    async def scenarios() -> dict[str, str]:
        sim: QwSim = app.state.qw
        return sim.scenarios

    @router.post("/documents", status_code=201)
    async def add_document(body: NewDocument) -> dict[str, Any]:
        """Create a quote (no event fires: approving it does). 409 when the DocNo exists."""
        sim: QwSim = app.state.qw
        store = sim.store
        if f"{sim.config.doc_prefix}{body.Number}" in store.documents:
            raise ApiError(409, "document exists", Number=body.Number)
        if body.CMAccountNo is not None:
            if body.CMAccountNo not in store.customers:
                raise ApiError(404, "customer not found", CMAccountNo=body.CMAccountNo)
            sold_to = store.party("SoldTo", body.CMAccountNo)
        else:
            unknown = sorted(k for k in body.SoldTo if k not in empty_party("SoldTo"))
            if unknown:
                raise ApiError(400, f"unknown SoldTo fields {unknown}")
            sold_to = {**empty_party("SoldTo"), **body.SoldTo}
        lines = [_product_line(sim, line) for line in body.Lines]
        header = store.add_document(
            body.Number, name=body.DocName or f"Quote {body.Number}", status=body.DocStatus, sold_to=sold_to,
            ship_via=body.ShipVia, lines=lines, days_ago=0,
        )  # fmt: skip
        header["LastModified"] = store.now()
        return {"DocumentHeader": header, "DocumentItems": store.items[int(header["ID"])]}

    @router.put("/documents/{doc_no}/items/{item_id}")
    async def edit_line(doc_no: str, item_id: int, body: NewLine) -> dict[str, Any]:
        """A sales rep changes a line of a quote (another product or quantity), as in QuoteWerks: the document's
        LastModified moves; no event fires."""
        sim: QwSim = app.state.qw
        found = sim.store.document(doc_no)
        if found is None:
            raise ApiError(404, "document not found", DocNo=doc_no)
        header, items = found
        row = next((item for item in items if int(item["ID"]) == item_id), None)
        if row is None:
            raise ApiError(404, "no such line", DocNo=doc_no, ID=item_id)
        row.update(_product_line(sim, body))
        header["LastModified"] = sim.store.now()
        return {"DocumentHeader": header, "DocumentItems": items}

    @router.post("/events")
    async def fire(body: EventRequest) -> dict[str, Any]:
        sim: QwSim = app.state.qw
        document = sim.store.documents.get(body.DocNo) if body.DocNo else None
        customer = sim.store.customers.get(body.CMAccountNo) if body.CMAccountNo else None
        if body.DocNo and document is None:
            raise ApiError(404, "document not found", DocNo=body.DocNo)
        if body.CMAccountNo and customer is None:
            raise ApiError(404, "customer not found", CMAccountNo=body.CMAccountNo)
        return {"event": body.Event, "webhooks": sim.webhooks.fire(body.Event, document=document, customer=customer)}

    return router


def create_app(config: QwSimConfig | None = None, *, transport: httpx.AsyncBaseTransport | None = None) -> FastAPI:
    """The simulator app. `transport` is used by webhook delivery (tests route it to an in-process receiver)."""
    config = config or QwSimConfig()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        sim: QwSim = app.state.qw
        await sim.aclose()

    app = FastAPI(title="QuoteWerks simulator (M3 Bridge)", docs_url="/__admin/docs", redoc_url=None, lifespan=lifespan)
    app.state.qw = QwSim(config=config, store=QwStore(config), webhooks=WebhookHub(config, transport=transport))

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"loc": list(error.get("loc", ())), "msg": str(error.get("msg", ""))} for error in exc.errors()]
        return JSONResponse({"error": "invalid request", "details": details}, status_code=422)

    app.include_router(_api_router(app))
    app.include_router(_admin_router(app))

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "tenant": config.tenant_account_number}

    return app
