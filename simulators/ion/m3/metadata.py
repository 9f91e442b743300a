"""The simulator's MI repository: programs, transactions, and their input/output fields (type, length, mandatory).

Names, types and lengths follow `shared/reference/m3-research.md` §2 (MRS001MI metadata captured by M3H5). The
transactions the seed material invented (CRS610MI/Get, Upd; OIS100MI/AddHead, AddLine, UpdHead; MMS200MI/LstItem;
MMS080MI/LstItemBal) are deliberately absent: they answer as unknown transactions, as M3 does.

A transaction spec is a string of tokens `CODE[*][:TLEN]`: `*` marks a mandatory input, `:A16` overrides the catalogue
type/length for that transaction (e.g. OIS100MI/GetLine types ORQT as A16).
"""

from __future__ import annotations

from simulators.ion.m3.core import FieldDef, ProgramDef, TransactionDef

# code: (type, length, description) - the most common definition (research §2 "Common codes").
CATALOGUE: dict[str, tuple[str, int, str]] = {
    "CONO": ("N", 3, "Company"),
    "DIVI": ("A", 3, "Division"),
    "LNCD": ("A", 2, "Language"),
    "CUNO": ("A", 10, "Customer"),
    "CUTM": ("A", 10, "Template customer"),
    "CUNM": ("A", 36, "Customer name"),
    "CUA1": ("A", 36, "Customer address line 1"),
    "CUA2": ("A", 36, "Customer address line 2"),
    "CUA3": ("A", 36, "Customer address line 3"),
    "CUA4": ("A", 36, "Customer address line 4"),
    "PONO": ("A", 10, "Postal code"),
    "PHNO": ("A", 16, "Telephone number 1"),
    "PHN2": ("A", 16, "Telephone number 2"),
    "TFNO": ("A", 16, "Facsimile transmission number"),
    "CUTP": ("N", 1, "Customer type"),
    "ALCU": ("A", 10, "Search key"),
    "YREF": ("A", 30, "Your reference"),
    "MAIL": ("A", 50, "E-mail address"),
    "CSCD": ("A", 3, "Country"),
    "STAT": ("A", 2, "Status"),
    "LMDT": ("D", 10, "Change date"),
    "RGDT": ("D", 10, "Entry date"),
    "LMTS": ("N", 18, "Timestamp"),
    "TOWN": ("A", 20, "City"),
    "CUCD": ("A", 3, "Currency"),
    "VRNO": ("A", 16, "VAT registration number"),
    "ERRM": ("A", 50, "Error message"),
    "ORTP": ("A", 3, "Customer order type"),
    "WHLO": ("A", 3, "Warehouse"),
    "WHNM": ("A", 36, "Warehouse name"),
    "FACI": ("A", 3, "Facility"),
    "PLTB": ("A", 10, "Price list table"),
    "TEPY": ("A", 3, "Payment terms"),
    "MODL": ("A", 3, "Delivery method"),
    "TEDL": ("A", 3, "Delivery terms"),
    "PYNO": ("A", 10, "Payer"),
    "CRLM": ("N", 15, "Credit limit 1"),
    "SQRY": ("A", 256, "Search query"),
    "ITNO": ("A", 15, "Item number"),
    "ITDS": ("A", 30, "Name"),
    "FUDS": ("A", 60, "Description 2"),
    "UNMS": ("A", 3, "Basic unit of measure"),
    "ITGR": ("A", 8, "Item group"),
    "ITCL": ("A", 5, "Product group"),
    "ITTY": ("A", 3, "Item type"),
    "STCD": ("N", 1, "Inventory accounting"),
    "BUAR": ("A", 3, "Business area"),
    "RESP": ("A", 10, "Responsible"),
    "PUUN": ("A", 3, "Purchase order U/M"),
    "ALUN": ("A", 3, "Alternate U/M"),
    "SPUN": ("A", 3, "Sales price U/M"),
    "NEWE": ("N", 11, "Net weight"),
    "GRWE": ("N", 11, "Gross weight"),
    "PRGP": ("A", 3, "Procurement group"),
    "REOP": ("N", 17, "Reorder point"),
    "SSQT": ("N", 17, "Safety stock"),
    "EOQT": ("N", 17, "Economic order quantity"),
    "ORTY": ("A", 3, "Order type"),
    "STQT": ("N", 17, "On-hand balance approved"),
    "QUQT": ("N", 17, "On-hand balance for inspection"),
    "RJQT": ("N", 17, "Rejected on-hand balance"),
    "ALQT": ("N", 17, "Allocated quantity"),
    "AV01": ("N", 17, "Allocatable on-hand balance"),
    "AVAL": ("N", 17, "Available quantity"),
    "PLQT": ("N", 17, "Picking list quantity"),
    "ORQT": ("N", 17, "Ordered quantity"),
    "REQT": ("N", 17, "Reserved quantity"),
    "IDDT": ("D", 10, "Last receipt date"),
    "ODDT": ("D", 10, "Last issue date"),
    "FLMD": ("D", 10, "From change date"),
    "TLMD": ("D", 10, "To change date"),
    "CSDS": ("A", 1, "Customer-specific description"),
    "ORNO": ("A", 10, "Customer order number"),
    "RLDT": ("D", 10, "Requested delivery date"),
    "CUOR": ("A", 20, "Customer's order number"),
    "AGNT": ("A", 10, "Agent"),
    "SMCD": ("A", 10, "Salesperson"),
    "ADID": ("A", 6, "Address number"),
    "OREF": ("A", 30, "Reference"),
    "ORDT": ("D", 10, "Order date"),
    "CUDT": ("D", 10, "Customer order date"),
    "OFNO": ("A", 10, "Quotation number"),
    "TEL2": ("A", 16, "Telephone number 2"),
    "PONR": ("N", 5, "Order line number"),
    "POSX": ("N", 3, "Line suffix"),
    "ATNR": ("N", 17, "Attribute number"),
    "DWDT": ("D", 10, "Requested delivery date"),
    "CUPO": ("N", 7, "Customer's order line number"),
    "SAPR": ("N", 18, "Sales price"),
    "DIP1": ("N", 7, "Discount percent 1"),
    "DIP2": ("N", 7, "Discount percent 2"),
    "DIA1": ("N", 16, "Discount amount 1"),
    "SACD": ("N", 5, "Sales price quantity"),
    "CTYP": ("A", 1, "Confirmation type"),
    "LEVL": ("A", 2, "Level"),
    "MDTA": ("A", 132, "Message data"),
    "TX60": ("A", 60, "Message text"),
    "MSID": ("A", 7, "Message ID"),
    "ORSL": ("A", 2, "Lowest status - customer order"),
    "ORST": ("A", 2, "Highest status - customer order"),
    "NTAM": ("N", 15, "Net order value"),
    "ORVA": ("N", 16, "Order value"),
    "TOAM": ("N", 16, "Total order value"),
    "LNAM": ("N", 15, "Line amount"),
    "DLQT": ("A", 16, "Delivered quantity"),
    "IVQT": ("A", 16, "Invoiced quantity"),
    "AVTQ": ("A", 16, "Available-to-promise quantity"),
    "AVTD": ("A", 8, "Available-to-promise date"),
    "WHSL": ("A", 10, "Location"),
    "BANO": ("A", 20, "Lot number"),
    "STAS": ("A", 1, "Balance identity status"),
    "PRRF": ("A", 10, "Price list"),
    "FVDT": ("D", 10, "From date"),
    "LVDT": ("D", 10, "To date"),
    "OBV1": ("A", 15, "Start value 1"),
    "OBV2": ("A", 15, "Start value 2"),
    "OBV3": ("A", 15, "Start value 3"),
    "NETP": ("N", 13, "Net price"),
    "PRMO": ("A", 1, "Price origin"),
    "ORQA": ("N", 17, "Ordered quantity - alternate U/M"),
    "MINM": ("A", 10, "Program name"),
    "MIDS": ("A", 60, "Program description"),
    "TRNM": ("A", 15, "Transaction name"),
    "TRDS": ("A", 60, "Transaction description"),
    "TRTP": ("A", 1, "Transaction type (I/O)"),
    "FLNM": ("A", 10, "Field name"),
    "FLDS": ("A", 60, "Field description"),
    "FRPO": ("N", 3, "From position"),
    "TOPO": ("N", 3, "To position"),
    "LENG": ("N", 3, "Length"),
    "TYPE": ("A", 1, "Field type"),
    "MAND": ("A", 1, "Mandatory"),
}


def _fields(spec: str) -> tuple[FieldDef, ...]:
    result: list[FieldDef] = []
    for token in spec.split():
        code, _, override = token.partition(":")
        mandatory = code.endswith("*")
        code = code.rstrip("*")
        ftype, length, description = CATALOGUE[code]
        if override:
            ftype, length = override[0], int(override[1:])
        result.append(FieldDef(code, ftype, length, description, mandatory))
    return tuple(result)


_CUSTOMER_EDIT = "CUA2 CUA3 CUA4 PONO PHNO PHN2 TFNO CUTP ALCU YREF MAIL CSCD STAT TOWN CUCD VRNO"
_CUSTOMER_LIST_OUT = (
    "CUNO CUNM CUA1 CUA2 CUA3 CUA4 PONO TOWN CSCD PHNO MAIL STAT CUTP CUCD ORTP WHLO TEPY MODL TEDL PYNO CRLM VRNO LMDT"
)
_ITEM_BASIC_OUT = "STAT ITNO ITDS FUDS UNMS ITGR ITCL ITTY STCD BUAR RESP PUUN ALUN SPUN NEWE GRWE PRGP LMDT RGDT"
_ITEM_LIST_OUT = "ITNO ITDS FUDS STAT UNMS ITGR ITCL ITTY LMDT"
_LINE_OUT = "ORNO PONR POSX ITNO ITDS ORQT:A16 ALUN SAPR:A18 DIP1 DIA1 WHLO ORST ALQT:A16 DLQT IVQT LNAM:N16 CUOR DWDT"

# program: (description, {transaction: (description, inputs, outputs, is_list)})
_SPEC: dict[str, tuple[str, dict[str, tuple[str, str, str, bool]]]] = {
    "MRS001MI": (
        "MI repository",
        {
            "LstPrograms": ("List MI programs", "", "MINM MIDS", True),
            "LstTransactions": ("List transactions of a program", "MINM*", "MINM TRNM TRDS", True),
            "LstFields": (
                "List fields of a transaction",
                "MINM* TRNM* TRTP*",
                "FLNM FLDS FRPO TOPO LENG TYPE MAND",
                True,
            ),
        },
    ),
    "CRS610MI": (
        "Customer interface",
        {
            "Add": (
                "Add customer",
                f"CONO DIVI LNCD CUTM* CUNO CUNM* CUA1* {_CUSTOMER_EDIT}",
                "CUNO ERRM",
                False,
            ),
            "ChgBasicData": ("Change basic data", f"CONO CUNO* CUNM CUA1 {_CUSTOMER_EDIT}", "", False),
            "GetBasicData": (
                "Get basic data",
                "CONO CUNO*",
                "CONO DIVI LNCD CUNO CUNM CUA1 CUA2 CUA3 CUA4 PONO PHNO PHN2 TFNO CUTP ALCU YREF MAIL CSCD STAT "
                "LMDT TOWN CUCD VRNO RGDT",
                False,
            ),
            "GetOrderInfo": ("Get order info", "CONO CUNO*", "CUNO ORTP WHLO FACI PLTB MODL TEDL TEPY CUCD", False),
            "LstByNumber": ("List customers by number", "CONO CUNO LMTS", _CUSTOMER_LIST_OUT, True),
            "LstByName": ("List customers by name", "CONO CUNM LMTS", _CUSTOMER_LIST_OUT, True),
            "SearchCustomer": ("Search customers", "SQRY*", "CUNO CUNM CUA1 TOWN CSCD MAIL STAT", True),
        },
    ),
    "MMS200MI": (
        "Item toolbox interface",
        {
            "GetItmBasic": ("Get item basic data", "CONO ITNO* LNCD", _ITEM_BASIC_OUT, False),
            "Get": ("Get item", "ITNO* LNCD", _ITEM_BASIC_OUT, False),
            "GetItmWhsBasic": (
                "Get item warehouse basic data",
                "CONO WHLO* ITNO*",
                "WHLO ITNO WHNM STAT FACI REOP SSQT EOQT ORTY",
                False,
            ),
            "GetItmWhsBal": (
                "Get item warehouse balance",
                "CONO WHLO* ITNO*",
                "WHLO ITNO FACI STQT QUQT RJQT ALQT AV01 AVAL PLQT ORQT REQT IDDT ODDT",
                False,
            ),
            "LstItmByItm": ("List items by item number", "CONO ITNO*", _ITEM_LIST_OUT, True),
            "LstItmByChgDate": ("List items by change date", "CONO FLMD TLMD CSDS LNCD", _ITEM_LIST_OUT, True),
            "SearchItem": ("Search items", "SQRY*", "ITNO ITDS STAT UNMS", True),
        },
    ),
    "OIS100MI": (
        "Customer order interface",
        {
            "AddBatchHead": (
                "Add batch order head",
                "CONO CUNO* LNCD ORTP RLDT FACI CUOR AGNT SMCD MODL TEDL YREF TEPY PYNO ADID CUCD OREF OFNO TEL2 CUDT "
                "ORDT WHLO PLTB",
                "ORNO",
                False,
            ),
            "AddBatchLine": (
                "Add batch order line",
                "CONO ORNO* ITNO* ORQT:N16 WHLO DWDT CUPO SAPR DIP1 DIA1 ALUN ITDS CUOR:A20 SPUN SACD ADID",
                "PONR POSX ATNR",
                False,
            ),
            "Confirm": ("Confirm batch order", "CONO ORNO* CTYP", "ORNO STAT", False),
            # M3H5 OIS100MIResource.cs: inputs; LstBatchHeadResponse.cs / GetBatchHeadResponse.cs /
            # LstBatchLineResponse.cs: outputs (sources in docs/m3-interfaces.md).
            "GetBatchHead": (
                "Retrieve batch order head information",
                "CONO ORNO*",
                "ORNO ORTP ORDT STAT FACI CUOR YREF MODL TEDL TEPY CUCD RLDT ORSL ORST",
                False,
            ),
            "LstBatchHead": (
                "Retrieve customer order head information",
                "CONO CUNO* ORSL ORST",
                "ORNO ORTP RLDT STAT FACI CUOR MODL TEDL YREF ORDT ORSL ORST",
                True,
            ),
            "LstBatchLine": (
                "List all order lines for given batch order",
                "CONO ORNO*",
                "ITNO ITDS ORQT:A16 WHLO CUPO DWDT SAPR:A18 DIA1 PONR POSX ATNR",
                True,
            ),
            "DelBatchHead": ("Delete batch order head record", "CONO ORNO*", "", False),
            "DelBatchLine": ("Delete batch order line", "CONO ORNO* PONR* POSX", "", False),
            "LstErrMsgOrder": ("List error messages of a batch order", "CONO ORNO*", "LEVL MDTA TX60 MSID", True),
            "GetHead": (
                "Get order head",
                "CONO ORNO*",
                "ORNO CUNO CUOR ORTP ORDT STAT ORSL ORST FACI WHLO RLDT CUCD MODL TEDL YREF NTAM ORVA TOAM",
                False,
            ),
            "LstHead": (
                "List order heads",
                "CONO CUNO* ORSL ORST",
                "ORNO CUNO CUOR ORTP ORDT ORSL ORST WHLO RLDT CUCD NTAM",
                True,
            ),
            "GetLine": ("Get order line", "CONO ORNO* PONR* POSX", _LINE_OUT, False),
            "LstLine": ("List order lines", "CONO ORNO* ORST ITNO", _LINE_OUT, True),
            "GetATP": ("Get available to promise", "CONO ITNO* WHLO* DWDT", "ITNO WHLO AVTQ UNMS AVTD", False),
            "DelHead": ("Delete order", "CONO ORNO*", "", False),
        },
    ),
    "MMS060MI": (
        "Detailed item balances",
        {
            "LstViaItem": (
                "List balances via item",
                "CONO ITNO*",
                "WHLO ITNO WHSL BANO STQT:N11 ALQT:N11 STAS",
                True,
            ),
        },
    ),
    "OIS017MI": (
        "Sales price list interface",
        {
            "GetBasePrice": (
                "Get base price",
                "CONO PRRF* CUCD* CUNO FVDT* ITNO* OBV1 OBV2 OBV3",
                "PRRF CUCD CUNO FVDT ITNO SAPR:N19 LVDT SPUN SACD",
                False,
            ),
            "LstBasePrice": (
                "List base prices",
                "CONO PRRF* CUCD* CUNO FVDT*",
                "PRRF CUCD FVDT ITNO SAPR:N19 LVDT SPUN SACD",
                True,
            ),
        },
    ),
    "OIS320MI": (
        "Price and discount interface",
        {
            "GetPriceLine": (
                "Get price line",
                "CONO CUNO* ITNO* FACI WHLO ORDT ORQA ALUN CUCD ORTP PRRF",
                "SAPR:N13 NETP:N13 LNAM:N15 DIP1 DIP2 PRRF PRMO SPUN CUCD",
                False,
            ),
        },
    ),
}


def _build() -> dict[str, ProgramDef]:
    programs: dict[str, ProgramDef] = {}
    for program, (pdesc, transactions) in _SPEC.items():
        tdefs = {
            name: TransactionDef(program, name, tdesc, _fields(inputs), _fields(outputs), is_list)
            for name, (tdesc, inputs, outputs, is_list) in transactions.items()
        }
        programs[program] = ProgramDef(program, pdesc, tdefs)
    return programs


PROGRAMS: dict[str, ProgramDef] = _build()


def transaction(program: str, name: str) -> TransactionDef | None:
    prog = PROGRAMS.get(program)
    return prog.transactions.get(name) if prog else None
