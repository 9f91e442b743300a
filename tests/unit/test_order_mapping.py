"""The declarative quote → M3 order mapping (shared/mapping/, deploy/config/order-mapping.yaml)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.contracts import QuoteApproved
from shared.mapping import (
    MappingRules,
    MappingRulesError,
    OrderPlan,
    describe,
    load_rules,
    parse_formula,
    plan_customer,
    plan_order,
    rules_from_data,
)

pytestmark = pytest.mark.unit

MAPPING_FILE = Path(__file__).resolve().parents[2] / "deploy" / "config" / "order-mapping.yaml"
RAW_RULES: dict[str, Any] = yaml.safe_load(MAPPING_FILE.read_text(encoding="utf-8"))

ADDRESS = {
    "Company": "Acme Ltd",
    "Contact": "Ann Buyer",
    "Address1": "1 Main Street",
    "City": "Springfield",
    "PostalCode": "12345",
    "Country": "Sweden",
    "PhoneNumber": "+46 8 123 45",
    "Email": "buyer@acme.example",
}
PRODUCT = {"LineType": 1, "ManufacturerPartNumber": "WIDGET-1", "QtyTotal": "2", "UnitPrice": "19.90"}


def make_quote(lines: list[dict[str, Any]] | None = None, **header: Any) -> QuoteApproved:
    wire: dict[str, Any] = {
        "DocNo": "AAAQ1001",
        "ShipVia": "UPS Ground",
        "SoldTo": dict(ADDRESS),
        "Lines": lines if lines is not None else [dict(PRODUCT)],
        "ApprovedAt": "2026-11-23T10:00:00Z",
    }
    wire.update(header)
    return QuoteApproved.model_validate(wire)


def rules_with(change: Callable[[dict[str, Any]], None]) -> MappingRules:
    data = copy.deepcopy(RAW_RULES)
    change(data)
    return rules_from_data(data)


def rule_for(data: dict[str, Any], section: str, target: str) -> dict[str, Any]:
    rule: dict[str, Any] = next(r for r in data[section]["fields"] if r["target"] == target)
    return rule


def plan(quote: QuoteApproved, rules: MappingRules | None = None, **kwargs: Any) -> OrderPlan:
    return plan_order(
        quote, rules or load_rules(MAPPING_FILE), customer_number="C1001", field_lengths=kwargs.pop("lengths", {})
    )


@pytest.fixture(scope="module")
def rules() -> MappingRules:
    return load_rules(MAPPING_FILE)


# --- loading and validation ---


def test_shipped_yaml_loads(rules: MappingRules) -> None:
    assert rules.defaults["ORTP"] == "100"
    assert "delivery_methods" in rules.lookups
    assert rules.order_head.fields[0].target == "CUOR"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: rule_for(d, "order_head", "MODL").update(lookup="nope"),
            r"order_head\.fields\[\d+\] \(MODL\).*nope",
        ),
        (lambda d: rule_for(d, "order_head", "MODL").update(source="ship_by"), r"\(MODL\).*'ship_by'"),
        (lambda d: rule_for(d, "order_head", "ORTP").update(colour="red"), r"order_head\.fields\[\d+\]\.colour"),
        (lambda d: rule_for(d, "order_head", "ORTP").update(on_too_long="explode"), r"order_head\.fields\[\d+\]"),
        (lambda d: rule_for(d, "customer", "CUNM").update(on_too_long="split"), r"customer\.fields\[1\].*continue_in"),
        (
            lambda d: rule_for(d, "order_head", "MODL").update(source="lines[].qty_total"),
            r"only available in order_line",
        ),
        (lambda d: rule_for(d, "order_head", "CUOR").update(source="customer_po_number"), r"order_head: .*CUOR"),
        (lambda d: d["order_head"]["fields"].append({"target": "CUNO", "value": "X"}), r"CUNO is set by the order"),
        (lambda d: d["order_head"]["fields"].append({"target": "ORTP", "value": "200"}), r"\(ORTP\): never applied"),
        (lambda d: d["order_head"]["fields"].append({"target": "ZZZZ", "value": "1"}), r"no fallback length for ZZZZ"),
        (lambda d: d["lookups"]["units"].update(on_unknown="default"), r"lookups\.units.*default"),
        (lambda d: rule_for(d, "order_head", "ORTP").update(when={"source": "doc_no"}), r"exactly one of equals"),
    ],
)
def test_invalid_rules_are_refused_naming_the_rule(change: Callable[[dict[str, Any]], None], message: str) -> None:
    with pytest.raises(MappingRulesError, match=message):
        rules_with(change)


def test_load_rules_names_the_file_and_reports_bad_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "mapping.yaml"
    bad.write_text("version: 1\ncustomer: [unclosed\n", encoding="utf-8")
    with pytest.raises(MappingRulesError, match="not YAML"):
        load_rules(bad)
    bad.write_text(yaml.safe_dump({**RAW_RULES, "version": 2}), encoding="utf-8")
    with pytest.raises(MappingRulesError, match=rf"{bad.name}.*\nversion:"):
        load_rules(bad)


@pytest.mark.parametrize(
    "formula",
    ["__import__('os')", "lines[].qty_total.__class__", "open('x')", "lines[].qty_total ** 2", "1; 2", "a[0]", "(1"],
)
def test_formulas_are_arithmetic_on_paths_only(formula: str) -> None:
    def change(data: dict[str, Any]) -> None:
        data["order_line"]["fields"].append({"target": "DIA1", "formula": formula})

    with pytest.raises(MappingRulesError, match=r"order_line\.fields\[\d+\]"):
        rules_with(change)


def test_formula_parser_accepts_arithmetic() -> None:
    parse_formula("(lines[].unit_list - lines[].unit_price) * 100 / lines[].unit_list")
    parse_formula("-2 + 3.5 * (4 - 1)")
    with pytest.raises(ValueError, match="unexpected"):
        parse_formula("lines[].qty_total(1)")


# --- order head and lines ---


def test_doc_no_lands_in_cuor_on_head_and_every_line() -> None:
    quote = make_quote([dict(PRODUCT), {**PRODUCT, "ManufacturerPartNumber": "WIDGET-2"}])
    result = plan(quote)
    assert result.head["CUOR"] == "AAAQ1001"
    assert result.head["CUNO"] == "C1001"
    assert [line.fields["CUOR"] for line in result.lines] == ["AAAQ1001", "AAAQ1001"]
    assert not result.refusals


def test_doc_no_too_long_for_cuor_is_refused_not_truncated() -> None:
    result = plan(make_quote(DocNo="Q" * 21))
    assert "CUOR" not in result.head
    assert {refusal.field for refusal in result.refusals} == {"CUOR"}
    assert result.held


@pytest.mark.parametrize(("ship_via", "modl"), [("UPS Ground", "UPG"), ("ups ground", "UPG"), ("FEDEX GROUND", "FXG")])
def test_ship_via_lookup_ignores_case(ship_via: str, modl: str) -> None:
    assert plan(make_quote(ShipVia=ship_via)).head["MODL"] == modl


def test_unknown_ship_via_uses_the_table_default_with_a_note() -> None:
    result = plan(make_quote(ShipVia="Carrier pigeon"))
    assert result.head["MODL"] == "STD"
    assert any("Carrier pigeon" in note and "default" in note for note in result.notes)
    assert not result.refusals


def test_empty_ship_via_leaves_modl_to_m3() -> None:
    assert "MODL" not in plan(make_quote(ShipVia="")).head


def test_unknown_ship_via_with_refusal_policy_is_refused() -> None:
    rules = rules_with(lambda d: d["lookups"]["delivery_methods"].update(on_unknown="refuse"))
    result = plan(make_quote(ShipVia="Carrier pigeon"), rules)
    assert "MODL" not in result.head
    [refusal] = result.refusals
    assert refusal.field == "MODL"
    assert refusal.value == "Carrier pigeon"
    assert refusal.rule.startswith("order_head.fields[")
    assert result.held


def test_line_selection_skips_non_order_lines_with_reasons() -> None:
    lines = [
        dict(PRODUCT),  # 0 ordered
        {"LineType": 2, "Description": "Deliver to the back door"},  # 1 comment
        {"LineType": 4, "Description": "Subtotal"},  # 2
        {**PRODUCT, "ManufacturerPartNumber": "OPT-NO", "LineAttributes": 16},  # 3 unselected option
        {**PRODUCT, "ManufacturerPartNumber": "OPT-YES", "LineAttributes": 16 | 256},  # 4 selected option
        {"LineType": 8, "Description": "Backup bundle", "LineAttributes": 16},  # 5 unselected option group
        {**PRODUCT, "ManufacturerPartNumber": "IN-GROUP", "LineAttributes": 8},  # 6 its member
        {"LineType": 8, "Description": "Install bundle", "LineAttributes": 16 | 256},  # 7 selected group
        {**PRODUCT, "ManufacturerPartNumber": "GROUP-OK", "LineAttributes": 8},  # 8 its member
        {"LineType": 256, "Description": "Services"},  # 9 heading
        {"LineType": 16, "Description": "Running subtotal"},  # 10
        {"LineType": 512, "Description": "Summary"},  # 11
        {**PRODUCT, "ManufacturerPartNumber": "FREE", "QtyTotal": "0"},  # 12 zero quantity
    ]
    result = plan(make_quote(lines))
    assert [(line.source_line, line.fields["ITNO"]) for line in result.lines] == [
        (0, "WIDGET-1"),
        (4, "OPT-YES"),
        (8, "GROUP-OK"),
    ]
    reasons = {skipped.source_line: skipped.reason for skipped in result.skipped}
    assert set(reasons) == {1, 2, 3, 5, 6, 7, 9, 10, 11, 12}
    assert reasons[1] == "comment line"
    assert reasons[2] == "subtotal line"
    assert reasons[3] == "unselected option"
    assert "unselected option group" in reasons[5]
    assert "headed by line 5" in reasons[6]
    assert reasons[9] == "heading line"
    assert reasons[12] == "quantity 0"
    assert not result.refusals


def test_percent_discount_line_holds_the_order_by_default_or_is_skipped_when_configured() -> None:
    lines = [dict(PRODUCT), {"LineType": 64, "Description": "5% loyalty discount"}]
    held = plan(make_quote(lines))
    assert held.held
    assert held.refusals[0].rule == "line_selection.percent_discount"
    rules = rules_with(lambda d: d["line_selection"].update(percent_discount="skip"))
    sent = plan(make_quote(lines), rules)
    assert not sent.held
    assert sent.skipped[0].source_line == 1
    assert any("order value differs" in note for note in sent.notes)


def test_a_quote_with_nothing_to_order_is_held() -> None:
    result = plan(make_quote([{"LineType": 2, "Description": "just words"}]))
    assert result.held
    assert result.refusals[-1].rule == "line_selection"


def test_missing_part_number_is_refused() -> None:
    result = plan(make_quote([{**PRODUCT, "ManufacturerPartNumber": ""}]))
    assert [refusal.field for refusal in result.refusals] == ["ITNO"]


def test_quantities_and_prices_are_exact_decimal_strings() -> None:
    line = {**PRODUCT, "QtyTotal": "1E+2", "UnitPrice": "0.10", "UnitOfMeasure": "each"}
    fields = plan(make_quote([line])).lines[0].fields
    assert fields["ORQT"] == "100"
    assert fields["SAPR"] == "0.10"
    assert fields["ALUN"] == "PCS"
    big = {**PRODUCT, "QtyTotal": "12345678901234567"}
    result = plan(make_quote([big]))
    assert "ORQT" not in result.lines[0].fields
    assert [refusal.field for refusal in result.refusals] == ["ORQT"]


def test_list_price_and_discount_percent_when_the_quote_priced_from_list() -> None:
    line = {**PRODUCT, "UnitList": "100.00", "DiscountPercent": "12.5", "UnitPrice": "87.50"}
    fields = plan(make_quote([line])).lines[0].fields
    assert fields["SAPR"] == "100.00"
    assert fields["DIP1"] == "12.5"
    net_only = plan(make_quote([dict(PRODUCT)])).lines[0].fields
    assert net_only["SAPR"] == "19.90"
    assert "DIP1" not in net_only


def test_discount_formulas_give_the_right_amount_and_percent() -> None:
    def change(data: dict[str, Any]) -> None:
        fields = data["order_line"]["fields"]
        data["order_line"]["fields"] = [f for f in fields if f["target"] != "DIP1"]
        data["order_line"]["fields"] += [
            {"target": "DIA1", "formula": "lines[].unit_list * lines[].discount_percent / 100 * lines[].qty_total"},
            {
                "target": "DIP1",
                "formula": "(lines[].unit_list - lines[].unit_price) * 100 / lines[].unit_list",
                "decimals": 2,
            },
        ]

    rules = rules_with(change)
    line = {**PRODUCT, "QtyTotal": "3", "UnitList": "19.99", "DiscountPercent": "10", "UnitPrice": "17.99"}
    fields = plan(make_quote([line]), rules).lines[0].fields
    assert fields["DIA1"] == "5.997"
    assert fields["DIP1"] == "10.01"
    # no list price: the formulas have no value and the fields are left out
    plain = plan(make_quote([dict(PRODUCT)]), rules).lines[0].fields
    assert "DIA1" not in plain
    assert "DIP1" not in plain
    # division by zero gives no value either
    zero = plan(make_quote([{**PRODUCT, "UnitList": "0"}]), rules).lines[0].fields
    assert "DIP1" not in zero


def test_when_conditions() -> None:
    def change(data: dict[str, Any]) -> None:
        data["order_head"]["fields"][1:1] = [
            {
                "target": "ORTP",
                "value": "EXP",
                "when": {"source": "ship_via", "in": ["DHL Express", "UPS Next Day Air"]},
            },
            {"target": "ORTP", "value": "WEB", "when": {"source": "approval_event", "equals": "quotevalet.accepted"}},
            {
                "target": "YREF",
                "source": "customer_po_number",
                "when": {"source": "customer_po_number", "not_empty": True},
            },
        ]

    rules = rules_with(change)
    assert plan(make_quote(ShipVia="dhl express"), rules).head["ORTP"] == "EXP"
    assert plan(make_quote(ApprovalEvent="QuoteValet.Accepted"), rules).head["ORTP"] == "WEB"
    assert plan(make_quote(), rules).head["ORTP"] == "100"
    assert plan(make_quote(CustomerPONumber="PO-77"), rules).head["YREF"] == "PO-77"
    assert plan(make_quote(), rules).head["YREF"] == "Ann Buyer"


def test_lengths_from_m3_metadata_override_the_fallbacks() -> None:
    result = plan(make_quote(DocNo="AAAQ1001-LONG"), lengths={"OIS100MI/AddBatchHead": {"CUOR": 10}})
    assert "CUOR" not in result.head
    assert result.lines[0].fields["CUOR"] == "AAAQ1001-LONG"


# --- customer ---


def test_customer_fields_from_sold_to(rules: MappingRules) -> None:
    customer = plan_customer(make_quote(), rules, field_lengths={})
    assert customer.party == "sold_to"
    assert customer.fields == {
        "CUTM": "C000001",
        "CUNM": "Acme Ltd",
        "CUA1": "1 Main Street",
        "PONO": "12345",
        "TOWN": "Springfield",
        "CSCD": "SE",
        "PHNO": "+46 8 123 45",
        "MAIL": "buyer@acme.example",
        "YREF": "Ann Buyer",
    }
    assert not customer.refusals
    assert not customer.notes


def test_customer_falls_back_to_bill_to(rules: MappingRules) -> None:
    quote = make_quote(SoldTo={"Contact": "Nobody"}, BillTo={**ADDRESS, "Company": "Acme Billing"})
    customer = plan_customer(quote, rules, field_lengths={})
    assert customer.party == "bill_to"
    assert customer.fields["CUNM"] == "Acme Billing"
    assert "bill_to" in customer.notes[0]
    nobody = plan_customer(make_quote(SoldTo={}), rules, field_lengths={})
    assert nobody.refusals[0].rule == "customer.party"


def test_long_customer_name_is_truncated_with_a_note(rules: MappingRules) -> None:
    name = "The International Widget and Gadget Manufacturing Company"
    customer = plan_customer(make_quote(SoldTo={**ADDRESS, "Company": name}), rules, field_lengths={})
    assert customer.fields["CUNM"] == name[:36].rstrip()
    assert any("CUNM truncated to 36" in note for note in customer.notes)
    assert not customer.refusals


def test_long_customer_name_is_refused_when_the_rule_says_refuse() -> None:
    rules = rules_with(lambda d: rule_for(d, "customer", "CUNM").update(on_too_long="refuse"))
    name = "The International Widget and Gadget Manufacturing Company"
    customer = plan_customer(make_quote(SoldTo={**ADDRESS, "Company": name}), rules, field_lengths={})
    assert "CUNM" not in customer.fields
    [refusal] = customer.refusals
    assert (refusal.field, refusal.value, refusal.rule) == ("CUNM", name, "customer.fields[1]")
    order = plan_order(make_quote(), rules, customer_number="", field_lengths={}, customer=customer)
    assert order.held


def test_long_address_continues_in_the_next_field(rules: MappingRules) -> None:
    address = {
        **ADDRESS,
        "Address1": "Building 7, Industrial Estate North, Gate 4",
        "Address2": "Attn. Goods Reception",
    }
    customer = plan_customer(make_quote(SoldTo=address), rules, field_lengths={})
    assert customer.fields["CUA1"] == "Building 7, Industrial Estate North,"
    assert customer.fields["CUA2"] == "Gate 4"
    assert customer.fields["CUA3"] == "Attn. Goods Reception"
    assert "CUA4" not in customer.fields
    assert any("continues in the next" in note for note in customer.notes)


def test_address_that_does_not_fit_anywhere_is_refused(rules: MappingRules) -> None:
    address = {**ADDRESS, "Address1": "word " * 20, "Address2": "second line", "Address3": "third line"}
    customer = plan_customer(make_quote(SoldTo=address), rules, field_lengths={"CRS610MI/Add": {"CUA1": 36}})
    assert customer.refusals[0].field == "CUA1"
    assert "CUA1" not in customer.fields


def test_missing_address_is_refused(rules: MappingRules) -> None:
    customer = plan_customer(make_quote(SoldTo={"Company": "Acme Ltd"}), rules, field_lengths={})
    assert [refusal.field for refusal in customer.refusals] == ["CUA1"]


def test_too_long_email_is_refused_and_long_country_not_cut(rules: MappingRules) -> None:
    address = {**ADDRESS, "Email": "x" * 45 + "@acme.example", "Country": "Republic of Atlantis"}
    customer = plan_customer(make_quote(SoldTo=address), rules, field_lengths={})
    assert {refusal.field for refusal in customer.refusals} == {"MAIL", "CSCD"}


# --- dry run ---


def test_describe_lists_the_calls_in_order(rules: MappingRules) -> None:
    quote = make_quote([dict(PRODUCT), {"LineType": 2, "Description": "note"}, {**PRODUCT, "QtyTotal": "5"}])
    customer = plan_customer(quote, rules, field_lengths={})
    order = plan_order(quote, rules, customer_number="", field_lengths={}, customer=customer)
    text = describe(order)
    calls = [line.split()[1] for line in text.splitlines() if line.strip()[:2].rstrip(".").isdigit()]
    assert calls == [
        "CRS610MI/Add",
        "OIS100MI/AddBatchHead",
        "OIS100MI/AddBatchLine",
        "OIS100MI/AddBatchLine",
        "OIS100MI/Confirm",
    ]
    assert "ready to send" in text
    assert '"CUNO": "<CUNO from CRS610MI/Add>"' in text
    assert '"CUOR": "AAAQ1001"' in text
    assert "line 1 (comment): comment line" in text


def test_describe_shows_refusals_and_notes() -> None:
    rules = rules_with(lambda d: d["lookups"]["delivery_methods"].update(on_unknown="refuse"))
    text = describe(plan(make_quote(ShipVia="Carrier pigeon", DocNo="X" * 25), rules))
    assert text.splitlines()[0].endswith("HELD (refusals below): nothing would be sent to M3")
    assert "CRS610MI/Add" not in text
    assert "Refusals (the order is held):" in text
    assert "MODL [order_head.fields[" in text
    assert "CUOR [order_head.fields[0]]" in text


def test_line_breaks_in_quote_text_become_spaces(rules: MappingRules) -> None:
    address = {**ADDRESS, "Company": "Acme\r\nLtd", "Address1": "1 Main\tStreet"}
    customer = plan_customer(make_quote(SoldTo=address), rules, field_lengths={})
    assert customer.fields["CUNM"] == "Acme Ltd"
    assert customer.fields["CUA1"] == "1 Main Street"


def test_numeric_yaml_constants_are_read_as_text() -> None:
    rules = rules_with(lambda d: rule_for(d, "order_head", "ORTP").update(source=None, value=200))
    assert plan(make_quote(), rules).head["ORTP"] == "200"


def test_m3_lengths_decide_truncation(rules: MappingRules) -> None:
    customer = plan_customer(make_quote(), rules, field_lengths={"CRS610MI/Add": {"CUNM": 4}})
    assert customer.fields["CUNM"] == "Acme"
    assert customer.notes
