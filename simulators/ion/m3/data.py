"""Seeded, deterministic master data and the in-memory order store of the M3 simulator.

Everything comes from `random.Random` seeded with the config's `seed` (one stream per kind of data, so changing
the number of customers does not change the items). Dates are relative to `today` (config.today or the date the
simulator was built).

Customers: `C000001` … `C{customers:06d}`, STAT "20", currency EUR, price list STD; any existing customer can be the
template (CUTM) of CRS610MI/Add. New customers without CUNO get the next free `C` number.

Items: `ITM000001` … `ITM{items:06d}`. Status follows a fixed rule so tests can find them without searching:
- STAT "90" (inactive, not sellable): every item number divisible by 33 (`ITM000033`, `ITM000066`, …) ≈ 3 %;
- STAT "10" (preliminary): item numbers with n % 97 == 50 (`ITM000050`, `ITM000147`, …) unless already "90", ≈ 1 %;
- STAT "20" (active): all others. See `inactive_items()`, `preliminary_items()`, `is_active()`.
LMDT is spread over the last 365 days. Balances per item x warehouse are derived lazily from (seed, item, warehouse)
so 100 000 items build in well under a second; allocations made by confirmed orders are kept on top.
Base prices: price list "STD", currency "EUR", valid from 1 January of last year to 2099-12-31, for every item.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

_PREFIXES = (
    "Nordic", "Alpine", "Atlas", "Baltic", "Coastal", "Delta", "Evergreen", "Falcon", "Granite", "Harbor",
    "Iron", "Juniper", "Keystone", "Lakeside", "Meridian", "Northern", "Orion", "Pioneer", "Summit", "Vertex",
)  # fmt: skip
_CORES = (
    "Machinery", "Tools", "Electric", "Supply", "Logistics", "Hydraulics", "Components", "Systems", "Engineering",
    "Trading", "Industries", "Metals", "Automation", "Packaging", "Fasteners",
)  # fmt: skip
_SUFFIXES = ("AB", "GmbH", "Ltd", "Inc", "BV", "SA", "Oy", "AS")
_PLACES = (
    ("SE", "Stockholm", "SV"), ("SE", "Gothenburg", "SV"), ("DE", "Hamburg", "DE"), ("DE", "Munich", "DE"),
    ("GB", "Leeds", "GB"), ("GB", "Bristol", "GB"), ("NL", "Utrecht", "NL"), ("FR", "Lyon", "FR"),
    ("FI", "Tampere", "FI"), ("NO", "Bergen", "NO"), ("US", "Chicago", "GB"), ("BE", "Ghent", "NL"),
)  # fmt: skip
_STREETS = ("Harbour Road", "Main Street", "Industrivägen", "Hafenstraße", "Station Road", "Mill Lane", "Parkweg")
_FIRST = ("Anna", "Erik", "Maria", "Lars", "Sofia", "Jonas", "Emma", "Peter", "Laura", "Mikael", "Julia", "Tom")
_LAST = ("Berg", "Schmidt", "Jones", "de Vries", "Martin", "Virtanen", "Hansen", "Smith", "Nilsson", "Weber")
_MATERIALS = ("Steel", "Brass", "Nylon", "Aluminium", "Copper", "Rubber", "Stainless", "Galvanized", "Plastic")
_NOUNS = (
    "Bolt", "Nut", "Washer", "Bearing", "Gasket", "Valve", "Hose", "Bracket", "Cable", "Filter", "Pump", "Sensor",
    "Clamp", "Fitting", "Spring", "Gear", "Seal", "Hinge",
)  # fmt: skip
_SIZES = ("M4", "M6", "M8", "M10", "M12", "10mm", "20mm", "50mm", "1/2in", "3/4in", "Small", "Large", "XL")
_UNITS = ("PCS", "PCS", "PCS", "EA", "EA", "KG")
_GROUPS = ("FAST", "FLUID", "ELEC", "MECH", "CONS")
_MODL = ("DHL", "UPS", "TRK")
_TEDL = ("FCA", "DAP", "EXW")
_DISCOUNTS = (Decimal(0), Decimal(0), Decimal(0), Decimal(5), Decimal(10), Decimal("2.5"))

PRICE_LIST = "STD"
PRICE_CURRENCY = "EUR"
PRICE_VALID_TO = date(2099, 12, 31)


def item_number(n: int) -> str:
    return f"ITM{n:06d}"


def item_status(n: int) -> str:
    """The seeded STAT of item n (see the module docstring)."""
    if n % 33 == 0:
        return "90"
    if n % 97 == 50:
        return "10"
    return "20"


@dataclass(slots=True)
class Item:
    itno: str
    itds: str
    fuds: str
    stat: str
    unms: str
    itgr: str
    itcl: str
    itty: str
    newe: Decimal
    lmdt: date
    rgdt: date
    price: Decimal

    def record(self) -> dict[str, object]:
        return {
            "STAT": self.stat, "ITNO": self.itno, "ITDS": self.itds, "FUDS": self.fuds, "UNMS": self.unms,
            "ITGR": self.itgr, "ITCL": self.itcl, "ITTY": self.itty, "STCD": 1, "BUAR": "", "RESP": "M3SIM",
            "PUUN": self.unms, "ALUN": self.unms, "SPUN": self.unms, "NEWE": self.newe,
            "GRWE": self.newe + Decimal("0.05"), "PRGP": "", "LMDT": self.lmdt, "RGDT": self.rgdt,
        }  # fmt: skip


@dataclass
class Balance:
    stqt: Decimal
    alqt: Decimal
    iddt: date
    oddt: date

    @property
    def available(self) -> Decimal:
        return max(self.stqt - self.alqt, Decimal(0))


@dataclass
class BatchOrder:
    """A temporary batch order (OIS100MI/AddBatchHead … Confirm). status: "" new, "15" rejected, "90" created."""

    orno: str
    head: dict[str, str]
    lines: list[dict[str, str]] = field(default_factory=list)
    status: str = ""
    errors: list[dict[str, str]] = field(default_factory=list)
    final_orno: str | None = None


@dataclass
class Order:
    """A customer order created by Confirm: head values and lines with computed prices and statuses."""

    orno: str
    head: dict[str, object]
    lines: list[dict[str, object]]


class Store:
    """All simulator data. Building it is cheap: customers and items eagerly, balances lazily."""

    def __init__(
        self, *, seed: int, customers: int, items: int, warehouses: list[str], company: int, division: str, today: date
    ) -> None:
        self.seed = seed
        self.company = company
        self.division = division
        self.today = today
        self.warehouses = list(warehouses)
        self.price_valid_from = date(today.year - 1, 1, 1)
        self.customers: dict[str, dict[str, object]] = {}
        self.customer_keys: list[str] = []  # sorted
        self.discounts: dict[str, Decimal] = {}
        self._build_customers(customers)
        self.item_count = items
        self.items: list[Item] = self._build_items(items)
        self._item_index = {item.itno: i for i, item in enumerate(self.items)}
        self._balances: dict[tuple[str, str], Balance] = {}
        self.batch_orders: dict[str, BatchOrder] = {}
        self.orders: dict[str, Order] = {}
        self._next_batch = 1
        self._next_order = 1000000001

    # --- customers ---------------------------------------------------------------------------------------------------
    def _build_customers(self, count: int) -> None:
        rnd = random.Random(self.seed)  # noqa: S311 - deterministic test data
        for n in range(1, count + 1):
            cuno = f"C{n:06d}"
            name = f"{rnd.choice(_PREFIXES)} {rnd.choice(_CORES)} {rnd.choice(_SUFFIXES)}"
            cscd, town, lncd = rnd.choice(_PLACES)
            slug = "".join(ch for ch in name.lower() if ch.isalnum())[:20]
            record: dict[str, object] = {
                "CONO": self.company, "DIVI": self.division, "LNCD": lncd, "CUNO": cuno, "CUNM": name,
                "CUA1": f"{rnd.randint(1, 199)} {rnd.choice(_STREETS)}", "CUA2": "", "CUA3": "", "CUA4": "",
                "PONO": f"{rnd.randint(10000, 99999)}",
                "PHNO": f"+{rnd.randint(30, 49)} {rnd.randint(1000000, 9999999)}",
                "PHN2": "", "TFNO": "", "CUTP": 0, "ALCU": slug[:10].upper(),
                "YREF": f"{rnd.choice(_FIRST)} {rnd.choice(_LAST)}", "MAIL": f"orders@{slug}.example.com",
                "CSCD": cscd, "STAT": "20", "LMDT": self.today - timedelta(days=rnd.randint(0, 364)),
                "RGDT": self.today - timedelta(days=rnd.randint(365, 3650)), "TOWN": town, "CUCD": PRICE_CURRENCY,
                "VRNO": f"{cscd}{rnd.randint(100000000, 999999999)}", "ORTP": "100",
                "WHLO": rnd.choice(self.warehouses) if self.warehouses else "", "FACI": "100", "PLTB": PRICE_LIST,
                "TEPY": "30", "MODL": rnd.choice(_MODL), "TEDL": rnd.choice(_TEDL), "PYNO": cuno,
                "CRLM": rnd.choice((10000, 25000, 50000, 100000)),
            }  # fmt: skip
            self.discounts[cuno] = rnd.choice(_DISCOUNTS)
            self.add_customer(record)

    def add_customer(self, record: dict[str, object]) -> None:
        cuno = str(record["CUNO"])
        self.customers[cuno] = record
        bisect.insort(self.customer_keys, cuno)

    def next_customer_number(self) -> str:
        n = len(self.customer_keys) + 1
        while f"C{n:06d}" in self.customers:
            n += 1
        return f"C{n:06d}"

    # --- items -------------------------------------------------------------------------------------------------------
    def _build_items(self, count: int) -> list[Item]:
        rnd = random.Random(self.seed * 7919 + 1)  # noqa: S311 - deterministic test data
        choice, randint, rand = rnd.choice, rnd.randint, rnd.random
        today = self.today
        items: list[Item] = []
        for n in range(1, count + 1):
            noun = choice(_NOUNS)
            itds = f"{choice(_MATERIALS)} {noun} {choice(_SIZES)}"
            items.append(
                Item(
                    itno=item_number(n),
                    itds=itds,
                    fuds=f"{itds}, {choice(_GROUPS).lower()} range",
                    stat=item_status(n),
                    unms=choice(_UNITS),
                    itgr=choice(_GROUPS),
                    itcl=noun[:5].upper(),
                    itty="FIN",
                    newe=Decimal(randint(1, 5000)) / 100,
                    lmdt=today - timedelta(days=int(rand() * 365)),
                    rgdt=today - timedelta(days=365 + randint(0, 1000)),
                    price=Decimal(randint(50, 200000)) / 100,
                )
            )
        return items

    def add_item(self, item: Item) -> None:
        """A new item, kept in item number order (the list transactions page through it)."""
        self.items.insert(self._bisect(item.itno), item)
        self._item_index = {known.itno: i for i, known in enumerate(self.items)}

    def item(self, itno: str) -> Item | None:
        index = self._item_index.get(itno)
        return self.items[index] if index is not None else None

    def items_from(self, start: str) -> list[Item]:
        """Items with ITNO >= start, in item number order (the items list is sorted by construction)."""
        return self.items[self._bisect(start) :]

    def _bisect(self, key: str) -> int:
        lo, hi = 0, len(self.items)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.items[mid].itno < key:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def inactive_items(self) -> list[str]:
        return [i.itno for i in self.items if i.stat == "90"]

    def preliminary_items(self) -> list[str]:
        return [i.itno for i in self.items if i.stat == "10"]

    def active_items(self) -> list[str]:
        return [i.itno for i in self.items if i.stat == "20"]

    # --- balances ----------------------------------------------------------------------------------------------------
    def balance(self, itno: str, whlo: str) -> Balance:
        key = (itno, whlo)
        found = self._balances.get(key)
        if found is None:
            rnd = random.Random(f"{self.seed}:bal:{itno}:{whlo}")  # noqa: S311 - deterministic test data
            stqt = 0 if rnd.random() < 0.15 else rnd.randint(1, 500)
            found = Balance(
                stqt=Decimal(stqt),
                alqt=Decimal(rnd.randint(0, stqt // 4)),
                iddt=self.today - timedelta(days=rnd.randint(1, 120)),
                oddt=self.today - timedelta(days=rnd.randint(0, 60)),
            )
            self._balances[key] = found
        return found

    # --- number series -----------------------------------------------------------------------------------------------
    def next_batch_number(self) -> str:
        number = f"T{self._next_batch:09d}"
        self._next_batch += 1
        return number

    def next_order_number(self) -> str:
        number = str(self._next_order)
        self._next_order += 1
        return number
