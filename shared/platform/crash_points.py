"""Named crash points: the places where a crash between two lines would matter, which a test can turn into one.

A crash can come between any two lines; these are the lines after which the bridge has done something another
system can see (a row committed, a message on the broker, a write sent to M3) and before it has recorded or told
the rest. A test arms them with `M3B_CRASH_POINTS` (a comma-separated list of `name`, `name:exit`, `name:stall`,
optionally `@n` for the n-th time the point is passed, e.g. `order-writer.after-confirm:exit@2`):

- `exit` (the default) ends the process at once with CRASH_EXIT_CODE, as SIGKILL or an OOM kill would: no
  finally blocks, no shutdown hooks, no flushing of anything but the one log line that says so;
- `stall` never returns from the point (the rest of the process, heartbeats included, goes on), as a handler
  stuck in a call far longer than any timeout.

Unarmed (production), `crash_point` is one dictionary look-up. `POINTS` lists every point with what a crash there
leaves behind; a test checks that the code passes exactly these.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger(__name__)

CRASH_EXIT_CODE = 86
"""The exit status of a process ended at a crash point (tests tell it from a real failure)."""

Action = Literal["exit", "stall"]

POINTS: dict[str, str] = {
    "quote-ingest.after-claim": "the approval's claim and its outbox row are committed; nothing is published yet",
    "outbox.after-publish": "a recorded message is on the broker; its outbox row is not deleted yet (sent again)",
    "bod-listener.after-claim": "the BOD's claim and its events' outbox rows are committed; nothing is published",
    "order-writer.after-customer-claim": "the new customer is recorded as being created; CRS610MI/Add not sent",
    "order-writer.after-customer-add": "CRS610MI/Add answered; the customer number is not recorded yet",
    "order-writer.after-batch-head": "AddBatchHead answered; its batch order number is not recorded yet",
    "order-writer.after-lines": "the batch order's lines are added; Confirm not sent",
    "order-writer.after-confirm": "Confirm answered; the ledger does not say confirmed yet",
    "order-writer.before-result": "the ledger says confirmed; the order result is not published yet",
    "order-writer.before-commit": "the order result is published; the consumed offset is not committed yet",
}


@dataclass(frozen=True)
class Armed:
    action: Action
    on_pass: int


_armed: dict[str, Armed] = {}
_passes: dict[str, int] = {}


class CrashPointError(ValueError):
    """M3B_CRASH_POINTS names a point or an action that does not exist."""


def parse(spec: str) -> dict[str, Armed]:
    """`name[:exit|:stall][@n],...` → the armed points; raises CrashPointError naming what is wrong."""
    armed: dict[str, Armed] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name_action, _, nth = part.partition("@")
        name, _, action = name_action.partition(":")
        action = action or "exit"
        if name not in POINTS:
            raise CrashPointError(f"unknown crash point {name!r}; known: {', '.join(sorted(POINTS))}")
        if action not in ("exit", "stall"):
            raise CrashPointError(f"crash point {name}: action {action!r} is neither 'exit' nor 'stall'")
        try:
            on_pass = int(nth) if nth else 1
        except ValueError:
            raise CrashPointError(f"crash point {name}: '@{nth}' is not a pass number") from None
        if on_pass < 1:
            raise CrashPointError(f"crash point {name}: pass numbers start at 1")
        armed[name] = Armed("stall" if action == "stall" else "exit", on_pass)
    return armed


def arm(spec: str) -> None:
    """Arm the points `spec` names (replacing any armed before); '' disarms them all."""
    _armed.clear()
    _passes.clear()
    _armed.update(parse(spec))
    for name, armed in _armed.items():
        log.warning("crash point %s armed: %s on pass %d", name, armed.action, armed.on_pass)


async def crash_point(name: str) -> None:
    """Passes the point `name` (one of POINTS): nothing, unless a test armed it for this pass."""
    armed = _armed.get(name)
    if armed is None:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] != armed.on_pass:
        return
    if armed.action == "stall":
        log.warning("crash point %s: stalling here for good", name)
        await asyncio.Event().wait()
    # Straight to stderr: the logging handlers may buffer, and nothing else will run.
    sys.stderr.write(f"crash point {name}: exiting now ({CRASH_EXIT_CODE})\n")
    sys.stderr.flush()
    os._exit(CRASH_EXIT_CODE)
