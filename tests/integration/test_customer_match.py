"""`m3bridge customers match` before go-live, against the ION simulator (through token-service, as catalog-sync
calls M3) and the QuoteWerks simulator's contact manager, with catalog-sync's settings: a QuoteWerks list with
spelling variants of M3 customers is matched to them, ambiguous ones are candidate lists, and without `--dry-run`
the single matches are linked."""

import contextlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from m3bridge.cli import main
from simulators.stack import IonSim, QuoteWerksSim, TokenService, start_ion, start_quotewerks, start_token_service

KEYS = {"catalog-sync": "cs-key-123456"}


@dataclass
class Stack:
    ion: IonSim
    token_service: TokenService
    quotewerks: QuoteWerksSim


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Stack]:
    with contextlib.ExitStack() as started:
        ion = start_ion(tmp_path_factory.mktemp("ion"))
        started.callback(ion.stop)
        token_service = start_token_service(ion, kafka_bootstrap, KEYS)
        started.callback(token_service.stop)
        quotewerks = start_quotewerks("http://127.0.0.1:9/unused", "unused-secret")
        started.callback(quotewerks.stop)
        yield Stack(ion, token_service, quotewerks)


@pytest.fixture
def catalog_sync_env(stack: Stack, module_postgres_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in {
        "M3B_STATE_URL": module_postgres_url, "M3B_TOKEN_SERVICE_URL": stack.token_service.url,
        "M3B_TOKEN_SERVICE_KEY": KEYS["catalog-sync"], "M3B_QUOTEWERKS_URL": stack.quotewerks.url,
        "M3B_QUOTEWERKS_API_KEY": stack.quotewerks.api_key, "M3B_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)


def m3_customer(stack: Stack, **fields: str) -> str:
    number: str = stack.ion.admin("POST", "m3/customers", {"CUA1": "1 Main Street", **fields})["CUNO"]
    return number


def quotewerks_customer(stack: Stack, account: str, **columns: str) -> None:
    stack.quotewerks.api("PUT", f"customers/{account}", columns)


def report(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["customers", "match", *args, "--json"]) == 0
    found: dict[str, Any] = json.loads(capsys.readouterr().out)
    return found


def test_spelling_variants_find_their_m3_customers_and_ambiguity_is_a_candidate_list(
    stack: Stack, catalog_sync_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    tag = uuid.uuid4().hex[:6].upper()
    fjord = m3_customer(stack, CUNM=f"Fjordline {tag} Hydraulics AS", PONO="5003", CSCD="NO", TOWN="Bergen")
    cafe = m3_customer(stack, CUNM=f"Café {tag} Nordique SA", PONO="75001", CSCD="FR", TOWN="Paris")
    baltic = m3_customer(stack, CUNM=f"Baltic {tag} Valves Oy", PONO="", CSCD="FI", TOWN="Espoo")
    north = m3_customer(stack, CUNM=f"North {tag} Trading", MAIL=f"buyer-{tag.lower()}@north.example", CSCD="SE")
    delta_1 = m3_customer(stack, CUNM=f"Delta {tag} Tools Ltd", PONO="M1 1AA", CSCD="GB")
    delta_2 = m3_customer(stack, CUNM=f"Delta {tag} Tools Limited", PONO="M11AA", CSCD="GB")
    variants = {
        f"V1{tag}": ({"Company": f"FJORDLINE {tag} HYDRAULICS", "PostalCode": "5003", "Country": "NO"}, fjord),
        f"V2{tag}": ({"Company": f"Cafe {tag} Nordique", "PostalCode": "75 001", "Country": "FR"}, cafe),
        f"V3{tag}": ({"Company": f"Baltik {tag} Valves", "Country": "FI"}, baltic),
        f"V4{tag}": ({"Company": "Someone Else", "Email": f"Buyer-{tag}@North.example"}, north),
        f"V5{tag}": ({"Company": f"delta {tag} tools", "PostalCode": "m1 1aa", "Country": "GB"}, None),
        f"V6{tag}": ({"Company": f"Unknown {tag} Widgets", "Country": "GB"}, None),
    }
    for account, (columns, _) in variants.items():
        quotewerks_customer(stack, account, **columns)
    dry = report(capsys, "--dry-run")
    rows = {row["quotewerks_customer"]: row for row in dry["rows"]}
    found = {account: (rows[account]["result"], rows[account].get("m3_customer"), rows[account]["key"])
             for account in variants}  # fmt: skip
    assert found == {
        f"V1{tag}": ("one", fjord, "name_and_place"),
        f"V2{tag}": ("one", cafe, "name_and_place"),
        f"V3{tag}": ("one", baltic, "similar_name"),
        f"V4{tag}": ("one", north, "email"),
        f"V5{tag}": ("several", None, "name_and_place"),
        f"V6{tag}": ("none", None, None),
    }
    assert set(rows[f"V5{tag}"]["candidates"]) == {delta_1, delta_2}
    assert dry["linked_now"] == 0
    # For real: the single matches are linked (catalog-sync merges them); a second run finds them linked.
    done = report(capsys)
    assert done["linked_now"] >= 4
    again = {row["quotewerks_customer"]: row for row in report(capsys, "--dry-run")["rows"]}
    assert [again[f"V{n}{tag}"]["result"] for n in range(1, 7)] == ["linked"] * 4 + ["several", "none"]
    # The ambiguous one is linked by hand, once.
    assert main(["customers", "link", f"V5{tag}", delta_2]) == 0
    assert main(["customers", "link", f"V6{tag}", delta_2]) == 2
    assert f"M3 customer {delta_2} is linked to QuoteWerks customer V5{tag}" in capsys.readouterr().err
    assert main(["customers", "links", f"V5{tag}", "--json"]) == 0
    [link] = json.loads(capsys.readouterr().out)
    assert (link["m3_customer"], link["linked_by"]) == (delta_2, "person")
    assert main(["links", f"V5{tag}", "--json"]) == 0  # the short form
    assert json.loads(capsys.readouterr().out) == [link]
    assert main(["customers", "unlink", f"V5{tag}"]) == 0
    capsys.readouterr()
    assert main(["customers", "links", f"V5{tag}", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_the_report_is_readable_text_by_default(
    stack: Stack, catalog_sync_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["customers", "match", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "QuoteWerks customers against" in text
    assert "dry run: nothing linked" in text
