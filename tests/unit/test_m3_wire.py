"""Reading and writing the M3 MI REST wire format, and classifying every kind of failure."""

from datetime import date
from decimal import Decimal

import httpx
import pytest

from shared.m3 import M3Client, wire
from shared.m3.errors import (
    M3AuthorizationDeniedError,
    M3BusinessError,
    M3InputError,
    M3NotFoundError,
    M3ThrottledError,
    M3TransientError,
    M3UnauthorizedError,
)
from shared.m3.lease import Priority
from shared.m3.metadata import FieldSpec, TransactionMetadata
from tests.unit.m3_faults import FixedLeases

V1_LIST = {
    "Program": "CRS610MI",
    "Transaction": "LstByNumber",
    "Metadata": {"Field": [
        {"@name": "CUNO", "@type": "A", "@length": "10", "@description": "Customer"},
        {"@name": "CRLM", "@type": "N", "@length": 15, "@description": "Credit limit"},
        {"@name": "LMDT", "@type": "D", "@length": "10", "@description": "Changed"},
    ]},
    "MIRecord": [
        {"RowIndex": "0", "NameValue": [{"Name": "CUNO", "Value": "C0001     "}, {"Name": "CRLM", "Value": "1500.50"},
                                        {"Name": "LMDT", "Value": "20261120"}]},
        {"RowIndex": 1, "NameValue": [{"Name": "CUNO", "Value": "C0002     "}, {"Name": "CRLM", "Value": ""},
                                      {"Name": "LMDT", "Value": "0"}]},
    ],
}  # fmt: skip


def test_v1_rows_and_metadata() -> None:
    rows, specs = wire.parse_v1(V1_LIST, "CRS610MI", "LstByNumber")
    assert rows[0]["CUNO"] == "C0001     "
    assert specs["CRLM"] == FieldSpec("CRLM", "N", 15, description="Credit limit")
    meta = TransactionMetadata("CRS610MI", "LstByNumber", outputs=specs)
    assert meta.decode_record(rows[0]) == {"CUNO": "C0001", "CRLM": Decimal("1500.50"), "LMDT": date(2026, 11, 20)}
    assert meta.decode_record(rows[1]) == {"CUNO": "C0002", "CRLM": None, "LMDT": None}


def test_v1_single_field_metadata_is_an_object() -> None:
    body = {"Metadata": {"Field": {"@name": "ORNO", "@type": "A", "@length": "10"}},
            "MIRecord": [{"NameValue": [{"Name": "ORNO", "Value": "1000000001"}]}]}  # fmt: skip
    rows, specs = wire.parse_v1(body, "OIS100MI", "AddBatchHead")
    assert list(specs) == ["ORNO"]
    assert rows == [{"ORNO": "1000000001"}]


def test_v1_answer_without_records_is_success() -> None:
    assert wire.parse_v1({"Program": "CRS610MI", "Transaction": "ChgBasicData"}, "CRS610MI", "ChgBasicData") == ([], {})


@pytest.mark.parametrize(
    "body",
    [
        {"@type": "ServerReturnedNOK", "@code": "WCU0203", "@field": "CUNO",
         "Message": "Customer number C9 does not exist"},
        {"ErrorMessage": {"@type": "ServerReturnedNOK", "@code": "WCU0203", "@field": "CUNO      ",
                          "Message": "WCU0203 CUNO Customer number C9 does not exist      "}},
        {**V1_LIST, "ErrorMessage": {"@type": "ServerReturnedNOK", "@code": "WCU0203", "@field": "CUNO",
                                     "Message": "Customer number C9 does not exist"}},
    ],
    ids=["plain", "wrapped-padded", "partial-after-rows"],
)  # fmt: skip
def test_v1_nok_shapes_become_business_errors(body: dict) -> None:
    with pytest.raises(M3BusinessError) as caught:
        wire.parse_v1(body, "CRS610MI", "GetBasicData")
    error = caught.value
    assert (error.code, error.field, error.m3_message) == ("WCU0203", "CUNO", "Customer number C9 does not exist")
    assert str(error).startswith("CRS610MI/GetBasicData:")


def test_authorization_denials_are_not_payload_errors() -> None:
    denied = {"@type": "ServerReturnedNOK", "@code": "SES0005",
              "Message": "Not authorized to run transaction OIS100MI/Confirm"}  # fmt: skip
    with pytest.raises(M3AuthorizationDeniedError) as caught:
        wire.parse_v1(denied, "OIS100MI", "Confirm")
    assert caught.value.program == "OIS100MI"
    assert caught.value.transaction == "Confirm"
    with pytest.raises(M3AuthorizationDeniedError):
        wire.parse_v1({"@type": "ServerReturnedNOK", "@code": "XAU0008", "@field": "CONO",
                       "Message": "Not authorized for company 200"}, "CRS610MI", "Add")  # fmt: skip
    with pytest.raises(M3AuthorizationDeniedError):  # an unknown code, but the text and no field say it
        wire.parse_v1({"@type": "ServerReturnedNOK", "Message": "User M3SVC is not authorized"}, "X", "Y")


def test_v1_unknown_transaction_body_is_not_found() -> None:
    with pytest.raises(M3NotFoundError):
        wire.parse_v1({"@type": "TransactionNotFound", "Message": "Transaction Upd does not exist"}, "CRS610MI", "Upd")


def test_v2_errors() -> None:
    result = {"transaction": "AddBatchLine", "errorMessage": "Item ABC does not exist", "errorCode": "WIT0103",
              "errorField": "ITNO", "errorType": "ServerReturnedNOK"}  # fmt: skip
    error = wire.v2_result_error(result, "OIS100MI", "AddBatchLine")
    assert isinstance(error, M3BusinessError)
    assert (error.code, error.field) == ("WIT0103", "ITNO")
    assert wire.v2_result_error({"transaction": "X", "records": []}, "P", "X") is None
    assert isinstance(wire.v2_result_error({"errorType": "TransactionNotFound"}, "P", "T"), M3NotFoundError)


@pytest.mark.parametrize(
    ("status", "kind"),
    [(401, M3UnauthorizedError), (403, M3AuthorizationDeniedError), (404, M3NotFoundError), (429, M3ThrottledError),
     (500, M3TransientError), (502, M3TransientError), (503, M3TransientError), (504, M3TransientError)],
)  # fmt: skip
def test_http_statuses_map_to_the_taxonomy(status: int, kind: type) -> None:
    assert isinstance(wire.http_error(status, {}, "", "P", "T"), kind)


def test_retry_after_seconds_date_or_absent() -> None:
    assert wire.parse_retry_after("2.5") == 2.5
    assert wire.parse_retry_after(None) is None
    assert wire.parse_retry_after("garbage") is None
    assert wire.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    throttled = wire.http_error(429, {"retry-after": "3"}, "", "P", "T")
    assert isinstance(throttled, M3ThrottledError)
    assert throttled.retry_after_s == 3.0


def test_v1_path_uses_matrix_options() -> None:
    path = wire.v1_path("CRS610MI", "LstByNumber", maxrecs=50, returncols=["CUNO", "CUNM"], company=100, division="AAA")
    assert path == (
        "/m3api-rest/execute/CRS610MI/LstByNumber;metadata=true;maxrecs=50;excludempty=false;cono=100;divi=AAA;"
        "returncols=CUNO,CUNM"
    )


ADD = TransactionMetadata(
    "CRS610MI",
    "Add",
    inputs={
        "CUNM": FieldSpec("CUNM", "A", 36, mandatory=True),
        "CRLM": FieldSpec("CRLM", "N", 5),
        "RGDT": FieldSpec("RGDT", "D", 8),
    },
)


def test_inputs_are_encoded_for_the_wire() -> None:
    assert ADD.encode_inputs({"CUNM": "Acme", "CRLM": Decimal("150.5"), "RGDT": date(2026, 1, 2)}) == {
        "CUNM": "Acme", "CRLM": "150.5", "RGDT": "20260102"
    }  # fmt: skip
    assert ADD.encode_inputs({"CUNM": "Acme", "CRLM": 12}) == {"CUNM": "Acme", "CRLM": "12"}


@pytest.mark.parametrize(
    ("values", "field", "text"),
    [
        ({"CUNM": "x" * 37}, "CUNM", "37 characters exceed the 36"),
        ({"CUNM": "a", "CRLM": "12a"}, "CRLM", "not a number"),
        ({"CUNM": "a", "CRLM": "123456"}, "CRLM", "6 digits exceed the 5"),
        ({"CUNM": "a", "RGDT": "2026-01-02"}, "RGDT", "not a date"),
        ({"CUNM": "a", "NOPE": "1"}, "NOPE", "not an input"),
        ({"CRLM": "1"}, "CUNM", "mandatory"),
    ],
)
def test_inputs_m3_would_refuse_are_refused_before_calling(values: dict, field: str, text: str) -> None:
    with pytest.raises(M3InputError, match=text) as caught:
        ADD.encode_inputs(values)
    assert caught.value.field == field


async def test_every_gateway_request_names_the_calling_service() -> None:
    """As Infor's own client does (`x-infor-ionapi-source`), so the Gateway can log and throttle per caller."""
    seen: list[httpx.Headers] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return httpx.Response(200, json=V1_LIST)

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        client = M3Client(FixedLeases(), http, company=100, validate=False, source="order-writer")  # type: ignore[arg-type]
        rows = await client.execute("CRS610MI", "LstByNumber", {}, priority=Priority.TRANSACTIONAL)
    assert len(rows) == 2
    assert [headers.get("x-infor-ionapi-source") for headers in seen] == ["m3bridge-order-writer"]
