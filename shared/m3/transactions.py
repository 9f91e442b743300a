"""Which MI transactions change M3, declared once for the whole bridge.

A read can be sent again whenever its answer is lost. A write cannot: when its answer is lost after it was sent,
M3 may have done it, so the M3 client raises `M3OutcomeUnknownError` instead of retrying. The rule goes by
M3's naming conventions: reads start with Get, Lst, Search, Sel or Check. Anything else counts as a write,
so a transaction nobody has classified is never re-sent blindly.
"""

from __future__ import annotations

READ_PREFIXES = ("Get", "Lst", "List", "Search", "Sel", "Check")

# Programs that only describe the API and never change data.
READ_ONLY_PROGRAMS = frozenset({"MRS001MI"})


# The M3 programs each service calls (docs/m3-interfaces.md, "What the services call today"), MRS001MI being the
# client's own metadata look-up. Their circuit-breaker gauges are exported from the start, so a dashboard shows a
# closed circuit (0) before the first call; a program missing here still gets its gauge on its first call.
PROGRAMS_BY_SERVICE: dict[str, tuple[str, ...]] = {
    "order-writer": ("CRS610MI", "MMS200MI", "MRS001MI", "OIS100MI"),
    "catalog-sync": ("CRS610MI", "MMS200MI", "MRS001MI", "OIS017MI"),
    "inventory-query": ("MMS200MI", "MRS001MI", "OIS017MI"),
}


# Every MI transaction the bridge calls (docs/m3-interfaces.md): what Connect API Authorization must grant its user.
# `m3bridge doctor` probes each.
USED_TRANSACTIONS: dict[str, tuple[str, ...]] = {
    "CRS610MI": ("GetBasicData", "SearchCustomer", "LstByName", "LstByNumber", "Add", "ChgBasicData"),
    "MMS200MI": ("GetItmBasic", "GetItmWhsBal", "LstItmByItm", "LstItmByChgDate"),
    "OIS017MI": ("GetBasePrice", "LstBasePrice"),
    "OIS100MI": (
        "GetHead", "LstHead", "LstErrMsgOrder", "GetBatchHead", "LstBatchHead", "LstBatchLine", "AddBatchHead",
        "AddBatchLine", "Confirm", "DelBatchLine", "DelBatchHead",
    ),
}  # fmt: skip


def changes_m3(program: str, transaction: str) -> bool:
    """True when running `program/transaction` may change data in M3."""
    if program in READ_ONLY_PROGRAMS:
        return False
    return not transaction.startswith(READ_PREFIXES)
