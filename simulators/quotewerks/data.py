"""The simulator's in-memory QuoteWerks database: documents, contacts and products, seeded deterministically.

Column names are QuoteWerks' own (`DocumentHeaders`, `DocumentItems`); see `docs/quotewerks-interface.md` for
which are confirmed and which are guesses. Contacts `C000001…` and products `ITM000001…` are copied from the M3
simulator's seeded master data (`simulators.ion.m3.data.Store`, same seed), so a quote for C000001 / ITM000001
finds that customer and item in M3. Items whose number is divisible by 33 are inactive in M3 (STAT 90) but active
here, like a QuoteWerks catalog that lags the ERP.

Fixed scenario documents come first, with stable DocNos (`SCENARIOS`, for the default prefix AAA); random filler
documents follow. Totals: SubTotal = Σ ExtendedPrice of product rows (LineType 1) that are not unselected options
(LineAttributes bit 16 without 256) nor members (bit 8) of an unselected option group; GrandTotal = SubTotal +
TotalTax + ShippingAmount.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from simulators.ion.m3.data import Store as M3Store, item_number, item_status
from simulators.ion.m3.simulator import M3Config
from simulators.quotewerks.config import QwSimConfig

# --- columns ---------------------------------------------------------------------------------------------------------
PARTY_FIELDS = (
    "Company", "Contact", "Address1", "Address2", "Address3", "City", "State", "PostalCode", "Country",
    "PhoneNumber", "Email", "CMAccountNo",
)  # fmt: skip
PARTY_PREFIXES = ("SoldTo", "ShipTo", "BillTo")
CUSTOM_TEXT = tuple(f"CustomText{n:02d}" for n in range(1, 11))
HEADER_COLUMNS: tuple[str, ...] = (
    "ID", "DocNo", "DocType", "DocName", "DocStatus", "DocDate", "SalesRep", "ShipVia", "Terms", "CustomerPONumber",
    *(f"{prefix}{name}" for prefix in PARTY_PREFIXES for name in PARTY_FIELDS),
    "SubTotal", "TotalTax", "ShippingAmount", "GrandTotal", "AlternateCurrencyIdentifier", *CUSTOM_TEXT,
    "LastModified",
)  # fmt: skip
NUMERIC_HEADER_COLUMNS = frozenset({"ID", "SubTotal", "TotalTax", "ShippingAmount", "GrandTotal"})
READ_ONLY_HEADER_COLUMNS = frozenset({"ID", "DocNo", "LastModified"})
ITEM_COLUMNS: tuple[str, ...] = (
    "ID", "DocID", "SortOrder", "LineType", "LineAttributes", "ManufacturerPartNumber", "Description", "QtyTotal",
    "UnitPrice", "UnitList", "UnitCost", "DiscountPercent", "UnitOfMeasure", "Vendor", "Manufacturer",
    "ExtendedPrice",
)  # fmt: skip
CUSTOMER_COLUMNS: tuple[str, ...] = (
    "CMAccountNo", "Company", "Contact", "Address1", "Address2", "Address3", "City", "State", "PostalCode",
    "Country", "PhoneNumber", "Email", "LastModified",
)  # fmt: skip
PRODUCT_COLUMNS: tuple[str, ...] = (
    "ManufacturerPartNumber", "Description", "UnitOfMeasure", "Price", "Cost", "Active", "Availability",
    "Manufacturer", "Vendor", "LastModified",
)  # fmt: skip

# LineType values and LineAttributes bits (the COM enums, as in shared.contracts).
PRODUCT, COMMENT, SUBTOTAL, GROUP_HEADER = 1, 2, 4, 8
GROUP_MEMBER, OPTION, OPTION_SELECTED = 8, 16, 256

# --- scenarios -------------------------------------------------------------------------------------------------------
_SCENARIO_NUMBERS: dict[str, str] = {
    "ordinary": "Q1001",
    "unknown-customer": "Q1002",
    "unknown-item": "Q1003",
    "inactive-item": "Q1004",
    "long-names": "Q1005",
    "options-group": "Q1006",
    "lines-20": "Q1007",
    "lines-50": "Q1008",
    "json-escape": "Q1009",
    "already-accepted": "Q1010",
    "order": "O1001",
}
#: Scenario name -> DocNo for the default prefix "AAA" (`QwStore.scenarios` has them for the configured prefix).
SCENARIOS: dict[str, str] = {name: f"AAA{number}" for name, number in _SCENARIO_NUMBERS.items()}
FIRST_FILLER_QUOTE = 1101

UNKNOWN_ITEM = "NOPE-123"
INACTIVE_ITEM = "ITM000033"
SHIP_VIAS = ("UPS Ground", "FedEx Priority", "Will Call", "DHL Express")
SHIPPING = {
    "UPS Ground": Decimal(25),
    "FedEx Priority": Decimal(60),
    "Will Call": Decimal(0),
    "DHL Express": Decimal(45),
}
TAX_RATE = Decimal("0.08")
_REPS = ("Alex Morgan", "Dana Lee", "Chris Park")
_TERMS = ("Net 30", "Net 15", "Due on receipt")
_VENDORS = ("Ingram Micro", "TD SYNNEX", "D&H")
_MANUFACTURERS = ("Nordic Parts", "Atlas Components", "Vertex Industrial")
_CENT = Decimal("0.01")


def money(value: Decimal) -> float:
    return float(value.quantize(_CENT, rounding=ROUND_HALF_UP))


def iso(moment: datetime) -> str:
    """ISO 8601 UTC with milliseconds and a Z, the format of every LastModified."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace(" ", "+"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def empty_party(prefix: str) -> dict[str, Any]:
    return {f"{prefix}{name}": "" for name in PARTY_FIELDS}


class QwStore:
    """Documents, contacts and products. Not thread-safe: use it from one event loop."""

    def __init__(self, config: QwSimConfig) -> None:
        self.config = config
        self.today = config.today or date.today()
        self._midnight = datetime.combine(self.today, time(), tzinfo=UTC)
        self._last_stamp = datetime(1970, 1, 1, tzinfo=UTC)
        self.documents: dict[str, dict[str, Any]] = {}  # DocNo -> header
        self.items: dict[int, list[dict[str, Any]]] = {}  # DocID -> rows
        self.customers: dict[str, dict[str, Any]] = {}
        self.products: dict[str, dict[str, Any]] = {}
        self.scenarios = {name: f"{config.doc_prefix}{number}" for name, number in _SCENARIO_NUMBERS.items()}
        self._next_doc_id = 1
        self._next_item_id = 1
        self._rnd = random.Random(f"qw:{config.seed}")  # noqa: S311 - deterministic test data
        self._copy_m3_master_data()
        self._build_scenarios()
        self._build_fillers()

    # --- time ------------------------------------------------------------------------------------------------------
    def seeded_stamp(self, days_ago: float) -> str:
        return iso(self._midnight - timedelta(days=days_ago))

    def now(self) -> str:
        """A LastModified for a change now: strictly increasing, so `modified_since` polling never misses one."""
        moment = datetime.now(UTC)
        if moment <= self._last_stamp:
            moment = self._last_stamp + timedelta(milliseconds=1)
        self._last_stamp = moment
        return iso(moment)

    # --- master data -----------------------------------------------------------------------------------------------
    def _copy_m3_master_data(self) -> None:
        m3 = M3Config(seed=self.config.m3_seed)
        source = M3Store(
            seed=m3.seed, customers=self.config.customers, items=self.config.products, warehouses=m3.warehouses,
            company=m3.company, division=m3.division, today=self.today,
        )  # fmt: skip
        rnd = random.Random(f"qw:{self.config.seed}:master")  # noqa: S311 - deterministic test data
        for cuno in source.customer_keys:
            record = source.customers[cuno]
            self.customers[cuno] = {
                "CMAccountNo": cuno, "Company": record["CUNM"], "Contact": record["YREF"], "Address1": record["CUA1"],
                "Address2": "", "Address3": "", "City": record["TOWN"], "State": "", "PostalCode": record["PONO"],
                "Country": record["CSCD"], "PhoneNumber": record["PHNO"], "Email": record["MAIL"],
                "LastModified": self.seeded_stamp(rnd.randint(30, 400)),
            }  # fmt: skip
        for item in source.items:
            self.products[item.itno] = {
                "ManufacturerPartNumber": item.itno, "Description": item.itds, "UnitOfMeasure": item.unms,
                "Price": money(item.price), "Cost": money(item.price * Decimal("0.6")), "Active": True,
                "Availability": rnd.randint(0, 500), "Manufacturer": rnd.choice(_MANUFACTURERS),
                "Vendor": rnd.choice(_VENDORS), "LastModified": self.seeded_stamp(rnd.randint(30, 400)),
            }  # fmt: skip

    def party(self, prefix: str, cm_account_no: str) -> dict[str, Any]:
        customer = self.customers[cm_account_no]
        return {f"{prefix}{name}": customer.get(name, "") for name in PARTY_FIELDS}

    # --- lines -----------------------------------------------------------------------------------------------------
    def product_line(
        self,
        part: str,
        qty: int,
        *,
        discount: Decimal = Decimal(0),
        attributes: int = 0,
        product: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        product = product or self.products[part]
        unit_list = Decimal(str(product["Price"]))
        unit_price = (unit_list * (1 - discount / 100)).quantize(_CENT, rounding=ROUND_HALF_UP)
        return {
            "LineType": PRODUCT, "LineAttributes": attributes, "ManufacturerPartNumber": part,
            "Description": product["Description"], "QtyTotal": float(qty), "UnitPrice": money(unit_price),
            "UnitList": money(unit_list), "UnitCost": float(product["Cost"]), "DiscountPercent": float(discount),
            "UnitOfMeasure": product["UnitOfMeasure"], "Vendor": product.get("Vendor", ""),
            "Manufacturer": product.get("Manufacturer", ""), "ExtendedPrice": money(unit_price * qty),
        }  # fmt: skip

    @staticmethod
    def text_line(line_type: int, description: str, attributes: int = 0) -> dict[str, Any]:
        return {
            "LineType": line_type, "LineAttributes": attributes, "ManufacturerPartNumber": "",
            "Description": description,
            "QtyTotal": 1.0 if line_type == GROUP_HEADER else 0.0, "UnitPrice": 0.0, "UnitList": 0.0, "UnitCost": 0.0,
            "DiscountPercent": 0.0, "UnitOfMeasure": "", "Vendor": "", "Manufacturer": "", "ExtendedPrice": 0.0,
        }  # fmt: skip

    @staticmethod
    def included(row: dict[str, Any], group_excluded: bool) -> bool:
        attributes = int(row["LineAttributes"])
        if attributes & OPTION and not attributes & OPTION_SELECTED:
            return False
        return not (attributes & GROUP_MEMBER and group_excluded)

    def _compute(self, header: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        """Fill subtotal-line and group-header amounts and the header totals."""
        sub_total = Decimal(0)
        since_subtotal = Decimal(0)
        group: dict[str, Any] | None = None
        group_excluded = False
        for row in rows:
            line_type = int(row["LineType"])
            if line_type == GROUP_HEADER:
                group, group_excluded = row, not self.included(row, False)
                row["ExtendedPrice"] = 0.0
                continue
            if not int(row["LineAttributes"]) & GROUP_MEMBER:
                group, group_excluded = None, False
            if line_type == SUBTOTAL:
                row["ExtendedPrice"] = money(since_subtotal)
                since_subtotal = Decimal(0)
            elif line_type == PRODUCT:
                amount = Decimal(str(row["ExtendedPrice"]))
                if group is not None:
                    group["ExtendedPrice"] = money(Decimal(str(group["ExtendedPrice"])) + amount)
                if self.included(row, group_excluded):
                    sub_total += amount
                    since_subtotal += amount
        tax = sub_total * TAX_RATE
        shipping = SHIPPING.get(str(header["ShipVia"]), Decimal(0))
        header.update(
            SubTotal=money(sub_total),
            TotalTax=money(tax),
            ShippingAmount=money(shipping),
            GrandTotal=money(sub_total + tax.quantize(_CENT, rounding=ROUND_HALF_UP) + shipping),
        )

    # --- documents -------------------------------------------------------------------------------------------------
    def add_document(
        self, number: str, *, doc_type: str = "QUOTE", name: str, status: str = "Quoted", sold_to: dict[str, Any],
        ship_to: dict[str, Any] | None = None, ship_via: str = "UPS Ground", lines: list[dict[str, Any]],
        days_ago: float = 3, po: str = "",
    ) -> dict[str, Any]:  # fmt: skip
        doc_id = self._next_doc_id
        self._next_doc_id += 1
        header: dict[str, Any] = dict.fromkeys(HEADER_COLUMNS, "")
        sold = {key.replace("SoldTo", "", 1): value for key, value in sold_to.items()}
        ship = {key.replace("ShipTo", "", 1): value for key, value in (ship_to or {}).items()} or sold
        header.update({f"SoldTo{k}": v for k, v in sold.items()})
        header.update({f"ShipTo{k}": v for k, v in ship.items()})
        header.update({f"BillTo{k}": v for k, v in sold.items()})
        header.update(
            ID=doc_id, DocNo=f"{self.config.doc_prefix}{number}", DocType=doc_type, DocName=name, DocStatus=status,
            DocDate=(self.today - timedelta(days=int(days_ago) + 1)).isoformat(), SalesRep=self._rnd.choice(_REPS),
            ShipVia=ship_via, Terms=self._rnd.choice(_TERMS), CustomerPONumber=po,
            LastModified=self.seeded_stamp(days_ago),
        )  # fmt: skip
        rows = []
        for sort_order, line in enumerate(lines, start=1):
            rows.append({"ID": self._next_item_id, "DocID": doc_id, "SortOrder": sort_order, **line})
            self._next_item_id += 1
        self._compute(header, rows)
        self.documents[header["DocNo"]] = header
        self.items[doc_id] = rows
        return header

    def document(self, doc_no: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        header = self.documents.get(doc_no)
        if header is None:
            return None
        return header, self.items[int(header["ID"])]

    def _active_parts(self, start: int, count: int) -> list[str]:
        parts: list[str] = []
        n = start
        while len(parts) < count:
            if item_status(n) == "20" and item_number(n) in self.products:
                parts.append(item_number(n))
            n += 1
            if n > self.config.products:
                n = 1
        return parts

    def _build_scenarios(self) -> None:
        d = Decimal
        self.add_document(
            "Q1001", name="Pump station spares", sold_to=self.party("SoldTo", "C000001"), ship_via="UPS Ground",
            po="PO-4711",
            lines=[
                self.text_line(COMMENT, "Prices valid for 30 days. Delivery 2-3 weeks after order."),
                self.product_line("ITM000001", 10),
                self.product_line("ITM000002", 5, discount=d(10)),
                self.product_line("ITM000003", 2),
                self.text_line(SUBTOTAL, "Subtotal"),
            ],
        )  # fmt: skip
        self.add_document(
            "Q1002", name="First order, new customer", ship_via="FedEx Priority", status="Open",
            sold_to={
                "SoldToCompany": "Brightwater Robotics LLC", "SoldToContact": "Nina Okafor",
                "SoldToAddress1": "500 Innovation Drive", "SoldToAddress2": "Building C", "SoldToAddress3": "Dock 4",
                "SoldToCity": "Austin", "SoldToState": "TX", "SoldToPostalCode": "78701", "SoldToCountry": "US",
                "SoldToPhoneNumber": "+1 512 555 0199", "SoldToEmail": "purchasing@brightwater-robotics.example.com",
                "SoldToCMAccountNo": "",
            },
            lines=[self.product_line("ITM000004", 4), self.product_line("ITM000005", 1)],
        )  # fmt: skip
        unknown = {"Price": 99.5, "Cost": 60.0, "Description": "Part that M3 does not know", "UnitOfMeasure": "EA"}
        self.add_document(
            "Q1003", name="Includes a non-catalog part", sold_to=self.party("SoldTo", "C000002"), ship_via="Will Call",
            lines=[self.product_line("ITM000006", 3), self.product_line(UNKNOWN_ITEM, 1, product=unknown)],
        )  # fmt: skip
        self.add_document(
            "Q1004", name="Includes a discontinued item", sold_to=self.party("SoldTo", "C000003"),
            ship_via="DHL Express",
            lines=[self.product_line("ITM000007", 2), self.product_line(INACTIVE_ITEM, 6)],
        )  # fmt: skip
        long_company = "Consolidated Northern Hemisphere Precision Engineering Group"  # 60 characters
        long_address = "Unit 14, Riverside Industrial Estate, Long Lane Rd"  # 50 characters
        self.add_document(
            "Q1005", name="Long names", ship_via="UPS Ground",
            sold_to={
                **empty_party("SoldTo"), "SoldToCompany": long_company, "SoldToContact": "Maximilian Featherstonehaugh",
                "SoldToAddress1": long_address, "SoldToAddress2": "Second Floor, Procurement Department Office",
                "SoldToCity": "Middlesbrough-on-the-Tees", "SoldToPostalCode": "TS1 1AA", "SoldToCountry": "GB",
                "SoldToPhoneNumber": "+44 1642 555 0100",
                "SoldToEmail": "procurement@consolidated-northern.example.com",
            },
            lines=[self.product_line("ITM000008", 12)],
        )  # fmt: skip
        self.add_document(
            "Q1006", name="Bundle with options", sold_to=self.party("SoldTo", "C000005"), ship_via="FedEx Priority",
            lines=[
                self.product_line("ITM000009", 1),
                self.text_line(GROUP_HEADER, "Installation kit"),
                self.product_line("ITM000010", 2, attributes=GROUP_MEMBER),
                self.product_line("ITM000011", 4, attributes=GROUP_MEMBER),
                self.product_line("ITM000012", 1, attributes=OPTION),  # optional, not selected: not ordered
                self.product_line("ITM000013", 1, attributes=OPTION | OPTION_SELECTED),
                self.text_line(SUBTOTAL, "Subtotal"),
            ],
        )  # fmt: skip
        for number, count, cuno in (("Q1007", 20, "C000006"), ("Q1008", 50, "C000007")):
            self.add_document(
                number, name=f"Benchmark quote, {count} lines", sold_to=self.party("SoldTo", cuno),
                ship_via=SHIP_VIAS[count % 4],
                lines=[self.product_line(part, 1 + i % 5) for i, part in enumerate(self._active_parts(20, count))],
            )  # fmt: skip
        self.add_document(
            "Q1009", name='Rack "A" \\ cabling, 19" <rev>', sold_to=self.party("SoldTo", "C000008"),
            lines=[self.product_line("ITM000014", 3)],
        )  # fmt: skip
        self.add_document(
            "Q1010", name="Accepted last week", status=self.config.accepted_status,
            sold_to=self.party("SoldTo", "C000009"), ship_via="DHL Express", days_ago=7,
            lines=[self.product_line("ITM000015", 2)],
        )  # fmt: skip
        self.add_document(
            "O1001", doc_type="ORDER", name="Converted order", status="1-Open", sold_to=self.party("SoldTo", "C000010"),
            lines=[self.product_line("ITM000016", 1)], days_ago=10,
        )  # fmt: skip

    def _build_fillers(self) -> None:
        rnd = random.Random(f"qw:{self.config.seed}:fillers")  # noqa: S311 - deterministic test data
        customers = sorted(self.customers)
        for i in range(self.config.extra_documents):
            parts = self._active_parts(rnd.randint(1, self.config.products), rnd.randint(1, 8))
            self.add_document(
                f"Q{FIRST_FILLER_QUOTE + i}", name=f"Quote {i + 1}", status=rnd.choice(("Draft", "Open", "Quoted")),
                sold_to=self.party("SoldTo", rnd.choice(customers)), ship_via=rnd.choice(SHIP_VIAS),
                days_ago=rnd.randint(1, 60),
                lines=[self.product_line(p, rnd.randint(1, 20), discount=Decimal(rnd.choice((0, 5)))) for p in parts],
            )  # fmt: skip
