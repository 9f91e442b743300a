"""Infor Data Lake (Data Fabric Compass v2) query API over the M3 simulator's tables.

    POST {tenant}/DATAFABRIC/compass/v2/jobs/               body = SQL, Content-Type text/plain → {"queryId": …}
    GET  {tenant}/DATAFABRIC/compass/v2/jobs/{id}/status/   → {"status": "RUNNING" | "FINISHED" | "FAILED"}
    GET  {tenant}/DATAFABRIC/compass/v2/jobs/{id}/result/?offset=0&limit=N   (N ≤ 100 000)

Research §6: the paths, text/plain SQL, the statuses, the 100 000-row page limit, results only for the same tenant
and principal are confirmed; the result body format is not (a public client reads CSV). **Sim:** the result is a JSON
list of row objects (`Accept: text/csv` gives CSV). Mounted under `/{tenant}/`, so the Gateway's bearer check and
throttling apply as to the MI API.

The SQL accepted is a small subset, enough for catalog loads:

    SELECT * | COUNT(*) | col[, col…] FROM MITMAS | MITBAL | OCUSMA | OPRBAS
      [WHERE col = 'text' | col = 123 | deleted = false [AND …]] [ORDER BY col] [LIMIT n]

Anything else is refused with HTTP 400. Only the latest variation of each record is returned and, as in the real lake,
a `deleted` column is present (always false here: the simulator deletes nothing). Tables: MITMAS (items), MITBAL (item x
warehouse balances), OCUSMA (customers), OPRBAS (sales price list lines, one per item on list STD/EUR).
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field

from simulators.ion.m3.data import PRICE_CURRENCY, PRICE_LIST, PRICE_VALID_TO, Store

MAX_PAGE = 100_000
Row = dict[str, object]


class DataLakeConfig(BaseModel):
    """How long a job stays RUNNING before FINISHED, and how many finished jobs are kept."""

    running_s: float = Field(
        default_factory=lambda: float(os.environ.get("ION_SIM_DATALAKE_RUNNING_S", "0.3")), ge=0, le=600
    )
    keep_jobs: int = Field(200, ge=1)
    fail_next: int = Field(0, ge=0, description="Make the next N jobs end FAILED (fault injection).")


class QueryError(ValueError):
    """The SQL is outside the accepted subset or names unknown tables/columns."""


@dataclass(frozen=True)
class LakeQuery:
    table: str
    columns: list[str] | None  # None = *
    count: bool
    where: list[tuple[str, object]]
    order_by: str | None
    limit: int | None


_SQL = re.compile(
    r"^\s*SELECT\s+(?P<cols>\*|COUNT\s*\(\s*\*\s*\)(?:\s+AS\s+\w+)?|[A-Za-z_][\w]*(?:\s*,\s*[A-Za-z_]\w*)*)\s+"
    r"FROM\s+(?P<table>[A-Za-z_]\w*)"
    r"(?:\s+WHERE\s+(?P<where>.+?))?"
    r"(?:\s+ORDER\s+BY\s+(?P<order>[A-Za-z_]\w*)(?:\s+ASC)?)?"
    r"(?:\s+LIMIT\s+(?P<limit>\d+))?\s*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_CONDITION = re.compile(
    r"^\s*(?P<col>[A-Za-z_]\w*)\s*=\s*(?:'(?P<text>(?:[^']|'')*)'|(?P<num>-?\d+(?:\.\d+)?)|(?P<bool>true|false))\s*$",
    re.IGNORECASE,
)


def parse(sql: str) -> LakeQuery:
    match = _SQL.match(sql)
    if match is None:
        raise QueryError("only SELECT cols|*|COUNT(*) FROM table [WHERE col = value [AND …]] [ORDER BY col] [LIMIT n]")
    table = match["table"].upper()
    if table not in TABLES:
        raise QueryError(f"unknown table {match['table']}; known: {', '.join(sorted(TABLES))}")
    known = TABLES[table].columns
    cols_text = match["cols"].strip()
    count = cols_text.upper().startswith("COUNT")
    columns: list[str] | None = None
    if not count and cols_text != "*":
        columns = [_column(c.strip(), known) for c in cols_text.split(",")]
    where: list[tuple[str, object]] = []
    if match["where"]:
        for part in re.split(r"\s+AND\s+", match["where"].strip(), flags=re.IGNORECASE):
            cond = _CONDITION.match(part)
            if cond is None:
                raise QueryError(f"unsupported condition {part.strip()!r} (only col = 'text' | number | true/false)")
            value: object
            if cond["text"] is not None:
                value = cond["text"].replace("''", "'")
            elif cond["num"] is not None:
                value = Decimal(cond["num"])
            else:
                value = cond["bool"].lower() == "true"
            where.append((_column(cond["col"], known), value))
    order_by = _column(match["order"], known) if match["order"] else None
    return LakeQuery(table, columns, count, where, order_by, int(match["limit"]) if match["limit"] else None)


def _column(name: str, known: tuple[str, ...]) -> str:
    for column in known:
        if column.lower() == name.lower():
            return column
    raise QueryError(f"unknown column {name}")


def _json_value(value: object) -> object:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, date):
        return int(value.strftime("%Y%m%d"))  # M3 tables keep dates as numbers yyyyMMdd
    return value


def _matches(row: Row, where: list[tuple[str, object]]) -> bool:
    for column, wanted in where:
        value = row.get(column)
        if isinstance(wanted, bool):
            if value is not wanted:
                return False
        elif isinstance(wanted, Decimal):
            try:
                if Decimal(str(value)) != wanted:
                    return False
            except ArithmeticError:
                return False
        elif str(value) != wanted:
            return False
    return True


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: Callable[[Store, list[tuple[str, object]]], Iterator[Row]]


def _mitmas(store: Store, where: list[tuple[str, object]]) -> Iterator[Row]:
    for item in store.items:
        yield {"CONO": store.company, **item.record(), "deleted": False}


def _mitbal(store: Store, where: list[tuple[str, object]]) -> Iterator[Row]:
    warehouses = [str(v) for c, v in where if c == "WHLO"] or store.warehouses
    items = [str(v) for c, v in where if c == "ITNO"]
    chosen = [i for i in (store.item(n) for n in items) if i is not None] if items else store.items
    for item in chosen:
        for whlo in warehouses:
            if whlo not in store.warehouses:
                continue
            bal = store.balance(item.itno, whlo)
            yield {
                "CONO": store.company, "WHLO": whlo, "ITNO": item.itno, "STQT": bal.stqt, "ALQT": bal.alqt,
                "AV01": bal.available, "IDDT": bal.iddt, "ODDT": bal.oddt, "deleted": False,
            }  # fmt: skip


def _ocusma(store: Store, where: list[tuple[str, object]]) -> Iterator[Row]:
    for cuno in store.customer_keys:
        yield {**store.customers[cuno], "deleted": False}


def _oprbas(store: Store, where: list[tuple[str, object]]) -> Iterator[Row]:
    for item in store.items:
        yield {
            "CONO": store.company, "PRRF": PRICE_LIST, "CUCD": PRICE_CURRENCY, "CUNO": "",
            "FVDT": store.price_valid_from, "ITNO": item.itno, "SAPR": item.price, "LVDT": PRICE_VALID_TO,
            "SPUN": item.unms, "deleted": False,
        }  # fmt: skip


_ITEM_COLUMNS = (
    "CONO", "STAT", "ITNO", "ITDS", "FUDS", "UNMS", "ITGR", "ITCL", "ITTY", "STCD", "BUAR", "RESP", "PUUN", "ALUN",
    "SPUN", "NEWE", "GRWE", "PRGP", "LMDT", "RGDT", "deleted",
)  # fmt: skip
_CUSTOMER_COLUMNS = (
    "CONO", "DIVI", "LNCD", "CUNO", "CUNM", "CUA1", "CUA2", "CUA3", "CUA4", "PONO", "PHNO", "PHN2", "TFNO", "CUTP",
    "ALCU", "YREF", "MAIL", "CSCD", "STAT", "LMDT", "RGDT", "TOWN", "CUCD", "VRNO", "ORTP", "WHLO", "FACI", "PLTB",
    "TEPY", "MODL", "TEDL", "PYNO", "CRLM", "deleted",
)  # fmt: skip

TABLES: dict[str, Table] = {
    "MITMAS": Table(_ITEM_COLUMNS, _mitmas),
    "MITBAL": Table(
        ("CONO", "WHLO", "ITNO", "STQT", "ALQT", "AV01", "IDDT", "ODDT", "deleted"),
        _mitbal,
    ),
    "OCUSMA": Table(_CUSTOMER_COLUMNS, _ocusma),
    "OPRBAS": Table(
        ("CONO", "PRRF", "CUCD", "CUNO", "FVDT", "ITNO", "SAPR", "LVDT", "SPUN", "deleted"),
        _oprbas,
    ),
}


def run(store: Store, query: LakeQuery) -> list[Row]:
    """Evaluate a parsed query over the store: the rows as JSON-ready dicts."""
    table = TABLES[query.table]
    rows: Iterator[Row] = (r for r in table.rows(store, query.where) if _matches(r, query.where))
    if query.count:
        return [{"count": sum(1 for _ in rows)}]
    selected: list[Row] = list(rows)
    if query.order_by:
        key = query.order_by
        selected.sort(key=lambda r: str(r.get(key, "")))
    if query.limit is not None:
        selected = selected[: query.limit]
    columns = query.columns or list(table.columns)
    return [{c: _json_value(r.get(c)) for c in columns} for r in selected]


@dataclass
class Job:
    query_id: str
    owner: str
    sql: str
    submitted: float
    rows: list[Row] = field(default_factory=list)
    failed: str | None = None

    def status(self, running_s: float) -> Literal["RUNNING", "FINISHED", "FAILED"]:
        if time.monotonic() - self.submitted < running_s:
            return "RUNNING"
        return "FAILED" if self.failed else "FINISHED"


class DataLake:
    """The jobs of one tenant, kept in memory (the real lake keeps results ~20 h; here the newest `keep_jobs`)."""

    def __init__(self, store_of: Callable[[], Store], config: DataLakeConfig | None = None) -> None:
        self._store_of = store_of
        self.config = config or DataLakeConfig()
        self.jobs: dict[str, Job] = {}
        self.stats: dict[str, int] = {"jobs": 0, "status": 0, "result": 0, "refused": 0}

    def submit(self, owner: str, sql: str) -> Job:
        self.stats["jobs"] += 1
        query = parse(sql)  # QueryError → 400 before a job exists
        job = Job(uuid.uuid4().hex, owner, sql, time.monotonic())
        if self.config.fail_next > 0:
            self.config.fail_next -= 1
            job.failed = "simulated failure"
        else:
            job.rows = run(self._store_of(), query)  # results are static once the job is accepted
        self.jobs[job.query_id] = job
        for stale in list(itertools.islice(self.jobs, max(len(self.jobs) - self.config.keep_jobs, 0))):
            del self.jobs[stale]
        return job

    def job(self, owner: str, query_id: str) -> Job:
        job = self.jobs.get(query_id)
        if job is None or job.owner != owner:  # results are for the same principal only
            raise HTTPException(404, f"query {query_id} not found")
        return job


def _user(request: Request) -> str:
    return str(getattr(request.state, "user", "") or "")


def datalake_router(lake: DataLake) -> APIRouter:
    """Mount under `/{tenant}/DATAFABRIC/compass/v2`."""
    router = APIRouter(tags=["Data Lake (Compass v2)"])

    @router.post("/jobs/", status_code=202)
    async def submit(request: Request) -> JSONResponse:
        if not request.headers.get("content-type", "").lower().startswith("text/plain"):
            lake.stats["refused"] += 1
            raise HTTPException(415, "the query must be sent as Content-Type: text/plain")
        sql = (await request.body()).decode("utf-8", errors="replace")
        try:
            job = lake.submit(_user(request), sql)
        except QueryError as exc:
            lake.stats["refused"] += 1
            return JSONResponse({"error": "Bad Request", "message": str(exc)}, status_code=400)
        return JSONResponse({"queryId": job.query_id, "status": "RUNNING", "location": f"jobs/{job.query_id}/"}, 202)

    @router.get("/jobs/{query_id}/status/")
    async def status(query_id: str, request: Request) -> dict[str, Any]:
        lake.stats["status"] += 1
        job = lake.job(_user(request), query_id)
        state = job.status(lake.config.running_s)
        answer: dict[str, Any] = {"queryId": job.query_id, "status": state}
        if state == "FINISHED":
            answer["rowCount"] = len(job.rows)
        if state == "FAILED":
            answer["message"] = job.failed
        return answer

    @router.get("/jobs/{query_id}/result/")
    async def result(
        query_id: str,
        request: Request,
        offset: int = Query(0, ge=0),
        limit: int = Query(1000, ge=1, le=MAX_PAGE),
    ) -> Response:
        lake.stats["result"] += 1
        job = lake.job(_user(request), query_id)
        state = job.status(lake.config.running_s)
        if state != "FINISHED":
            raise HTTPException(409, f"query {query_id} is {state}, not FINISHED")
        page = job.rows[offset : offset + limit]
        if "text/csv" in request.headers.get("accept", ""):
            out = io.StringIO()
            columns = list(page[0]) if page else []
            writer = csv.DictWriter(out, fieldnames=columns)
            writer.writeheader()
            writer.writerows(page)
            return PlainTextResponse(out.getvalue(), media_type="text/csv")
        return JSONResponse(page)

    return router


def datalake_admin_router(lake: DataLake) -> APIRouter:
    """`/__admin/datalake`: the simulator's control of the Data Lake (not part of the real API)."""
    router = APIRouter(prefix="/__admin", tags=["simulator admin: Data Lake"])

    @router.get("/datalake")
    async def get_config() -> dict[str, Any]:
        return {**lake.config.model_dump(), "stats": dict(lake.stats), "jobs": len(lake.jobs)}

    @router.put("/datalake")
    async def put_config(config: DataLakeConfig) -> dict[str, Any]:
        lake.config = config
        return config.model_dump()

    return router
