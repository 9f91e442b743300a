"""The chaos table: one row per scenario, defect columns red when not zero."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from tests.chaos.measure import Row

COLUMNS = (
    ("sent", "quotes sent", False),
    ("confirmed", "orders confirmed", False),
    ("no_outcome", "no outcome", True),
    ("multi_order", ">1 order", True),
    ("lines_differ", "lines differ", True),
    ("dup_customers", "dup customers", True),
    ("orphan_batches", "orphan batch orders", True),
    ("false_failures", "false failures", True),
    ("wrong_outcome", "wrong outcome", True),
    ("poison_lost", "poison not dead-lettered", True),
)


def _letters(row: Row) -> str:
    if not row.dead_letters:
        return "-"
    short = {"order-writer": "ow", "quote-ingest": "qi", "catalog-sync": "cs", "bod-listener": "bl",
             "inventory-query": "iq"}  # fmt: skip
    shown = []
    for key, count in row.dead_letters.items():
        service, _, error_class = key.partition(":")
        shown.append(f"{short.get(service, service)} {error_class} {count}")
    return ", ".join(shown)


def _drain(row: Row) -> str:
    return f">{row.drain_deadline_s:.0f}s (deadline)" if row.drain_s is None else f"{row.drain_s:.1f}s"


def render(rows: list[Row], console: Console | None = None) -> None:
    caption = (
        "Defects (red unless 0): no outcome, >1 order, lines differ (item, quantity, net price), dup customers, "
        "orphan batch orders (unconfirmed, left in M3), false failures (failed shown/sent although the order "
        "exists), wrong outcome (orderable not ordered, unorderable not held with its reason, wrong number on the "
        "quote), poison not dead-lettered. Drain: last approval until every quote shows an outcome."
    )
    table = Table(title="M3 Bridge chaos: ground truth per scenario", caption=caption, show_lines=True)
    table.add_column("scenario", max_width=16)
    for _, title, _ in COLUMNS:
        table.add_column(title, justify="right", max_width=12)
    table.add_column("held ok / must hold", justify="right", max_width=10)
    table.add_column("poison sent", justify="right", max_width=8)
    table.add_column("dead letters by class", max_width=40)
    table.add_column("drain", justify="right", max_width=12)
    for row in rows:
        cells = [row.scenario]
        for name, _, defect in COLUMNS:
            value = int(getattr(row, name))
            cells.append(f"[bold red]{value}[/]" if defect and value else str(value))
        held = f"{row.held_ok}/{row.must_hold}"
        cells += [held, str(row.poison_sent), _letters(row), _drain(row)]
        table.add_row(*cells)
    (console or Console(width=200)).print(table)
