"""Business logic of the simulated MI transactions. Each handler takes the store and validated inputs (blank inputs
removed, values right-trimmed) and returns the output records (values are converted to wire strings later).

OIS100MI batch order entry follows the research (§2, Infor help "Correct and Complete Rejected Temporary Customer
Order"): AddBatchHead/AddBatchLine only store the temporary order (T000000001…) after field-format checks;
Confirm runs the business checks. All well → STAT "90" and a final order number from the series 1000000001…;
otherwise STAT "15", the order stays temporary and LstErrMsgOrder (on the temporary number) lists why:
LEVL "1" = header, "2" = line; MDTA = the offending key; TX60 = text; MSID = message id (codes in `core.py`).
Created order lines get status "22" when fully allocated from the warehouse balance, else "20"; the head's
ORSL/ORST are the lowest/highest line status and STAT = ORST.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

from simulators.ion.m3 import core
from simulators.ion.m3.core import Nok, parse_date
from simulators.ion.m3.data import PRICE_CURRENCY, PRICE_LIST, PRICE_VALID_TO, BatchOrder, Item, Order, Store
from simulators.ion.m3.metadata import PROGRAMS

Record = dict[str, object]
Inputs = dict[str, str]
Handler = Callable[[Store, Inputs], Iterable[Record]]

CENT = Decimal("0.01")
_CUSTOMER_PERSONAL = ("CUA2", "CUA3", "CUA4", "PONO", "PHNO", "PHN2", "TFNO", "YREF", "MAIL", "VRNO", "ALCU")
_CUSTOMER_EDITABLE = ("CUNM", "CUA1", *_CUSTOMER_PERSONAL, "CUTP", "CSCD", "STAT", "TOWN", "CUCD")
_CUSTOMER_STATUSES = ("10", "20", "90")


# --- lookups ---------------------------------------------------------------------------------------------------------
def _customer(store: Store, cuno: str, field: str = "CUNO") -> Record:
    found = store.customers.get(cuno)
    if found is None:
        raise Nok(f"Customer number {cuno} does not exist", core.CODE_CUSTOMER_MISSING, field)
    return found


def _item(store: Store, itno: str) -> Item:
    found = store.item(itno)
    if found is None:
        raise Nok(f"Item number {itno} does not exist", core.CODE_ITEM_MISSING, "ITNO")
    return found


def _warehouse(store: Store, whlo: str) -> str:
    if whlo not in store.warehouses:
        raise Nok(f"Warehouse {whlo} does not exist", core.CODE_WAREHOUSE_MISSING, "WHLO")
    return whlo


def _batch(store: Store, orno: str) -> BatchOrder:
    found = store.batch_orders.get(orno)
    if found is None:
        raise Nok(f"Order number {orno} does not exist", core.CODE_ORDER_MISSING, "ORNO")
    return found


def _order(store: Store, orno: str) -> Order:
    found = store.orders.get(orno)
    if found is None:
        raise Nok(f"Order number {orno} does not exist", core.CODE_ORDER_MISSING, "ORNO")
    return found


def _date(inputs: Inputs, name: str) -> date | None:
    text = inputs.get(name)
    return parse_date(text) if text else None


def _terms(query: str) -> list[tuple[str | None, str]]:
    """A tiny subset of the IES query syntax: whitespace-separated terms, `FIELD:value`, `*` wildcards ignored."""
    terms: list[tuple[str | None, str]] = []
    for token in query.replace("*", " ").split():
        name, sep, value = token.partition(":")
        if sep and value:
            terms.append((name.upper(), value.lower()))
        elif not sep:
            terms.append((None, token.lower()))
    return terms


def _matches(record: Record, terms: list[tuple[str | None, str]], default_fields: tuple[str, ...]) -> bool:
    for name, value in terms:
        fields = (name,) if name else default_fields
        if not any(value in str(record.get(f, "")).lower() for f in fields):
            return False
    return True


# --- MRS001MI --------------------------------------------------------------------------------------------------------
def mrs001_lst_programs(store: Store, inputs: Inputs) -> Iterable[Record]:
    return [{"MINM": p.name, "MIDS": p.description} for p in sorted(PROGRAMS.values(), key=lambda p: p.name)]


def mrs001_lst_transactions(store: Store, inputs: Inputs) -> Iterable[Record]:
    program = PROGRAMS.get(inputs["MINM"])
    if program is None:
        raise Nok(f"Program {inputs['MINM']} does not exist", core.CODE_PROGRAM_MISSING, "MINM")
    return [
        {"MINM": program.name, "TRNM": t.name, "TRDS": t.description}
        for t in sorted(program.transactions.values(), key=lambda t: t.name)
    ]


def mrs001_lst_fields(store: Store, inputs: Inputs) -> Iterable[Record]:
    program = PROGRAMS.get(inputs["MINM"])
    if program is None:
        raise Nok(f"Program {inputs['MINM']} does not exist", core.CODE_PROGRAM_MISSING, "MINM")
    tdef = program.transactions.get(inputs["TRNM"])
    if tdef is None:
        raise Nok(f"Transaction {inputs['TRNM']} does not exist", core.CODE_PROGRAM_MISSING, "TRNM")
    kind = inputs["TRTP"].upper()
    if kind not in ("I", "O"):
        raise Nok("Transaction type must be I or O", core.CODE_VALUE_INVALID, "TRTP")
    fields = tdef.inputs if kind == "I" else tdef.outputs
    position = 16  # positions 1-15 of an MI record hold the transaction name
    rows: list[Record] = []
    for f in fields:
        rows.append(
            {
                "FLNM": f.name,
                "FLDS": f.description,
                "FRPO": position,
                "TOPO": position + f.length - 1,
                "LENG": f.length,
                "TYPE": f.type,
                "MAND": "1" if f.mandatory else "0",
            }
        )
        position += f.length
    return rows


# --- CRS610MI --------------------------------------------------------------------------------------------------------
def _check_customer_values(inputs: Inputs) -> None:
    if "STAT" in inputs and inputs["STAT"] not in _CUSTOMER_STATUSES:
        raise Nok(f"Status {inputs['STAT']} is invalid", core.CODE_VALUE_INVALID, "STAT")


def crs610_add(store: Store, inputs: Inputs) -> Iterable[Record]:
    template = _customer(store, inputs["CUTM"], "CUTM")
    _check_customer_values(inputs)
    cuno = inputs.get("CUNO") or store.next_customer_number()
    if cuno in store.customers:
        raise Nok(f"Customer number {cuno} already exists", core.CODE_CUSTOMER_EXISTS, "CUNO")
    record = dict(template)
    for name in _CUSTOMER_PERSONAL:
        record[name] = ""
    for name in _CUSTOMER_EDITABLE:
        if name in inputs:
            record[name] = int(inputs[name]) if name == "CUTP" else inputs[name]
    record.update({"CUNO": cuno, "PYNO": cuno, "LMDT": store.today, "RGDT": store.today})
    if not record["ALCU"]:
        record["ALCU"] = str(record["CUNM"])[:10].upper()
    store.add_customer(record)
    store.discounts[cuno] = Decimal(0)
    return [{"CUNO": cuno, "ERRM": ""}]


def crs610_chg_basic_data(store: Store, inputs: Inputs) -> Iterable[Record]:
    record = _customer(store, inputs["CUNO"])
    _check_customer_values(inputs)
    for name in _CUSTOMER_EDITABLE:
        if name in inputs:
            record[name] = int(inputs[name]) if name == "CUTP" else inputs[name]
    record["LMDT"] = store.today
    return []


def crs610_get(store: Store, inputs: Inputs) -> Iterable[Record]:
    return [_customer(store, inputs["CUNO"])]


def crs610_lst_by_number(store: Store, inputs: Inputs) -> Iterator[Record]:
    start = inputs.get("CUNO", "")
    for cuno in store.customer_keys:
        if cuno >= start:
            yield store.customers[cuno]


def crs610_lst_by_name(store: Store, inputs: Inputs) -> Iterator[Record]:
    start = inputs.get("CUNM", "").upper()
    ordered = sorted(store.customers.values(), key=lambda c: (str(c["CUNM"]).upper(), str(c["CUNO"])))
    for record in ordered:
        if str(record["CUNM"]).upper() >= start:
            yield record


def crs610_search(store: Store, inputs: Inputs) -> Iterator[Record]:
    terms = _terms(inputs["SQRY"])
    for cuno in store.customer_keys:
        record = store.customers[cuno]
        if _matches(record, terms, ("CUNO", "CUNM", "MAIL")):
            yield record


# --- MMS200MI --------------------------------------------------------------------------------------------------------
def mms200_get_basic(store: Store, inputs: Inputs) -> Iterable[Record]:
    return [_item(store, inputs["ITNO"]).record()]


def mms200_get_whs_basic(store: Store, inputs: Inputs) -> Iterable[Record]:
    item = _item(store, inputs["ITNO"])
    whlo = _warehouse(store, inputs["WHLO"])
    return [
        {
            "WHLO": whlo,
            "ITNO": item.itno,
            "WHNM": f"Warehouse {whlo}",
            "STAT": item.stat,
            "FACI": "100",
            "REOP": 10,
            "SSQT": 5,
            "EOQT": 50,
            "ORTY": "100",
        }
    ]


def mms200_get_whs_bal(store: Store, inputs: Inputs) -> Iterable[Record]:
    item = _item(store, inputs["ITNO"])
    whlo = _warehouse(store, inputs["WHLO"])
    bal = store.balance(item.itno, whlo)
    return [
        {
            "WHLO": whlo,
            "ITNO": item.itno,
            "FACI": "100",
            "STQT": bal.stqt,
            "QUQT": 0,
            "RJQT": 0,
            "ALQT": bal.alqt,
            "AV01": bal.available,
            "AVAL": bal.available,
            "PLQT": 0,
            "ORQT": bal.alqt,
            "REQT": 0,
            "IDDT": bal.iddt,
            "ODDT": bal.oddt,
        }
    ]


def mms200_lst_by_item(store: Store, inputs: Inputs) -> Iterator[Record]:
    for item in store.items_from(inputs["ITNO"]):
        yield item.record()


def mms200_lst_by_chg_date(store: Store, inputs: Inputs) -> Iterator[Record]:
    low = _date(inputs, "FLMD") or date.min
    high = _date(inputs, "TLMD") or date.max
    for item in store.items:
        if low <= item.lmdt <= high:
            yield item.record()


def mms200_search(store: Store, inputs: Inputs) -> Iterator[Record]:
    terms = _terms(inputs["SQRY"])
    for item in store.items:
        record = item.record()
        if _matches(record, terms, ("ITNO", "ITDS", "FUDS")):
            yield record


# --- MMS060MI --------------------------------------------------------------------------------------------------------
def mms060_lst_via_item(store: Store, inputs: Inputs) -> Iterable[Record]:
    item = _item(store, inputs["ITNO"])
    rows: list[Record] = []
    for number, whlo in enumerate(store.warehouses, start=1):
        bal = store.balance(item.itno, whlo)
        if bal.stqt <= 0:
            continue
        first = (bal.stqt * 2 / 3).to_integral_value()
        parts = [(f"A-{number:02d}-01", first, min(bal.alqt, first))]
        if bal.stqt - first > 0:
            parts.append((f"B-{number:02d}-02", bal.stqt - first, max(bal.alqt - first, Decimal(0))))
        for whsl, stqt, alqt in parts:
            rows.append(
                {"WHLO": whlo, "ITNO": item.itno, "WHSL": whsl, "BANO": "", "STQT": stqt, "ALQT": alqt, "STAS": "2"}
            )
    return rows


# --- prices ----------------------------------------------------------------------------------------------------------
def _check_price_list(store: Store, inputs: Inputs) -> date:
    if inputs["PRRF"] != PRICE_LIST or inputs["CUCD"] != PRICE_CURRENCY:
        raise Nok(f"Price list {inputs['PRRF']} {inputs['CUCD']} does not exist", core.CODE_PRICE_MISSING, "PRRF")
    fvdt = _date(inputs, "FVDT")
    if fvdt is None or fvdt < store.price_valid_from:
        raise Nok(f"Price list {inputs['PRRF']} is not valid from {inputs['FVDT']}", core.CODE_PRICE_MISSING, "FVDT")
    return store.price_valid_from


def _base_price(store: Store, item: Item, valid_from: date, cuno: str) -> Record:
    return {
        "PRRF": PRICE_LIST, "CUCD": PRICE_CURRENCY, "CUNO": cuno, "FVDT": valid_from, "ITNO": item.itno,
        "SAPR": item.price, "LVDT": PRICE_VALID_TO, "SPUN": item.unms, "SACD": 1,
    }  # fmt: skip


def ois017_get_base_price(store: Store, inputs: Inputs) -> Iterable[Record]:
    valid_from = _check_price_list(store, inputs)
    return [_base_price(store, _item(store, inputs["ITNO"]), valid_from, inputs.get("CUNO", ""))]


def ois017_lst_base_price(store: Store, inputs: Inputs) -> Iterator[Record]:
    valid_from = _check_price_list(store, inputs)
    for item in store.items:
        yield _base_price(store, item, valid_from, inputs.get("CUNO", ""))


def ois320_get_price_line(store: Store, inputs: Inputs) -> Iterable[Record]:
    customer = _customer(store, inputs["CUNO"])
    item = _item(store, inputs["ITNO"])
    quantity = Decimal(inputs.get("ORQA", "1"))
    discount = store.discounts.get(str(customer["CUNO"]), Decimal(0))
    net = (item.price * (100 - discount) / 100).quantize(CENT, ROUND_HALF_UP)
    return [
        {
            "SAPR": item.price,
            "NETP": net,
            "LNAM": (net * quantity).quantize(CENT, ROUND_HALF_UP),
            "DIP1": discount,
            "DIP2": 0,
            "PRRF": PRICE_LIST,
            "PRMO": "2",
            "SPUN": item.unms,
            "CUCD": customer["CUCD"],
        }
    ]


# --- OIS100MI --------------------------------------------------------------------------------------------------------
def ois100_add_batch_head(store: Store, inputs: Inputs) -> Iterable[Record]:
    orno = store.next_batch_number()
    head = {k: v for k, v in inputs.items() if k != "CONO"}
    store.batch_orders[orno] = BatchOrder(orno=orno, head=head)
    return [{"ORNO": orno}]


def ois100_add_batch_line(store: Store, inputs: Inputs) -> Iterable[Record]:
    batch = _batch(store, inputs["ORNO"])
    if batch.status == "90":
        raise Nok(f"Order {batch.orno} is already confirmed", core.CODE_ORDER_STATE, "ORNO")
    ponr = max((int(line["PONR"]) for line in batch.lines), default=0) + 1
    line = {k: v for k, v in inputs.items() if k not in ("CONO", "ORNO")}
    line.update({"PONR": str(ponr), "POSX": "0"})
    batch.lines.append(line)
    return [{"PONR": ponr, "POSX": 0, "ATNR": 0}]


def _error(level: str, key: str, text: str, msid: str) -> dict[str, str]:
    return {"LEVL": level, "MDTA": key, "TX60": text[:60], "MSID": msid}


def _confirm_errors(store: Store, batch: BatchOrder, whlo: str) -> list[dict[str, str]]:
    errors: list[dict[str, str]] = []
    cuno = batch.head.get("CUNO", "")
    customer = store.customers.get(cuno)
    if customer is None:
        errors.append(_error("1", f"CUNO {cuno}", f"Customer number {cuno} does not exist", core.CODE_CUSTOMER_MISSING))
    elif customer["STAT"] != "20":
        text = f"Customer {cuno} has status {customer['STAT']}"
        errors.append(_error("1", f"CUNO {cuno}", text, core.CODE_VALUE_INVALID))
    if whlo not in store.warehouses:
        errors.append(_error("1", f"WHLO {whlo}", f"Warehouse {whlo} does not exist", core.CODE_WAREHOUSE_MISSING))
    if not batch.lines:
        errors.append(_error("1", f"ORNO {batch.orno}", "The order has no lines", core.CODE_NO_LINES))
    for line in batch.lines:
        key = f"PONR {line['PONR']} ITNO {line['ITNO']}"
        item = store.item(line["ITNO"])
        if item is None:
            errors.append(_error("2", key, f"Item number {line['ITNO']} does not exist", core.CODE_ITEM_MISSING))
        elif item.stat != "20":
            text = f"Item {item.itno} has status {item.stat} and cannot be sold"
            errors.append(_error("2", key, text, core.CODE_ITEM_STATUS))
        line_whlo = line.get("WHLO", whlo)
        if line_whlo != whlo and line_whlo not in store.warehouses:
            errors.append(_error("2", key, f"Warehouse {line_whlo} does not exist", core.CODE_WAREHOUSE_MISSING))
        if Decimal(line.get("ORQT", "0")) <= 0:
            errors.append(_error("2", key, "Ordered quantity must be greater than zero", core.CODE_QUANTITY))
    return errors


def ois100_confirm(store: Store, inputs: Inputs) -> Iterable[Record]:
    batch = _batch(store, inputs["ORNO"])
    if batch.status == "90":
        raise Nok(f"Order {batch.orno} is already confirmed", core.CODE_ORDER_STATE, "ORNO")
    head = batch.head
    customer = store.customers.get(head.get("CUNO", ""), {})
    whlo = head.get("WHLO") or str(customer.get("WHLO") or (store.warehouses[0] if store.warehouses else ""))
    errors = _confirm_errors(store, batch, whlo)
    if errors:
        batch.status, batch.errors = "15", errors
        return [{"ORNO": batch.orno, "STAT": "15"}]
    orno = store.next_order_number()
    discount = store.discounts.get(head["CUNO"], Decimal(0))
    lines: list[Record] = []
    for line in batch.lines:
        item = store.item(line["ITNO"])
        assert item is not None
        line_whlo = line.get("WHLO", whlo)
        quantity = Decimal(line["ORQT"])
        price = Decimal(line["SAPR"]) if "SAPR" in line else item.price
        dip1 = Decimal(line["DIP1"]) if "DIP1" in line else discount
        dia1 = Decimal(line.get("DIA1", "0"))
        amount = (quantity * price * (100 - dip1) / 100 - dia1).quantize(CENT, ROUND_HALF_UP)
        balance = store.balance(item.itno, line_whlo)
        allocated = min(quantity, balance.available)
        balance.alqt += allocated
        lines.append(
            {
                "ORNO": orno,
                "PONR": int(line["PONR"]),
                "POSX": 0,
                "ITNO": item.itno,
                "ITDS": line.get("ITDS") or item.itds,
                "ORQT": quantity,
                "ALUN": line.get("ALUN") or item.unms,
                "SAPR": price,
                "DIP1": dip1,
                "DIA1": dia1,
                "WHLO": line_whlo,
                "ORST": "22" if allocated == quantity else "20",
                "ALQT": allocated,
                "DLQT": 0,
                "IVQT": 0,
                "LNAM": amount,
                "CUOR": line.get("CUOR", ""),
                "DWDT": _date(line, "DWDT") or _date(head, "RLDT"),
            }
        )
    statuses = [str(line["ORST"]) for line in lines]
    total = sum((Decimal(str(line["LNAM"])) for line in lines), Decimal(0))
    order_head: Record = {
        "ORNO": orno, "CUNO": head["CUNO"], "CUOR": head.get("CUOR", ""),
        "ORTP": head.get("ORTP") or customer.get("ORTP", "100"), "ORDT": _date(head, "ORDT") or store.today,
        "ORSL": min(statuses), "ORST": max(statuses), "STAT": max(statuses), "FACI": head.get("FACI", "100"),
        "WHLO": whlo, "RLDT": _date(head, "RLDT") or store.today + timedelta(days=7),
        "CUCD": head.get("CUCD") or customer.get("CUCD", PRICE_CURRENCY),
        "MODL": head.get("MODL") or customer.get("MODL", ""), "TEDL": head.get("TEDL") or customer.get("TEDL", ""),
        "YREF": head.get("YREF", ""), "NTAM": total, "ORVA": total, "TOAM": total,
    }  # fmt: skip
    store.orders[orno] = Order(orno=orno, head=order_head, lines=lines)
    batch.status, batch.errors, batch.final_orno = "90", [], orno
    return [{"ORNO": orno, "STAT": "90"}]


def _batch_head_record(batch: BatchOrder) -> Record:
    head = batch.head
    return {
        **head,
        "ORNO": batch.orno,
        "CUNO": head.get("CUNO", ""),
        "CUOR": head.get("CUOR", ""),
        # Not documented: the header status of a batch order that was never confirmed; "" here.
        "STAT": batch.status,
        "ORSL": batch.status,
        "ORST": batch.status,
    }


def ois100_get_batch_head(store: Store, inputs: Inputs) -> Iterable[Record]:
    return [_batch_head_record(_batch(store, inputs["ORNO"]))]


def ois100_lst_batch_head(store: Store, inputs: Inputs) -> Iterator[Record]:
    """The customer's batch (temporary) orders, confirmed ones included (their header status is 90)."""
    cuno = str(_customer(store, inputs["CUNO"])["CUNO"])
    for orno in sorted(store.batch_orders):
        batch = store.batch_orders[orno]
        if batch.head.get("CUNO") == cuno:
            yield _batch_head_record(batch)


def ois100_lst_batch_line(store: Store, inputs: Inputs) -> Iterable[Record]:
    batch = _batch(store, inputs["ORNO"])
    return [{**line, "ORNO": batch.orno} for line in batch.lines]


def ois100_del_batch_head(store: Store, inputs: Inputs) -> Iterable[Record]:
    batch = _batch(store, inputs["ORNO"])
    if batch.status == "90":
        raise Nok(f"Order {batch.orno} is already confirmed", core.CODE_ORDER_STATE, "ORNO")
    del store.batch_orders[batch.orno]
    return []


def ois100_del_batch_line(store: Store, inputs: Inputs) -> Iterable[Record]:
    batch = _batch(store, inputs["ORNO"])
    if batch.status == "90":
        raise Nok(f"Order {batch.orno} is already confirmed", core.CODE_ORDER_STATE, "ORNO")
    ponr, posx = str(int(Decimal(inputs["PONR"]))), str(int(Decimal(inputs.get("POSX") or "0")))
    for index, line in enumerate(batch.lines):
        if line["PONR"] == ponr and line.get("POSX", "0") == posx:
            del batch.lines[index]
            return []
    raise Nok(f"Order line {batch.orno}/{ponr} does not exist", core.CODE_LINE_MISSING, "PONR")


def ois100_lst_err_msg(store: Store, inputs: Inputs) -> Iterable[Record]:
    return [dict(error) for error in _batch(store, inputs["ORNO"]).errors]


def ois100_get_head(store: Store, inputs: Inputs) -> Iterable[Record]:
    return [_order(store, inputs["ORNO"]).head]


def ois100_lst_head(store: Store, inputs: Inputs) -> Iterator[Record]:
    cuno = str(_customer(store, inputs["CUNO"])["CUNO"])
    low, high = inputs.get("ORSL", ""), inputs.get("ORST", "99")
    for orno in sorted(store.orders):
        head = store.orders[orno].head
        if head["CUNO"] == cuno and str(head["ORSL"]) >= low and str(head["ORST"]) <= high:
            yield head


def ois100_get_line(store: Store, inputs: Inputs) -> Iterable[Record]:
    order = _order(store, inputs["ORNO"])
    ponr, posx = int(Decimal(inputs["PONR"])), int(Decimal(inputs.get("POSX", "0")))
    for line in order.lines:
        if line["PONR"] == ponr and line["POSX"] == posx:
            return [line]
    raise Nok(f"Order line {order.orno}/{ponr} does not exist", core.CODE_LINE_MISSING, "PONR")


def ois100_lst_line(store: Store, inputs: Inputs) -> Iterable[Record]:
    order = _order(store, inputs["ORNO"])
    return [
        line
        for line in order.lines
        if inputs.get("ORST", line["ORST"]) == line["ORST"] and inputs.get("ITNO", line["ITNO"]) == line["ITNO"]
    ]


def ois100_get_atp(store: Store, inputs: Inputs) -> Iterable[Record]:
    item = _item(store, inputs["ITNO"])
    whlo = _warehouse(store, inputs["WHLO"])
    when = _date(inputs, "DWDT") or store.today
    return [
        {
            "ITNO": item.itno,
            "WHLO": whlo,
            "AVTQ": store.balance(item.itno, whlo).available,
            "UNMS": item.unms,
            "AVTD": when,
        }
    ]


def ois100_del_head(store: Store, inputs: Inputs) -> Iterable[Record]:
    orno = inputs["ORNO"]
    if orno in store.batch_orders and store.batch_orders[orno].status != "90":
        del store.batch_orders[orno]
        return []
    order = _order(store, orno)
    for line in order.lines:
        balance = store.balance(str(line["ITNO"]), str(line["WHLO"]))
        balance.alqt = max(balance.alqt - Decimal(str(line["ALQT"])), Decimal(0))
    del store.orders[orno]
    return []


HANDLERS: dict[tuple[str, str], Handler] = {
    ("MRS001MI", "LstPrograms"): mrs001_lst_programs,
    ("MRS001MI", "LstTransactions"): mrs001_lst_transactions,
    ("MRS001MI", "LstFields"): mrs001_lst_fields,
    ("CRS610MI", "Add"): crs610_add,
    ("CRS610MI", "ChgBasicData"): crs610_chg_basic_data,
    ("CRS610MI", "GetBasicData"): crs610_get,
    ("CRS610MI", "GetOrderInfo"): crs610_get,
    ("CRS610MI", "LstByNumber"): crs610_lst_by_number,
    ("CRS610MI", "LstByName"): crs610_lst_by_name,
    ("CRS610MI", "SearchCustomer"): crs610_search,
    ("MMS200MI", "GetItmBasic"): mms200_get_basic,
    ("MMS200MI", "Get"): mms200_get_basic,
    ("MMS200MI", "GetItmWhsBasic"): mms200_get_whs_basic,
    ("MMS200MI", "GetItmWhsBal"): mms200_get_whs_bal,
    ("MMS200MI", "LstItmByItm"): mms200_lst_by_item,
    ("MMS200MI", "LstItmByChgDate"): mms200_lst_by_chg_date,
    ("MMS200MI", "SearchItem"): mms200_search,
    ("MMS060MI", "LstViaItem"): mms060_lst_via_item,
    ("OIS017MI", "GetBasePrice"): ois017_get_base_price,
    ("OIS017MI", "LstBasePrice"): ois017_lst_base_price,
    ("OIS320MI", "GetPriceLine"): ois320_get_price_line,
    ("OIS100MI", "AddBatchHead"): ois100_add_batch_head,
    ("OIS100MI", "AddBatchLine"): ois100_add_batch_line,
    ("OIS100MI", "Confirm"): ois100_confirm,
    ("OIS100MI", "GetBatchHead"): ois100_get_batch_head,
    ("OIS100MI", "LstBatchHead"): ois100_lst_batch_head,
    ("OIS100MI", "LstBatchLine"): ois100_lst_batch_line,
    ("OIS100MI", "DelBatchHead"): ois100_del_batch_head,
    ("OIS100MI", "DelBatchLine"): ois100_del_batch_line,
    ("OIS100MI", "LstErrMsgOrder"): ois100_lst_err_msg,
    ("OIS100MI", "GetHead"): ois100_get_head,
    ("OIS100MI", "LstHead"): ois100_lst_head,
    ("OIS100MI", "GetLine"): ois100_get_line,
    ("OIS100MI", "LstLine"): ois100_lst_line,
    ("OIS100MI", "GetATP"): ois100_get_atp,
    ("OIS100MI", "DelHead"): ois100_del_head,
}
