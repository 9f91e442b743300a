"""JSON shapes of the MI REST API (shared/reference/m3-mi-rest.md, m3-research.md §1.2-1.4).

v1: `{"Program","Transaction","Metadata":{"Field":[…]},"MIRecord":[{"RowIndex":"0","NameValue":[…]}]}`; A values
right-padded to the field length (N and D values are not padded); a single metadata field is an object, not a list;
a NOK is HTTP 200 `{"@type":"ServerReturnedNOK","@code","@field","Message"}` (`@field`/`@code` only when known,
`Message` right-padded); an unknown program/transaction is HTTP 404 `{"@type":"TransactionNotFound","Message"}`.
v2: `{"results":[{"transaction","records":[{…}]}],"wasTerminated",…,"nrOfSuccessfullTransactions",…}`; a failed
transaction carries errorMessage/errorCode/errorField/errorType in its entry. A single-transaction GET that fails
answers HTTP 400 (404 when unknown) with the error both in `results[0]` and at the top level.
"""

from __future__ import annotations

from typing import Any

from simulators.ion.m3.core import FieldDef, MiResult

MESSAGE_WIDTH = 80  # NOK messages come back blank-padded; clients trim


def _value(fdef: FieldDef, value: str, pad: bool) -> str:
    return value.ljust(fdef.length) if pad and fdef.type == "A" else value


def v1_body(result: MiResult, *, metadata: bool, excludempty: bool) -> tuple[int, dict[str, Any]]:
    error = result.error
    if error is not None:
        if result.not_found:
            return 404, {"@type": error.type, "Message": error.message}
        body: dict[str, Any] = {"@type": error.type}
        if error.code:
            body["@code"] = error.code
        if error.field:
            body["@field"] = error.field
        body["Message"] = error.message.ljust(MESSAGE_WIDTH)
        return 200, body
    body = {"Program": result.program, "Transaction": result.transaction}
    if metadata:
        fields = [
            {"@name": f.name, "@type": f.type, "@length": str(f.length), "@description": f.description}
            for f in result.metadata
        ]
        body["Metadata"] = {"Field": fields[0] if len(fields) == 1 else fields}
    records = []
    for index, record in enumerate(result.records):
        pairs = [
            {"Name": f.name, "Value": _value(f, record.get(f.name, ""), True)}
            for f in result.metadata
            if not (excludempty and not record.get(f.name, "").strip())
        ]
        records.append({"RowIndex": str(index), "NameValue": pairs})
    body["MIRecord"] = records
    return 200, body


def v2_entry(
    result: MiResult, *, excludempty: bool, righttrim: bool, parameters: dict[str, str] | None = None
) -> dict[str, Any]:
    """One `results` entry; `parameters` (the inputs) is echoed when the caller asked for `extendedresult`."""
    error = result.error
    if error is not None:
        entry: dict[str, Any] = {"transaction": result.transaction, "errorMessage": error.message}
        if error.code:
            entry["errorCode"] = error.code
        if error.field:
            entry["errorField"] = error.field
        entry["errorType"] = error.type
        entry["notProcessed"] = False
        if parameters is not None:
            entry["parameters"] = parameters
        return entry
    records = [
        {
            f.name: _value(f, record.get(f.name, ""), not righttrim)
            for f in result.metadata
            if not (excludempty and not record.get(f.name, "").strip())
        }
        for record in result.records
    ]
    entry = {"transaction": result.transaction, "records": records}
    if parameters is not None:
        entry["parameters"] = parameters
    if result.next_position is not None:
        entry["positionKey"] = result.next_position
    return entry


def v2_envelope(entries: list[dict[str, Any]]) -> dict[str, Any]:
    failed = sum(1 for e in entries if "errorMessage" in e)
    return {
        "results": entries,
        "wasTerminated": False,
        "nrOfSuccessfullTransactions": len(entries) - failed,
        "nrOfNotProcessedTransactions": 0,
        "nrOfFailedTransactions": failed,
    }


def v2_single(
    result: MiResult, *, excludempty: bool, righttrim: bool, parameters: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    entry = v2_entry(result, excludempty=excludempty, righttrim=righttrim, parameters=parameters)
    body = v2_envelope([entry])
    if result.error is None:
        return 200, body
    for key in ("errorMessage", "errorCode", "errorField", "errorType"):
        if key in entry:
            body[key] = entry[key]
    return (404 if result.not_found else 400), body
