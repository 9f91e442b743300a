"""The plan builder: which quote lines are ordered, `plan_customer`, `plan_order` and the `describe` dry run."""

from __future__ import annotations

import json
from collections.abc import Mapping

from shared.contracts import LineAttribute, LineType, QuoteApproved, QuoteLine
from shared.mapping.fields import _Builder, _Context
from shared.mapping.results import CustomerPlan, OrderPlan, PlannedLine, Refusal, SkippedLine
from shared.mapping.rules import (
    CUSTOMER_ADD,
    LINE_KEY,
    ORDER_CONFIRM,
    ORDER_HEAD,
    ORDER_LINE,
    LineSelection,
    MappingRules,
    Transaction,
)


def _merge_lengths(
    rules: MappingRules, given: Mapping[str, Mapping[str, int]], transaction: Transaction
) -> dict[str, int]:
    return {**rules.field_lengths.get(transaction, {}), **given.get(transaction, {})}


def select_lines(
    quote: QuoteApproved, selection: LineSelection
) -> tuple[list[int], list[SkippedLine], list[Refusal], list[str]]:
    """Which quote lines become order lines: (ordered indexes, skipped, refusals, notes)."""
    ordered: list[int] = []
    skipped: list[SkippedLine] = []
    refusals: list[Refusal] = []
    notes: list[str] = []
    group_unselected_by: int | None = None  # index of the unselected option group's header, while in it

    def skip(index: int, line: QuoteLine, reason: str) -> None:
        skipped.append(SkippedLine(source_line=index, line_type=line.line_type.name.lower(), reason=reason))

    for index, line in enumerate(quote.lines):
        attributes = line.line_attributes
        is_member = bool(attributes & LineAttribute.GROUP_MEMBER)
        unselected_option = bool(attributes & LineAttribute.OPTION) and not attributes & LineAttribute.OPTION_SELECTED
        kind = line.line_type
        if kind is LineType.GROUP_HEADER:
            group_unselected_by = index if unselected_option else None
            reason = (
                "unselected option group (header)" if unselected_option else "group header; its members are ordered"
            )
            skip(index, line, reason)
            continue
        if not is_member:
            group_unselected_by = None
        elif group_unselected_by is not None:
            skip(index, line, f"member of the unselected option group headed by line {group_unselected_by}")
            continue
        if kind is LineType.COMMENT:
            skip(index, line, "comment line")
        elif kind in (LineType.SUBTOTAL, LineType.RUNNING_SUBTOTAL):
            skip(index, line, "subtotal line")
        elif kind is LineType.HEADING:
            skip(index, line, "heading line")
        elif kind is LineType.SUMMARY:
            skip(index, line, "summary line")
        elif kind in (LineType.PERCENT_DISCOUNT, LineType.PERCENT_CHARGE):
            name = "percent discount" if kind is LineType.PERCENT_DISCOUNT else "percent charge"
            policy = selection.percent_discount if kind is LineType.PERCENT_DISCOUNT else selection.percent_charge
            if policy == "skip":
                skip(index, line, f"{name} line (line_selection says skip; the M3 order total will differ)")
                notes.append(f"line {index}: {name} line not ordered; the M3 order value differs from the quote")
            else:
                refusals.append(
                    Refusal(
                        field="",
                        value=line.description[:200],
                        rule=f"line_selection.{kind.name.lower()}",
                        reason=f"line {index}: a {name} line has no M3 order-line equivalent; price it by hand",
                    )
                )
        elif unselected_option:
            skip(index, line, "unselected option")
        elif line.qty_total == 0 and selection.zero_quantity != "order":
            if selection.zero_quantity == "skip":
                skip(index, line, "quantity 0")
            else:
                refusals.append(
                    Refusal(
                        field="ORQT",
                        value="0",
                        rule="line_selection.zero_quantity",
                        reason=f"line {index}: quantity 0",
                    )
                )
        else:
            ordered.append(index)
    return ordered, skipped, refusals, notes


def plan_customer(
    quote: QuoteApproved, rules: MappingRules, *, field_lengths: Mapping[str, Mapping[str, int]]
) -> CustomerPlan:
    """CRS610MI/Add inputs for the quote's customer, from the first address block the rules choose."""
    choice = rules.customer.party
    party_name = next((name for name in choice.use_first_of if getattr(getattr(quote, name), choice.chosen_by)), "")
    if not party_name:
        blocks = ", ".join(choice.use_first_of)
        return CustomerPlan(
            refusals=[
                Refusal(
                    field="",
                    rule="customer.party",
                    reason=f"customer: none of {blocks} has a {choice.chosen_by}; cannot create the customer",
                )
            ]
        )
    context = _Context(quote=quote, defaults=rules.defaults, party=getattr(quote, party_name))
    lengths = _merge_lengths(rules, field_lengths, CUSTOMER_ADD)
    builder = _Builder("customer", rules, lengths, context, "customer")
    builder.apply_all()
    notes = list(builder.notes)
    if party_name != choice.use_first_of[0]:
        notes.insert(0, f"customer: taken from {party_name} ({choice.use_first_of[0]} has no {choice.chosen_by})")
    return CustomerPlan(party=party_name, fields=builder.fields, notes=notes, refusals=builder.refusals)


def plan_order(
    quote: QuoteApproved,
    rules: MappingRules,
    *,
    customer_number: str,
    field_lengths: Mapping[str, Mapping[str, int]],
    customer: CustomerPlan | None = None,
) -> OrderPlan:
    """The OIS100MI calls for `quote`. Pass `customer` (from plan_customer) when the customer is created first;
    `customer_number` may then be empty: the number CRS610MI/Add returns goes into CUNO."""
    refusals: list[Refusal] = []
    head_lengths = _merge_lengths(rules, field_lengths, ORDER_HEAD)
    head = _Builder("order_head", rules, head_lengths, _Context(quote=quote, defaults=rules.defaults), "head")
    number = customer_number.strip()
    if number:
        limit = head_lengths.get("CUNO", 10)
        if len(number) > limit:
            head.refuse("CUNO", number, "customer_number", f"{len(number)} characters exceed the {limit} of CUNO")
        head.fields["CUNO"] = number
    elif customer is None:
        head.refuse("CUNO", "", "customer_number", "no M3 customer number and no customer to create")
    else:
        head.fields["CUNO"] = ""
    head.apply_all()

    ordered, skipped, line_refusals, notes = select_lines(quote, rules.line_selection)
    notes = [*head.notes, *notes]
    refusals = [*head.refusals, *line_refusals]
    planned: list[PlannedLine] = []
    line_lengths = _merge_lengths(rules, field_lengths, ORDER_LINE)
    for index in ordered:
        context = _Context(quote=quote, defaults=rules.defaults, line=quote.lines[index])
        builder = _Builder("order_line", rules, line_lengths, context, f"line {index}")
        builder.apply_all()
        builder.fields[LINE_KEY] = str(index + 1)
        planned.append(PlannedLine(source_line=index, fields=builder.fields))
        notes.extend(builder.notes)
        refusals.extend(builder.refusals)
    if not ordered:
        refusals.append(Refusal(field="", rule="line_selection", reason="the quote has no line to order"))
    return OrderPlan(
        doc_no=quote.doc_no,
        revision=quote.revision,
        customer=customer,
        head=head.fields,
        lines=planned,
        skipped=skipped,
        notes=notes,
        refusals=refusals,
    )


# --- Dry run ----------------------------------------------------------------------------------------------


def _fields_text(fields: Mapping[str, str]) -> str:
    return json.dumps(dict(fields), ensure_ascii=False)


def describe(plan: OrderPlan) -> str:
    """A human-readable dry run: the M3 calls in order, skipped lines, notes and refusals."""
    out: list[str] = []
    state = "HELD (refusals below): nothing would be sent to M3" if plan.held else "ready to send"
    out.append(f"Quote {plan.doc_no} revision {plan.revision}: {state}")
    out.append("M3 calls:")
    step = 0

    def call(name: str, fields: Mapping[str, str], comment: str = "") -> None:
        nonlocal step
        step += 1
        out.append(f"  {step}. {name} {_fields_text(fields)}{comment}")

    head = dict(plan.head)
    if plan.customer is not None:
        call(CUSTOMER_ADD, plan.customer.fields, f"  # from {plan.customer.party}" if plan.customer.party else "")
        if not head.get("CUNO"):
            head["CUNO"] = "<CUNO from CRS610MI/Add>"
    call(ORDER_HEAD, head)
    for line in plan.lines:
        call(ORDER_LINE, {"ORNO": "<ORNO from AddBatchHead>", **line.fields}, f"  # quote line {line.source_line}")
    call(ORDER_CONFIRM, {"ORNO": "<ORNO from AddBatchHead>"})
    if plan.skipped:
        out.append("Skipped quote lines:")
        out.extend(f"  - line {s.source_line} ({s.line_type}): {s.reason}" for s in plan.skipped)
    notes = [*(plan.customer.notes if plan.customer else []), *plan.notes]
    if notes:
        out.append("Notes:")
        out.extend(f"  - {note}" for note in notes)
    refusals = [*(plan.customer.refusals if plan.customer else []), *plan.refusals]
    if refusals:
        out.append("Refusals (the order is held):")
        for refusal in refusals:
            what = f"{refusal.field} " if refusal.field else ""
            value = f" (value {refusal.value!r})" if refusal.value else ""
            out.append(f"  - {what}[{refusal.rule}] {refusal.reason}{value}")
    return "\n".join(out)


def preview(quote: QuoteApproved, rules: MappingRules) -> str:
    """The M3 calls `rules` make of the quote, offline (the rules' own field lengths, the customer as the mapping
    would create it): what `m3bridge work show` prints."""
    customer = plan_customer(quote, rules, field_lengths={})
    return describe(plan_order(quote, rules, customer_number="", field_lengths={}, customer=customer))
