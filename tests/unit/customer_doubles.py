"""Both customer systems in memory for the customer tests: CRS610MI (`FakeM3`) and the QuoteWerks contact manager
(`Contacts`), each keeping its change stamp the way the real one does."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from shared.m3 import M3BusinessError
from shared.quotewerks import QuoteWerksConflictError

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
RECORD: dict[str, object] = {
    "CUNO": "C000003", "CUNM": "Nordic Pump AB", "CUA1": "12 Harbour Road", "CUA2": "", "CUA3": "", "CUA4": "",
    "PONO": "41101", "TOWN": "Goteborg", "CSCD": "SE", "PHNO": "+46 555", "MAIL": "orders@nordic.example",
    "LMDT": date(2026, 11, 1),
}  # fmt: skip


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class FakeM3:
    """CRS610MI in memory: GetBasicData, ChgBasicData (LMDT the day of the change), SearchCustomer, Add."""

    def __init__(self) -> None:
        self.customers: dict[str, dict[str, object]] = {"C000003": dict(RECORD)}
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.fail: Exception | None = None

    async def execute(
        self, program: str, transaction: str, fields: Mapping[str, object] | None = None, **_: Any
    ) -> list[dict[str, object]]:
        inputs = {k: str(v) for k, v in (fields or {}).items()}
        self.calls.append((transaction, inputs))
        if self.fail is not None and transaction in ("ChgBasicData", "Add"):
            raise self.fail
        if transaction in ("GetBasicData", "ChgBasicData") and inputs["CUNO"] not in self.customers:
            raise M3BusinessError(f"Customer number {inputs['CUNO']} does not exist", code="WCU0203", field="CUNO")
        if transaction == "GetBasicData":
            return [dict(self.customers[inputs["CUNO"]])]
        if transaction == "ChgBasicData":
            self.customers[inputs["CUNO"]].update({**inputs, "LMDT": NOW.date()})
            return []
        if transaction == "SearchCustomer":
            query = inputs["SQRY"].casefold()
            return [c for c in self.customers.values() if query in f"{c['CUNM']} {c['MAIL']}".casefold()]
        if transaction == "Add":
            number = f"C{len(self.customers) + 1:06d}"
            self.customers[number] = {**{k: v for k, v in inputs.items() if k != "CUTM"}, "CUNO": number}
            return [{"CUNO": number}]
        raise AssertionError(transaction)

    async def execute_one(
        self, program: str, transaction: str, fields: Mapping[str, object] | None = None, **_: Any
    ) -> dict[str, object] | None:
        records = await self.execute(program, transaction, fields)
        return records[0] if records else None

    async def metadata(self, *_: Any, **__: Any) -> None:
        return None

    def writes(self) -> list[tuple[str, dict[str, str]]]:
        return [call for call in self.calls if call[0] in ("ChgBasicData", "Add")]


class Contacts:
    """The QuoteWerks contact manager, in memory; LastModified moves on every write like the real one."""

    def __init__(self, *records: dict[str, str]) -> None:
        self.records = {r["CMAccountNo"]: dict(r) for r in records}
        self.puts: list[tuple[str, dict[str, str]]] = []
        self.edit_before_next_put: dict[str, str] = {}  # a QuoteWerks user saving this just before our write
        self.clock = NOW

    def edit(self, account: str, at: datetime, **columns: str) -> None:
        """A QuoteWerks user's edit at `at`."""
        self.records[account] = {**self.records[account], **columns, "LastModified": stamp(at)}

    async def find_customer(self, account: str) -> dict[str, Any] | None:
        found = self.records.get(account)
        return dict(found) if found else None

    async def customers(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.records.values()]

    async def put_customer(
        self, account: str, fields: Mapping[str, str], *, read_as: str | None = None, new: bool = False
    ) -> bool:
        if self.edit_before_next_put:
            edit, self.edit_before_next_put = self.edit_before_next_put, {}
            self.clock += timedelta(seconds=1)
            self.records[account] = {**self.records[account], **edit, "LastModified": stamp(self.clock)}
        current = self.records.get(account)
        if (new and current is not None) or (read_as is not None and (current or {}).get("LastModified") != read_as):
            raise QuoteWerksConflictError(f"customer {account} changed since it was read")
        created = account not in self.records
        self.puts.append((account, dict(fields)))
        self.clock += timedelta(seconds=1)
        self.records[account] = {**fields, "CMAccountNo": account, "LastModified": stamp(self.clock)}
        return created


def contact(account: str, **columns: str) -> dict[str, str]:
    record = {
        "CMAccountNo": account, "Company": "Nordic Pump AB", "Contact": "Eva Berg", "Address1": "12 Harbour Road",
        "Address2": "", "Address3": "", "City": "Goteborg", "State": "", "PostalCode": "41101", "Country": "Sweden",
        "PhoneNumber": "+46 555", "Email": "orders@nordic.example", "LastModified": stamp(NOW - timedelta(days=2)),
    }  # fmt: skip
    return {**record, **columns}
