"""catalog-sync wiring: settings, broker, HTTP app.

Full loads (at start when nothing was synced yet, on `POST /v1/sync/full`, on the schedule) and deltas from M3 change
events push M3 items, prices and stock to the QuoteWerks product catalog; each run's report goes to
`catalog.sync.report.v1`.
"""

# No `from __future__ import annotations`: faststream and FastAPI read the handler signatures at runtime.
import logging
from functools import partial
from typing import Any, Literal

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from faststream import AckPolicy
from faststream.kafka.annotations import KafkaMessage
from pydantic import Field

from services.catalog_sync.customer_merger import CustomerMerger
from services.catalog_sync.customer_sides import crs610_lengths
from services.catalog_sync.customers import (
    CustomerMaster,
    reconcile_forever,
    settle_decisions_forever,
)
from services.catalog_sync.datalake import DataLakeClient
from services.catalog_sync.deltas import settle_delta
from services.catalog_sync.products import StoredFingerprints, SyncOptions
from services.catalog_sync.schedule import full_loads, polls, reconciles
from services.catalog_sync.sync import CatalogSync
from shared.contracts import (
    CatalogSyncReport,
    InventoryChanged,
    ItemChanged,
    M3CustomerChanged,
    PriceChanged,
    QuoteWerksCustomerChanged,
)
from shared.contracts.topics import (
    CATALOG_SYNC_REPORT,
    INVENTORY_CHANGED,
    ITEM_CHANGED,
    M3_CUSTOMER_CHANGED,
    PRICE_CHANGED,
    QUOTEWERKS_CUSTOMER_CHANGED,
)
from shared.customers import load_sync_rules, settle_customer_change
from shared.m3 import m3_client_for
from shared.mapping import country_table, load_rules
from shared.platform.runtime import ServiceRuntime
from shared.platform.settings import CustomerRulesSettings, QuoteWerksSettings, config_path
from shared.platform.started import StartedPart
from shared.quotewerks import QuoteWerks
from shared.quotewerks.connect import is_database_url, quotewerks_client
from shared.quotewerks.errors import QuoteWerksConfigError

log = logging.getLogger(__name__)


class CatalogSyncSettings(CustomerRulesSettings, QuoteWerksSettings):
    service_name: str = "catalog-sync"
    customer_sync: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Keep the QuoteWerks contact manager in step with M3 (both ways, by customer-sync.yaml): `auto` = "
        "on with an HTTP adapter, off with a database URL (the SQL connector does not reach contacts; `on` with a "
        "database URL is refused). Off, QuoteWerks changes of linked customers still reach M3; nothing is written "
        "to QuoteWerks.",
    )
    customer_reconcile_interval_s: float = Field(
        86_400.0,
        ge=0,
        description="Seconds between reconciliations of every linked customer (both systems read, differences the "
        "rules decide repaired, the rest to the review queue; 0 = only on `POST /v1/customers/reconcile`). Needs "
        "the contact manager (M3B_CUSTOMER_SYNC).",
    )
    customer_decisions_poll_s: float = Field(
        5.0, gt=0, le=3600, description="How often decisions taken on customer review items are looked for and applied."
    )
    full_load_interval_s: float = Field(
        86_400.0, ge=0, description="Seconds between scheduled full loads (0 = only at first start and on demand)."
    )
    catalog_reconcile_interval_s: float = Field(
        604_800.0,
        ge=0,
        description="Seconds between catalog reconciliations: every M3 item's product compared with what QuoteWerks "
        "holds now (not with what the bridge last pushed), a missing or edited product pushed again, the rest "
        "counted in m3bridge_catalog_differences (0 = only on `POST /v1/sync/reconcile`). A full read of M3 and of "
        "QuoteWerks' products, like a full load.",
    )
    full_load_at_start: bool = Field(True, description="Run a full load at start when no product was synced yet.")
    data_lake_threshold: int = Field(
        2000, ge=0, description="Above this many M3 items a full load reads the Data Lake instead of paging MI."
    )
    data_lake_poll_s: float = Field(0.5, gt=0, description="How often a running Data Lake query is polled.")
    mi_page_size: int = Field(
        1000,
        ge=10,
        le=10_000,
        description="Items per MMS200MI/LstItmByItm request when a full load pages MI (below the Data Lake threshold, "
        "or when the Data Lake cannot be read): fewer Gateway requests per load, a larger answer each.",
    )
    data_lake_timeout_s: float = Field(900.0, gt=0, description="How long one Data Lake query may run.")
    catalog_retire_limit: float = Field(
        0.1, ge=0, le=1, description="Most share of the synced products one full load may deactivate as gone from M3."
    )
    item_poll_interval_s: float = Field(
        0.0,
        ge=0,
        description="Seconds between polls of MMS200MI/LstItmByChgDate for changed items (0 = off; turn on when M3 "
        "does not send BODs to the bridge).",
    )
    catalog_warehouse: str = Field("100", min_length=1, max_length=3, description="Warehouse (WHLO) of availability.")
    catalog_price_list: str = Field("STD", min_length=1, max_length=10, description="Sales price list (PRRF).")
    catalog_currency: str = Field("EUR", min_length=1, max_length=3, description="Currency of the price list (CUCD).")
    catalog_consumer_group: str = Field(
        "m3bridge.catalog-sync",
        min_length=1,
        description="Kafka consumer group of the item, price and stock subscribers; give each bridge installation "
        "that shares a Kafka cluster its own.",
    )


def create_runtime(settings: CatalogSyncSettings | None = None) -> ServiceRuntime:
    settings = settings or CatalogSyncSettings()
    runtime = ServiceRuntime(
        settings, description="Keeps the QuoteWerks catalog in step with M3 items, prices and stock.", uses_state=True
    )
    customer_rules = load_sync_rules(config_path(settings.customer_sync_file))  # invalid rules stop the service
    database = is_database_url(settings.quotewerks_url)
    if settings.customer_sync == "on" and database:
        raise QuoteWerksConfigError(
            "M3B_CUSTOMER_SYNC=on needs the QuoteWerks contact manager, which the SQL connector does not reach: use "
            "an HTTP adapter URL, or M3B_CUSTOMER_SYNC=auto/off to sync products only"
        )
    contacts_synced = settings.customer_sync == "on" or (settings.customer_sync == "auto" and not database)
    mapping = load_rules(config_path(settings.mapping_file))
    countries = country_table(mapping)
    catalog = StartedPart[QuoteWerks](runtime.name)
    sync = StartedPart[CatalogSync](runtime.name)
    customers = StartedPart[CustomerMaster](runtime.name)
    first_load = StartedPart[bool](runtime.name)

    async def send_report(report: CatalogSyncReport) -> None:
        try:
            await runtime.publish(CATALOG_SYNC_REPORT, report, report.run_id)
        except Exception as exc:  # the report is information; the catalog is already updated
            log.warning("report %s not published: %s", report.run_id, exc)

    @runtime.on_startup
    async def start() -> None:
        m3 = m3_client_for(settings, runtime.http, audit=runtime.audit)
        lake = DataLakeClient(m3, poll_s=settings.data_lake_poll_s, timeout_s=settings.data_lake_timeout_s)
        store = StoredFingerprints(runtime.state)
        options = SyncOptions(
            threshold=settings.data_lake_threshold,
            warehouse=settings.catalog_warehouse,
            price_list=settings.catalog_price_list,
            currency=settings.catalog_currency,
            retire_limit=settings.catalog_retire_limit,
            mi_page_size=settings.mi_page_size,
        )
        # With a database URL products go into the bridge's own table (M3BridgeProducts) and contacts are not synced.
        catalog.set(
            quotewerks_client(
                settings.quotewerks_url,
                settings.quotewerks_api_key,
                http=runtime.http,
                needs=("products", "customers") if contacts_synced else ("products",),
                sql_password=settings.quotewerks_sql_password,
                audit=runtime.audit,
            )
        )
        sync.set(CatalogSync(m3, lake, catalog(), store, send_report, options))
        contacts = catalog() if contacts_synced else None
        merger = CustomerMerger(m3, contacts, runtime.state, customer_rules, mapping, countries, crs610_lengths(m3))
        customers.set(CustomerMaster(contacts, runtime.state, customer_rules, countries, merger))
        if not contacts_synced:
            log.warning("customers are not written to QuoteWerks (M3B_CUSTOMER_SYNC=%s, %s): QuoteWerks changes of "
                        "linked customers still reach M3", settings.customer_sync,
                        "database URL" if database else "off")  # fmt: skip
        # Asked before the broker starts: a delta consumed first would store a fingerprint and hide the empty store.
        first_load.set(settings.full_load_at_start and not await store.all())

    @runtime.after_broker_start
    async def start_timers() -> None:
        """Every run publishes its report: the timers start once the broker has."""
        schedule = full_loads(sync(), first=first_load(), interval_s=settings.full_load_interval_s)
        runtime.in_background(schedule, name="catalog-schedule")
        runtime.in_background(
            settle_decisions_forever(customers(), interval_s=settings.customer_decisions_poll_s),
            name="customer-decisions",
        )
        if contacts_synced and settings.customer_reconcile_interval_s > 0:
            runtime.in_background(
                reconcile_forever(customers(), interval_s=settings.customer_reconcile_interval_s),
                name="customer-reconcile",
            )
        if settings.item_poll_interval_s > 0:
            runtime.in_background(polls(sync(), interval_s=settings.item_poll_interval_s), name="catalog-poll")
        if settings.catalog_reconcile_interval_s > 0:
            runtime.in_background(reconciles(sync(), interval_s=settings.catalog_reconcile_interval_s),
                                  name="catalog-reconcile")  # fmt: skip

    @runtime.on_shutdown
    async def stop() -> None:
        await catalog().aclose()

    operator = [runtime.require("operator")]  # M3B_OPERATOR_KEY: Authorization: Bearer <key> or X-API-Key

    @runtime.app.post("/v1/sync/full", tags=["catalog"], summary="Start a full load now", dependencies=operator)
    async def full_load(wait: bool = False, path: Literal["data_lake", "mi"] | None = None) -> JSONResponse:
        """`wait=true` answers with the run's report; otherwise 202 at once. `path` forces Data Lake or MI."""
        if sync().full_load_running:
            raise HTTPException(409, "a full load is already running")
        if wait:
            report = await sync().full_load(forced=path)
            return JSONResponse(report.model_dump(mode="json"))
        runtime.in_background(sync().full_load(forced=path), name="catalog-full-load")
        return JSONResponse({"accepted": True}, status_code=202)

    @runtime.app.post(
        "/v1/sync/reconcile", tags=["catalog"], summary="Compare the catalog with M3 now", dependencies=operator
    )
    async def reconcile_catalog(dry_run: bool = False) -> JSONResponse:
        """Every M3 item's product compared with what QuoteWerks holds now: counts `missing`, `differs`, `same`, a
        problem per difference; each one pushed again unless `dry_run=true`. Answers with the report."""
        if sync().full_load_running:
            raise HTTPException(409, "a full load or reconciliation is already running")
        return JSONResponse((await sync().reconcile(dry_run=dry_run)).model_dump(mode="json"))

    @runtime.app.post("/v1/sync/poll", tags=["catalog"], summary="Poll M3 for changed items now", dependencies=operator)
    async def poll_now() -> JSONResponse:
        """One MMS200MI/LstItmByChgDate poll (the path when BODs are off); answers with its report."""
        report = await sync().poll_changes()
        return JSONResponse(report.model_dump(mode="json"))

    @runtime.app.post(
        "/v1/customers/reconcile", tags=["customers"], summary="Reconcile every linked customer now",
        dependencies=operator,
    )  # fmt: skip
    async def reconcile_customers(dry_run: bool = False) -> JSONResponse:
        """Both systems read for every link; what the rules decide is repaired (`dry_run=true`: only reported), the
        rest waits in the review queue (`m3bridge customers conflicts`). Answers with the report."""
        if not contacts_synced:
            raise HTTPException(409, "customers are not synced with the QuoteWerks contact manager (M3B_CUSTOMER_SYNC)")
        report = await customers().reconcile(dry_run=dry_run)
        return JSONResponse(report.as_dict())

    async def settle(report: CatalogSyncReport | None, message: KafkaMessage) -> None:
        await settle_delta(report, sync().progress, partial(runtime.dead_letter, message, error_class="catalog-delta"))

    @runtime.subscriber(
        ITEM_CHANGED,
        group=settings.catalog_consumer_group,
        # Committed once the product is pushed or its dead letter (and work item) is on the broker.
        ack_policy=AckPolicy.NACK_ON_ERROR,
        title="catalog-sync/items",
        work_kind="item",
        description="Changed M3 items update their QuoteWerks products (status 20 = active).",
    )
    async def on_item(event: ItemChanged, message: KafkaMessage) -> None:
        await settle(await sync().on_item(event), message)

    @runtime.subscriber(
        PRICE_CHANGED,
        group=settings.catalog_consumer_group,
        # Committed once the product is pushed or its dead letter (and work item) is on the broker.
        ack_policy=AckPolicy.NACK_ON_ERROR,
        title="catalog-sync/prices",
        work_kind="price",
        description="Changed prices of the configured price list update QuoteWerks product prices.",
    )
    async def on_price(event: PriceChanged, message: KafkaMessage) -> None:
        await settle(await sync().on_price(event), message)

    @runtime.subscriber(
        INVENTORY_CHANGED,
        group=settings.catalog_consumer_group,
        # Committed once the product is pushed or its dead letter (and work item) is on the broker.
        ack_policy=AckPolicy.NACK_ON_ERROR,
        title="catalog-sync/inventory",
        work_kind="stock",
        description="Stock changes in the configured warehouse update QuoteWerks product availability.",
    )
    async def on_inventory(event: InventoryChanged, message: KafkaMessage) -> None:
        await settle(await sync().on_inventory(event), message)

    # Customer changes are committed once the other side has them or their dead letter (and work item) is on the
    # broker; a transient failure is tried again.
    if contacts_synced:

        @runtime.subscriber(
            M3_CUSTOMER_CHANGED,
            group="m3bridge.catalog-sync.customers",
            ack_policy=AckPolicy.NACK_ON_ERROR,
            title="catalog-sync/customers",
            work_kind="m3-customer",
            description="M3 customer changes merged with the QuoteWerks contact manager (customer-sync.yaml).",
        )
        async def on_m3_customer(event: M3CustomerChanged, message: KafkaMessage) -> None:
            rejected = partial(runtime.dead_letter, message, error_class="customer-rejected")
            await settle_customer_change(customers().apply(event), change=f"M3 customer change "
                                         f"{event.customer_number}", dead_letter=rejected)  # fmt: skip

    @runtime.subscriber(
        QUOTEWERKS_CUSTOMER_CHANGED,
        group="m3bridge.catalog-sync.quotewerks-customers",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        title="catalog-sync/quotewerks-customers",
        work_kind="qw-customer",
        description="QuoteWerks changes of linked customers merged with M3 (CRS610MI), by customer-sync.yaml; a "
        "customer nobody linked yet is order-writer's to find or create.",
    )
    async def on_quotewerks_customer(event: QuoteWerksCustomerChanged, message: KafkaMessage) -> None:
        rejected = partial(runtime.dead_letter, message, error_class="customer-rejected")
        await settle_customer_change(customers().apply_quotewerks(event), change=f"QuoteWerks customer change "
                                     f"{event.customer_id}", dead_letter=rejected)  # fmt: skip

    def progress() -> dict[str, Any]:
        running = sync.peek()
        if running is None:
            return {"state": "starting"}
        last = customers().last_reconcile
        reconciled = None if last is None else {
            "finished_at": last.finished_at.isoformat() if last.finished_at else None, "dry_run": last.dry_run,
            "links": last.links, "differing_fields": last.differing_fields, "waiting": last.waiting,
            "left": last.left, "failed": len(last.failed),
        }  # fmt: skip
        return {**running.progress.snapshot(), "customers": dict(customers().counts),
                "customers_written_to_quotewerks": contacts_synced, "last_customer_reconcile": reconciled}  # fmt: skip

    runtime.health.set_detail("logic", progress)
    return runtime
