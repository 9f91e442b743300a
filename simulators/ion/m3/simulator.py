"""The M3 simulator's entry point: configuration, Connect API Authorization, input validation and dispatch.

`M3Simulator.execute` is pure business logic (no HTTP): it answers an `MiResult` for one transaction. The order of
checks is: program/transaction exists (else TransactionNotFound) → Connect API Authorization (SES005; only when
`authorization_enabled`) → company (XAU0008 on CONO) → input fields against the metadata → the transaction itself.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from itertools import islice
from typing import Literal

from pydantic import BaseModel, Field

from simulators.ion.m3 import core
from simulators.ion.m3.core import FieldDef, MiError, MiResult, Nok, TransactionDef, fmt, parse_date
from simulators.ion.m3.data import Store
from simulators.ion.m3.metadata import PROGRAMS
from simulators.ion.m3.programs import HANDLERS

_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)$")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChangeEvent:
    """A data change in the simulated M3 (what M3's Event Hub would see), for listeners such as the BOD emitter.

    kind/key: "customer" CUNO, "item" ITNO, "balance" ITNO (data has WHLO), "price" ITNO, "order" ORNO.
    data: a snapshot of the record after the change (M3 field names).
    """

    kind: Literal["customer", "item", "balance", "price", "order"]
    action: Literal["add", "change", "delete"]
    key: str
    data: dict[str, object] = field(default_factory=dict)


class Grant(BaseModel):
    """Connect API Authorization (SES005) entry: a user may run program/transaction; "*" is a wildcard."""

    user: str
    program: str = "*"
    transaction: str = "*"

    def covers(self, user: str, program: str, transaction: str) -> bool:
        return self.user in (user, "*") and self.program in (program, "*") and self.transaction in (transaction, "*")


class M3Config(BaseModel):
    seed: int = 42
    customers: int = 200
    items: int = 1000
    warehouses: list[str] = Field(default_factory=lambda: ["100", "200", "300"])
    company: int = 100
    division: str = "AAA"
    # Connect API Authorization (SES005): M3 allows everything until restricted; when on, deny unless granted.
    authorization_enabled: bool = False
    grants: list[Grant] = Field(default_factory=list)
    # Transactions an administrator restricted in SES005 while everything else stays allowed.
    denials: list[Grant] = Field(default_factory=list)
    # The real SES005 denial text is not documented anywhere (research §3), so both are configurable.
    denied_code: str = "SES0005"
    denied_message: str = "Not authorized to run transaction {program}/{transaction}"
    # Reference date for seeded dates (LMDT etc.); None = the day the simulator is built.
    today: date | None = None


class _Format(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


class M3Simulator:
    """In-memory M3 behind the MI REST API. Not thread-safe: call it from one event loop."""

    def __init__(self, config: M3Config) -> None:
        self.config = config
        self.stats: dict[str, int] = {}
        self.store = Store(
            seed=config.seed,
            customers=config.customers,
            items=config.items,
            warehouses=config.warehouses,
            company=config.company,
            division=config.division,
            today=config.today or date.today(),
        )
        # Called after each successful data change (MI Add/ChgBasicData/Confirm, admin edits). Additive hook.
        self.on_change: list[Callable[[ChangeEvent], None]] = []

    def notify(self, event: ChangeEvent) -> None:
        """Tell every listener about a change; a failing listener is logged and never fails the transaction."""
        for listener in list(self.on_change):
            try:
                listener(event)
            except Exception:
                log.exception("M3 simulator change listener failed for %s %s", event.kind, event.key)

    # --- seeded data helpers for tests ---------------------------------------------------------------------------
    def inactive_items(self) -> list[str]:
        """Items with STAT "90" (every item number divisible by 33): Confirm rejects orders for them."""
        return self.store.inactive_items()

    def preliminary_items(self) -> list[str]:
        """Items with STAT "10" (n % 97 == 50, unless inactive)."""
        return self.store.preliminary_items()

    def active_items(self) -> list[str]:
        return self.store.active_items()

    # --- authorization -------------------------------------------------------------------------------------------
    def grant(self, user: str, program: str = "*", transaction: str = "*") -> None:
        self.config.grants.append(Grant(user=user, program=program, transaction=transaction))

    def deny(self, user: str, program: str, transaction: str) -> None:
        self.config.denials.append(Grant(user=user, program=program, transaction=transaction))

    def is_authorized(self, user: str, program: str, transaction: str) -> bool:
        if any(d.covers(user, program, transaction) for d in self.config.denials):
            return False
        if not self.config.authorization_enabled:
            return True
        return any(g.covers(user, program, transaction) for g in self.config.grants)

    # --- execution -----------------------------------------------------------------------------------------------
    def execute(
        self,
        user: str,
        program: str,
        transaction: str,
        inputs: dict[str, str],
        *,
        cono: int | None = None,
        divi: str | None = None,
        maxrecs: int = 100,
        returncols: list[str] | None = None,
        position: int = 0,
    ) -> MiResult:
        """Run one transaction. `position` skips that many rows of a list (the v2 `positionkey` paging)."""
        key = f"{program}/{transaction}"
        self.stats[key] = self.stats.get(key, 0) + 1
        result = MiResult(program=program, transaction=transaction)
        prog = PROGRAMS.get(program)
        tdef = prog.transactions.get(transaction) if prog else None
        handler = HANDLERS.get((program, transaction))
        if prog is None:
            result.error = MiError(f"Program {program} does not exist", type=core.NOT_FOUND)
            return result
        if tdef is None or handler is None:
            result.error = MiError(f"Transaction {transaction} does not exist in {program}", type=core.NOT_FOUND)
            return result
        if not self.is_authorized(user, program, transaction):
            values = _Format(program=program, transaction=transaction, user=user)
            result.error = MiError(self.config.denied_message.format_map(values), code=self.config.denied_code)
            return result
        try:
            self._check_company(cono, inputs.get("CONO", "").strip())
            clean = _validate(tdef, inputs)
            outputs = _output_fields(tdef, returncols)
            rows = iter(handler(self.store, clean))
            if tdef.is_list:
                rows = islice(rows, max(position, 0), None)
                if maxrecs > 0:
                    rows = islice(rows, maxrecs + 1)
            result.records = [{f.name: fmt(row.get(f.name)) for f in outputs} for row in rows]
            if tdef.is_list and 0 < maxrecs < len(result.records):
                del result.records[maxrecs:]
                result.next_position = str(max(position, 0) + maxrecs)
            result.metadata = outputs
            if self.on_change:
                self._changed(program, transaction, clean, result)
        except Nok as nok:
            result.error = nok.error
            result.records = []
        return result

    def _changed(self, program: str, transaction: str, inputs: dict[str, str], result: MiResult) -> None:
        """Hook: report data changes made through the API to the `on_change` listeners."""
        if program == "CRS610MI" and transaction in ("Add", "ChgBasicData"):
            cuno = next((r.get("CUNO", "") for r in result.records if r.get("CUNO")), "") or inputs.get("CUNO", "")
            record = self.store.customers.get(cuno)
            if record is not None:
                action: Literal["add", "change"] = "add" if transaction == "Add" else "change"
                self.notify(ChangeEvent("customer", action, cuno, dict(record)))
        elif program == "OIS100MI" and transaction == "Confirm":
            batch = self.store.batch_orders.get(inputs.get("ORNO", ""))
            order = self.store.orders.get(batch.final_orno or "") if batch is not None else None
            if order is None:
                return
            for line in order.lines:  # Confirm allocated stock
                itno, whlo = str(line["ITNO"]), str(line["WHLO"])
                bal = self.store.balance(itno, whlo)
                data: dict[str, object] = {"ITNO": itno, "WHLO": whlo, "STQT": bal.stqt, "ALQT": bal.alqt}
                self.notify(ChangeEvent("balance", "change", itno, {**data, "AV01": bal.available}))
            self.notify(ChangeEvent("order", "add", order.orno, dict(order.head)))

    def _check_company(self, cono: int | None, cono_field: str) -> None:
        for value in (cono, cono_field):
            if value in (None, ""):
                continue
            try:
                number = int(str(value))
            except ValueError:
                raise Nok(f"Not authorized for company {value}", core.CODE_COMPANY, "CONO") from None
            if number != self.config.company:
                raise Nok(f"Not authorized for company {number}", core.CODE_COMPANY, "CONO")


def _output_fields(tdef: TransactionDef, returncols: list[str] | None) -> list[FieldDef]:
    wanted = [c.strip() for c in returncols or [] if c.strip()]
    if not wanted:
        return list(tdef.outputs)
    by_name = {f.name: f for f in tdef.outputs}
    return [by_name[c] for c in wanted if c in by_name]


def _validate(tdef: TransactionDef, inputs: dict[str, str]) -> dict[str, str]:
    """Check inputs against the transaction's metadata; blank values count as not given (as in M3)."""
    clean: dict[str, str] = {}
    for name, raw in inputs.items():
        fdef = tdef.input(name)
        if fdef is None:
            text = f"Field {name} is not an input field of {tdef.program}/{tdef.name}"
            raise Nok(text, core.CODE_UNKNOWN_FIELD, name)
        value = raw.rstrip()
        if not value:
            continue
        if fdef.type == "N":
            if not _NUMBER.match(value.strip()):
                raise Nok(f"Field {name} must be numeric, {value!r} is invalid", core.CODE_NOT_NUMERIC, name)
            value = value.strip()
            if sum(ch.isdigit() for ch in value) > fdef.length:
                raise Nok(f"Field {name} exceeds {fdef.length} digits", core.CODE_TOO_LONG, name)
            value = fmt(Decimal(value))
        elif fdef.type == "D":
            if parse_date(value.strip()) is None:
                raise Nok(f"Field {name} must be a date yyyyMMdd, {value!r} is invalid", core.CODE_BAD_DATE, name)
            value = value.strip()
        elif len(value) > fdef.length:
            raise Nok(f"Field {name} exceeds {fdef.length} characters", core.CODE_TOO_LONG, name)
        clean[name] = value
    for fdef in tdef.inputs:
        if fdef.mandatory and fdef.name not in clean:
            raise Nok(f"Field {fdef.name} must be entered", core.CODE_MANDATORY, fdef.name)
    return clean
