"""Declarative mapping of an approved QuoteWerks quote to the M3 calls that create the customer order.

The rules live in YAML (`deploy/config/order-mapping.yaml`) so integration teams can change them without code:
constants, lookup tables (ShipVia → MODL, Terms → TEPY, ...), and per-field rules for `CRS610MI/Add` (customer),
`OIS100MI/AddBatchHead` (order head) and `OIS100MI/AddBatchLine` (each order line). Everything here is a plain
function of (quote, rules, field lengths): no M3 calls, no I/O except reading the YAML file in `load_rules`.

A plan never raises for a bad quote: what cannot be mapped becomes a `Refusal`, and an order with refusals is held.

This package's public interface is the names below (`__all__`): import them from `shared.mapping`, not
from its modules, which are laid out by concern and may move:

- `formula`: the formula language (tokenizer, parser, evaluator);
- `rules`: the rules model, its validation and `load_rules`;
- `results`: what a plan holds (`OrderPlan`, `CustomerPlan`, `Refusal`, ...);
- `fields`: applying one section's field rules to one quote context;
- `plan`: the plan builder (`select_lines`, `plan_customer`, `plan_order`), the `describe` dry run and `preview`.
"""

from shared.mapping.formula import parse_formula
from shared.mapping.plan import describe, plan_customer, plan_order, preview, select_lines
from shared.mapping.results import CustomerPlan, OrderPlan, PlannedLine, Refusal, SkippedLine
from shared.mapping.rules import (
    CUSTOMER_ADD,
    LINE_KEY,
    ORDER_CONFIRM,
    ORDER_HEAD,
    ORDER_LINE,
    TRANSACTIONS,
    Condition,
    CustomerSection,
    FieldRule,
    LineSelection,
    LookupTable,
    MappingRules,
    MappingRulesError,
    PartyChoice,
    PartyName,
    Section,
    SectionName,
    Transaction,
    country_table,
    load_rules,
    rules_from_data,
)

__all__ = [
    "CUSTOMER_ADD",
    "LINE_KEY",
    "ORDER_CONFIRM",
    "ORDER_HEAD",
    "ORDER_LINE",
    "TRANSACTIONS",
    "Condition",
    "CustomerPlan",
    "CustomerSection",
    "FieldRule",
    "LineSelection",
    "LookupTable",
    "MappingRules",
    "MappingRulesError",
    "OrderPlan",
    "PartyChoice",
    "PartyName",
    "PlannedLine",
    "Refusal",
    "Section",
    "SectionName",
    "SkippedLine",
    "Transaction",
    "country_table",
    "describe",
    "load_rules",
    "parse_formula",
    "plan_customer",
    "plan_order",
    "preview",
    "rules_from_data",
    "select_lines",
]
