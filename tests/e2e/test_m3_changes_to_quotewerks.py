"""M3 changes reach QuoteWerks, and customers go both ways; every box a process.

A user edits a customer in M3 (ION simulator admin) → SyncCustomerPartyMaster BOD, delivered as ION does (IMS v3
multipartMessage) → bod-listener →
`m3.customer.changed.v1` → catalog-sync → QuoteWerks contact manager; a user edits it in QuoteWerks → webhook →
quote-ingest → `quotewerks.customer.changed.v1` → catalog-sync → CRS610MI (order-writer leaves linked customers
alone). Each write the bridge makes comes back as a change event on the other side, and must be recognised and
dropped (no ping-pong): the BODs M3 publishes and the webhooks QuoteWerks sends are counted to prove it. An order
moving on in M3 (SyncSalesOrder) shows on the quote it came from. State in PostgreSQL."""

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shared.customers import State, m3_state, party_state
from shared.quotewerks import party_from_contact
from simulators.processes import wait_until
from tests.customer_stack import Stack, customer_stack, settled

CUSTOMER = "C000012"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, module_postgres_url: str) -> Iterator[Stack]:
    with customer_stack(tmp_path_factory.mktemp, kafka_bootstrap, module_postgres_url) as started:
        yield started


def dump(stack: Stack) -> Callable[[], str]:
    return lambda: f"--- catalog-sync\n{stack.catalog.output[-3000:]}\n--- order-writer\n{stack.writer.output[-3000:]}"


def quotewerks_customer(stack: Stack, account: str) -> dict[str, Any]:
    record: dict[str, Any] = stack.quotewerks.api("GET", f"customers/{account}")
    return record


def same_customer(stack: Stack, number: str) -> tuple[State, State]:
    """Both sides' synced fields in one canonical form."""
    m3 = m3_state(stack.m3_customer(number))
    qw = party_state(party_from_contact(quotewerks_customer(stack, number)))
    return m3, qw


def test_an_m3_edit_reaches_quotewerks_and_is_not_echoed_back(stack: Stack) -> None:
    bods, hooks = stack.bods_generated(), stack.customer_webhooks()
    stack.ion.admin("POST", f"m3/customers/{CUSTOMER}", {"CUNM": "Edited In M3 AB", "TOWN": "Lund"})
    wait_until(
        "the M3 name in QuoteWerks",
        lambda: quotewerks_customer(stack, CUSTOMER)["Company"] == "Edited In M3 AB",
        dump=dump(stack),
    )
    # QuoteWerks announces the bridge's write; order-writer must see it and drop it as the bridge's own.
    wait_until(
        "order-writer to drop the echo",
        lambda: f"customer change {CUSTOMER}: ignored" in stack.writer.output,
        dump=dump(stack),
    )
    assert settled(lambda: (stack.bods_generated(), stack.customer_webhooks())) == (bods + 1, hooks + 1)
    assert stack.m3_customer(CUSTOMER)["CUNM"] == "Edited In M3 AB"
    [delivery] = [d for d in stack.ion.admin("GET", "bods")["last_deliveries"] if d["document_id"] == CUSTOMER]
    assert delivery["document"] == "Sync.CustomerPartyMaster"
    assert (delivery["result"], delivery["answers"], delivery["outcome"]) == ("delivered", ["202"], "published")
    record = quotewerks_customer(stack, CUSTOMER)
    assert (record["Company"], record["City"]) == ("Edited In M3 AB", "Lund")


def test_a_quotewerks_edit_reaches_m3_and_is_not_echoed_back(stack: Stack) -> None:
    bods, hooks = stack.bods_generated(), stack.customer_webhooks()
    current = quotewerks_customer(stack, CUSTOMER)
    body = {k: v for k, v in current.items() if k not in ("CMAccountNo", "LastModified")}
    stack.quotewerks.api("PUT", f"customers/{CUSTOMER}", {**body, "PhoneNumber": "+46 46 123 456"})  # QuoteWerks owns
    wait_until(
        "the QuoteWerks phone in M3",
        lambda: stack.m3_customer(CUSTOMER)["PHNO"] == "+46 46 123 456",
        dump=dump(stack),
    )
    wait_until(
        "catalog-sync to drop the echo",
        lambda: f"M3 customer change {CUSTOMER}: ignored" in stack.catalog.output,
        dump=dump(stack),
    )
    assert settled(lambda: (stack.bods_generated(), stack.customer_webhooks())) == (bods + 1, hooks + 1)


def test_after_edits_on_both_sides_both_hold_the_same_customer(stack: Stack) -> None:
    m3, qw = same_customer(stack, CUSTOMER)
    assert m3 == qw
    assert (m3["name"], m3["city"], m3["phone"]) == ("Edited In M3 AB", "Lund", "+46 46 123 456")


def test_an_m3_edit_of_a_field_quotewerks_owns_gets_quotewerks_value_back(stack: Stack) -> None:
    bods, hooks = stack.bods_generated(), stack.customer_webhooks()
    stack.ion.admin("POST", f"m3/customers/{CUSTOMER}", {"PHNO": "+46 99"})
    wait_until(
        "QuoteWerks' phone back in M3",
        lambda: stack.m3_customer(CUSTOMER)["PHNO"] == "+46 46 123 456",
        dump=dump(stack),
    )
    # The user's edit and the bridge's putting back: two BODs, no webhook (QuoteWerks was not written).
    assert settled(lambda: (stack.bods_generated(), stack.customer_webhooks())) == (bods + 2, hooks)
    assert quotewerks_customer(stack, CUSTOMER)["PhoneNumber"] == "+46 46 123 456"


def test_a_quotewerks_edit_of_a_field_m3_owns_gets_m3s_value_back(stack: Stack) -> None:
    bods, hooks = stack.bods_generated(), stack.customer_webhooks()
    current = quotewerks_customer(stack, CUSTOMER)
    body = {k: v for k, v in current.items() if k not in ("CMAccountNo", "LastModified")}
    stack.quotewerks.api("PUT", f"customers/{CUSTOMER}", {**body, "Company": "Renamed In QuoteWerks AB"})
    wait_until(
        "M3's name back in QuoteWerks",
        lambda: quotewerks_customer(stack, CUSTOMER)["Company"] == "Edited In M3 AB",
        dump=dump(stack),
    )
    # The user's edit and the bridge's putting back: two webhooks, no BOD (M3 was not written).
    assert settled(lambda: (stack.bods_generated(), stack.customer_webhooks())) == (bods, hooks + 2)
    assert stack.m3_customer(CUSTOMER)["CUNM"] == "Edited In M3 AB"


def test_a_new_m3_customer_appears_in_quotewerks_once(stack: Stack) -> None:
    before = {c["CMAccountNo"] for c in stack.quotewerks.api("GET", "customers")["customers"]}
    bods, hooks = stack.bods_generated(), stack.customer_webhooks()
    fields = {"CUNM": "Brand New Oy", "CUA1": "Katu 1", "TOWN": "Espoo", "PONO": "02100", "CSCD": "FI",
              "MAIL": "info@brandnew.example"}  # fmt: skip
    new_number = stack.ion.admin("POST", "m3/customers", fields)["CUNO"]
    assert new_number not in before
    wait_until(
        "the new customer in QuoteWerks",
        lambda: new_number in {c["CMAccountNo"] for c in stack.quotewerks.api("GET", "customers")["customers"]},
        dump=dump(stack),
    )
    # One BOD (the Add) and one webhook (the bridge's create), and the echo of that create dropped.
    assert settled(lambda: (stack.bods_generated(), stack.customer_webhooks())) == (bods + 1, hooks + 1)
    after = {c["CMAccountNo"] for c in stack.quotewerks.api("GET", "customers")["customers"]}
    assert after == before | {new_number}
    m3, qw = same_customer(stack, new_number)
    assert m3 == qw


def test_an_order_moving_on_in_m3_shows_on_its_quote(stack: Stack) -> None:
    stack.quotewerks.api("POST", "documents/AAAQ1001/approve")

    def header() -> dict[str, Any]:
        found: dict[str, Any] = stack.quotewerks.api("GET", "documents/AAAQ1001")["DocumentHeader"]
        return found

    written = wait_until("the order number on the quote", lambda: header().get("CustomText01"), dump=dump(stack))
    stack.ion.admin("POST", f"m3/orders/{written}", {"ORST": "66"})  # delivered
    wait_until(
        "the delivered status on the quote",
        lambda: header()["CustomText02"] == f"M3 order {written} for customer C000001, status 66",
        dump=lambda: f"{header()}\n{dump(stack)()}",
    )
    assert header()["CustomText01"] == written


def test_an_item_edited_in_m3_reaches_the_quotewerks_catalog_through_a_bod(stack: Stack) -> None:
    part = "ITM000021"
    stack.ion.admin("POST", f"m3/items/{part}", {"ITDS": "Pump impeller, bronze"})

    def product() -> dict[str, Any]:
        found: dict[str, Any] = stack.quotewerks.api("GET", f"products/{part}")
        return found

    wait_until("the new description in QuoteWerks", lambda: product()["Description"] == "Pump impeller, bronze",
               dump=dump(stack))  # fmt: skip
    assert product()["Active"] is True
    stack.ion.admin("POST", f"m3/items/{part}", {"STAT": "90"})  # no longer sold
    wait_until("the product to be inactive", lambda: product()["Active"] is False, dump=dump(stack))
    assert product()["Description"] == "Pump impeller, bronze"
    # Both BODs went as IMS v3 messages (NONE or BASE64 payloads, the simulator alternates) and were published.
    log = [d for d in stack.ion.admin("GET", "bods")["last_deliveries"] if d["document_id"] == part]
    assert [(d["document"], d["answers"][-1], d["outcome"]) for d in log] == [
        ("Sync.ItemMaster", "202", "published")
    ] * 2
    assert {d["encoding"] for d in log} <= {"NONE", "BASE64"}
