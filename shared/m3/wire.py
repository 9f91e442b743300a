"""The M3 MI REST wire format (see ../shared/reference/m3-mi-rest.md): URLs and the v1/v2 response shapes.

v1 answers business failures with HTTP 200 and a `ServerReturnedNOK` body (sometimes wrapped in
`ErrorMessage`, sometimes after some rows); v2 answers them with HTTP 400 and `errorMessage/errorCode/
errorField/errorType`. Both are read here and turned into the error taxonomy.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from shared.m3.errors import (
    M3AuthorizationDeniedError,
    M3BusinessError,
    M3Error,
    M3NotFoundError,
    M3ThrottledError,
    M3TransientError,
    M3UnauthorizedError,
)
from shared.m3.metadata import FieldSpec

# The exact text M3 uses for a Connect API Authorization denial is not published; these are the forms seen.
_DENIED_TEXT = re.compile(r"not\s+authori[sz]ed|no\s+authori[sz]ation|authori[sz]ation\s+(denied|required)", re.I)
DENIED_CODES = frozenset({"XAU0008", "SES0005", "SES0001"})
# Whether M3 answers an unknown transaction with HTTP 404 or with a 200 body of this type is not documented.
NOT_FOUND_TYPES = frozenset({"TransactionNotFound", "ProgramNotFound"})


def v1_path(
    program: str,
    transaction: str,
    *,
    maxrecs: int,
    returncols: Sequence[str] | None,
    company: int | None,
    division: str | None,
    metadata: bool = True,
) -> str:
    """`/m3api-rest/execute/PROGRAM/TRANSACTION;metadata=true;maxrecs=…;…` (inputs go in the query)."""
    options = [f"metadata={'true' if metadata else 'false'}", f"maxrecs={maxrecs}", "excludempty=false"]
    if company is not None:
        options.append(f"cono={company}")
    if division is not None:
        options.append(f"divi={quote(division)}")
    if returncols:
        options.append("returncols=" + ",".join(returncols))
    return f"/m3api-rest/execute/{quote(program)}/{quote(transaction)};" + ";".join(options)


def v2_bulk_path() -> str:
    return "/m3api-rest/v2/execute"


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After is seconds or an HTTP date (RFC 9110); the Gateway does not promise to send it."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def nok_error(
    message: str, code: str, field: str, program: str, transaction: str
) -> M3BusinessError | M3AuthorizationDeniedError:
    message = " ".join(message.split())
    field = field.strip()
    # Infor's own client strips code and field that M3 repeats at the start of Message.
    for prefix in (code, field):
        if prefix and message.startswith(prefix):
            message = message[len(prefix) :].strip()
    denied = code in DENIED_CODES or (not field and bool(_DENIED_TEXT.search(message)))
    if denied or (field == "CONO" and _DENIED_TEXT.search(message)):
        return M3AuthorizationDeniedError(message, code=code, program=program, transaction=transaction)
    return M3BusinessError(message, code=code, field=field, program=program, transaction=transaction)


def parse_v1(body: Any, program: str, transaction: str) -> tuple[list[dict[str, str]], dict[str, FieldSpec]]:
    """Rows (field → raw string) and the output metadata of a v1 answer; raises on NOK. An answer that is not shaped
    like an MI answer (a JSON object of the wrong shape) raises M3TransientError, as one that is not an object does."""
    if not isinstance(body, dict):
        raise M3TransientError("answer is not a JSON object", program=program, transaction=transaction)
    try:
        return _parse_v1(body, program, transaction)
    except (TypeError, AttributeError, ValueError, OverflowError) as exc:
        raise M3TransientError(
            f"answer is not shaped like an MI answer ({type(exc).__name__})", program=program, transaction=transaction
        ) from None


def _parse_v1(
    body: dict[str, Any], program: str, transaction: str
) -> tuple[list[dict[str, str]], dict[str, FieldSpec]]:
    error = body.get("ErrorMessage") if isinstance(body.get("ErrorMessage"), dict) else body
    if isinstance(error, dict) and (error.get("@type") or "Message" in error) and "MIRecord" not in error:
        if error.get("@type") in NOT_FOUND_TYPES:
            raise M3NotFoundError(str(error.get("Message") or error["@type"]), program=program, transaction=transaction)
        raise nok_error(
            str(error.get("Message") or error.get("@type") or "NOK"),
            str(error.get("@code") or error.get("@type") or ""),
            str(error.get("@field") or ""),
            program,
            transaction,
        )
    specs: dict[str, FieldSpec] = {}
    fields = (body.get("Metadata") or {}).get("Field") or []
    for spec in [fields] if isinstance(fields, dict) else fields:  # one field → an object, not a list
        if isinstance(spec, dict) and spec.get("@name"):
            kind = str(spec.get("@type") or "A")
            specs[spec["@name"]] = FieldSpec(
                name=spec["@name"],
                type=kind if kind in ("A", "N", "D") else "A",  # type: ignore[arg-type]
                length=int(spec.get("@length") or 0),
                description=str(spec.get("@description") or ""),
            )
    rows: list[dict[str, str]] = []
    for record in body.get("MIRecord") or []:
        pairs = record.get("NameValue") or [] if isinstance(record, dict) else []
        rows.append({str(p.get("Name")): str(p.get("Value") or "") for p in pairs if isinstance(p, dict)})
    return rows, specs


def v2_result_error(result: Mapping[str, Any], program: str, transaction: str) -> M3Error | None:
    if not result.get("errorMessage") and not result.get("errorCode") and not result.get("errorType"):
        return None
    error_type = str(result.get("errorType") or "")
    message = str(result.get("errorMessage") or error_type or "failed")
    if error_type in NOT_FOUND_TYPES:
        return M3NotFoundError(message, program=program, transaction=transaction)
    return nok_error(
        message, str(result.get("errorCode") or error_type), str(result.get("errorField") or ""), program, transaction
    )


def http_error(status: int, headers: Mapping[str, str], text: str, program: str, transaction: str) -> M3Error:
    """Transport-level answers (not NOK bodies) in the taxonomy."""
    where = {"program": program, "transaction": transaction}
    if status == 401:
        return M3UnauthorizedError("the Gateway refused the token (401)", **where)
    if status == 403:
        return M3AuthorizationDeniedError(f"the Gateway refused the call (403): {text[:200]}", **where)
    if status == 404:
        return M3NotFoundError(f"no such program or transaction on this tenant (404): {text[:200]}", **where)
    if status == 429:
        return M3ThrottledError(
            "the Gateway throttled the call (429)", retry_after_s=parse_retry_after(headers.get("retry-after")), **where
        )
    if status >= 500 or status == 408:
        return M3TransientError(f"HTTP {status}: {text[:200]}", status=status, **where)
    return M3Error(f"unexpected HTTP {status}: {text[:200]}", **where)
