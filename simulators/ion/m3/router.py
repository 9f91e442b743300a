"""FastAPI routes of `/m3api-rest` (paths here are relative to it; the Gateway mounts them under
`/{tenant}/M3/m3api-rest` after checking the bearer token and setting `request.state.user`).

- `GET /execute/{program}/{transaction;matrix=params}?FIELD=value` (v1)
- `GET /v2/execute/{program}/{transaction}?FIELD=value&maxrecs=&returncols=&cono=&divi=…` (v2; matrix params also read;
  request header `positionkey` continues a list where the previous answer's `positionKey` left off)
- `POST /v2/execute` (bulk, one program, many transactions, in order)
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from simulators.ion.m3 import wire
from simulators.ion.m3.simulator import M3Simulator

# Lower-case request options (matrix or query parameters); everything else upper-case is an input field.
_OPTIONS = {
    "metadata", "maxrecs", "excludempty", "excludeempty", "cono", "divi", "returncols", "lanc", "locale",
    "timezone", "dateformat", "righttrim", "format", "extendedresult",
}  # fmt: skip
DEFAULT_MAXRECS = 100


class _Options:
    def __init__(self, raw: dict[str, str]) -> None:
        self.metadata = _flag(raw.get("metadata"), False)
        self.excludempty = _flag(raw.get("excludempty", raw.get("excludeempty")), False)
        self.righttrim = _flag(raw.get("righttrim"), True)
        self.extendedresult = _flag(raw.get("extendedresult"), False)
        self.maxrecs = _int(raw.get("maxrecs"), DEFAULT_MAXRECS)
        cono = raw.get("cono", "").strip()
        self.cono: int | None = _int(cono, -1) if cono else None
        self.divi = raw.get("divi")
        cols = raw.get("returncols", "")
        self.returncols = [c.strip() for c in cols.split(",") if c.strip()] or None


def _flag(value: str | None, default: bool) -> bool:
    return default if value is None or value == "" else value.strip().lower() == "true"


def _int(value: str | None, default: int) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        return default


def _split(segment: str) -> tuple[str, dict[str, str]]:
    """`LstByNumber;metadata=true;maxrecs=5` → ("LstByNumber", {"metadata": "true", "maxrecs": "5"})."""
    name, *params = segment.split(";")
    matrix: dict[str, str] = {}
    for param in params:
        key, _, value = param.partition("=")
        if key:
            matrix[key.strip().lower()] = value
    return name, matrix


def _query(request: Request) -> tuple[dict[str, str], dict[str, str]]:
    """Split the query string into (options, inputs); `_rid` and other `_…` parameters are ignored."""
    options: dict[str, str] = {}
    inputs: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        if key.startswith("_"):
            continue
        if key.lower() in _OPTIONS and key != key.upper():
            options[key.lower()] = value
        else:
            inputs[key] = value
    return options, inputs


def _user(request: Request) -> str:
    user = getattr(request.state, "user", None)
    return str(user) if user else "anonymous"


class _BulkTransaction(BaseModel):
    transaction: str
    record: dict[str, Any] = {}
    selectedColumns: list[str] | None = None  # noqa: N815 - Infor's JSON name


class _BulkRequest(BaseModel):
    program: str
    cono: int | None = None
    divi: str | None = None
    excludeEmptyValues: bool | None = None  # noqa: N815
    rightTrim: bool | None = None  # noqa: N815
    maxReturnedRecords: int | None = None  # noqa: N815
    transactions: list[_BulkTransaction]


def _record(record: dict[str, Any]) -> dict[str, str]:
    return {k: ("true" if v is True else "false" if v is False else str(v)) for k, v in record.items() if v is not None}


def m3_router(sim: M3Simulator) -> APIRouter:
    router = APIRouter()

    @router.get("/execute/{program}/{transaction}")
    async def execute_v1(program: str, transaction: str, request: Request) -> JSONResponse:
        name, matrix = _split(transaction)
        query_options, inputs = _query(request)
        opts = _Options({**query_options, **matrix})
        result = sim.execute(
            _user(request),
            program,
            name,
            inputs,
            cono=opts.cono,
            divi=opts.divi,
            maxrecs=opts.maxrecs,
            returncols=opts.returncols,
        )
        status, body = wire.v1_body(result, metadata=opts.metadata, excludempty=opts.excludempty)
        return JSONResponse(body, status_code=status)

    @router.get("/v2/execute/{program}/{transaction}")
    async def execute_v2(program: str, transaction: str, request: Request) -> JSONResponse:
        name, matrix = _split(transaction)  # m3-odin sends matrix params on v2 too
        query_options, inputs = _query(request)
        opts = _Options({**matrix, **query_options})
        result = sim.execute(
            _user(request),
            program,
            name,
            inputs,
            cono=opts.cono,
            divi=opts.divi,
            maxrecs=opts.maxrecs,
            returncols=opts.returncols,
            position=max(_int(request.headers.get("positionkey"), 0), 0),
        )
        status, body = wire.v2_single(
            result,
            excludempty=opts.excludempty,
            righttrim=opts.righttrim,
            parameters=inputs if opts.extendedresult else None,
        )
        return JSONResponse(body, status_code=status)

    @router.post("/v2/execute")
    @router.post("/v2/execute/")
    async def execute_bulk(request: Request) -> JSONResponse:
        query_options, _ = _query(request)
        try:
            bulk = _BulkRequest.model_validate(await request.json())
        except (ValueError, ValidationError) as exc:
            message = f"Invalid bulk request: {exc}".splitlines()[0]
            return JSONResponse({"errorMessage": message, "errorType": "BadRequest"}, status_code=400)
        opts = _Options(query_options)
        cono = bulk.cono if bulk.cono is not None else opts.cono
        divi = bulk.divi if bulk.divi is not None else opts.divi
        maxrecs = bulk.maxReturnedRecords if bulk.maxReturnedRecords is not None else opts.maxrecs
        excludempty = bulk.excludeEmptyValues if bulk.excludeEmptyValues is not None else opts.excludempty
        righttrim = bulk.rightTrim if bulk.rightTrim is not None else opts.righttrim
        user = _user(request)
        entries = []
        for item in bulk.transactions:
            inputs = _record(item.record)
            result = sim.execute(
                user,
                bulk.program,
                item.transaction,
                inputs,
                cono=cono,
                divi=divi,
                maxrecs=maxrecs,
                returncols=item.selectedColumns or opts.returncols,
            )
            parameters = inputs if opts.extendedresult else None
            entries.append(wire.v2_entry(result, excludempty=excludempty, righttrim=righttrim, parameters=parameters))
        return JSONResponse(wire.v2_envelope(entries))

    return router
