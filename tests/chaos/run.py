"""One chaos scenario end to end: a fresh stack, the quotes, approvals with the scenario's chaos, drain, measure."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from m3bridge import dead_letters
from shared.platform.settings import BridgeSettings
from tests.chaos.faults import Chaos
from tests.chaos.measure import Row, collect, ion_admin, judge, wait_drained, wait_m3_quiet
from tests.chaos.quotes import approve, create_documents, plan_quotes
from tests.chaos.stack import ChaosStack


@dataclass(frozen=True)
class Options:
    quotes: int = 300
    rate: float = 4.0  # approvals per second
    seed: int = 42
    drain_timeout_s: float = 600.0
    poison: int = 12  # poison messages in the scenarios that send them
    run_dir: Path = Path("var/chaos")
    verbose: bool = False
    late_504: str = "both"  # arrives | client-timeout | both (see Chaos.m3_faults)
    max_down_s: float = 12.0  # a killed process stays down 0.5-1 x max_down_s before it is started again


def _faults(chaos: Chaos, window: float, options: Options) -> None:
    chaos.m3_faults(window, options.late_504)


def _kills(chaos: Chaos, window: float, options: Options) -> None:
    per_minute = max(1, round(window / 60))
    services = {"order-writer": 2 * per_minute, "quote-ingest": per_minute, "token-service": per_minute}
    chaos.kills(window, services, options.max_down_s)


def _storm(chaos: Chaos, window: float, options: Options) -> None:
    chaos.storm_and_expiry(window)


def _poison(chaos: Chaos, window: float, options: Options) -> None:
    chaos.poison(window, options.poison)


def _everything(chaos: Chaos, window: float, options: Options) -> None:
    for part in (_faults, _kills, _storm, _poison):
        part(chaos, window, options)


#: Scenario (f): order-writer replicas, and how long a frozen one stays frozen (the stack's session timeout is 6 s).
REPLICAS = 3
FROZEN_S = 15.0


def _zombies(chaos: Chaos, window: float, options: Options) -> None:
    chaos.m3_faults(window, options.late_504)
    chaos.freezes(window, chaos.stack.writers, max(2, round(window / 30)), FROZEN_S)


def short_lane(chaos: Chaos, window: float, options: Options) -> None:
    """`make test`'s lane: M3 faults, one SIGKILL of order-writer mid-run, a few poison messages."""
    chaos.m3_faults(window, options.late_504)
    chaos.add(0.5 * window, "SIGKILL order-writer + restart", chaos.restart_action("order-writer"), lane="order-writer")
    chaos.poison(window, options.poison)


Builder = Callable[[Chaos, float, Options], None]
SCENARIOS: dict[str, tuple[str, Builder]] = {
    "a": ("M3 faults: 15 % dropped, 5 % late 504, 5 % 5xx", _faults),
    "b": ("SIGKILL order-writer, quote-ingest, token-service", _kills),
    "c": ("429 storm 10 s + all tokens expired", _storm),
    "d": ("all at once (a+b+c+e)", _everything),
    "e": ("malformed and oversized messages on the quote topic", _poison),
    "f": (
        f"{REPLICAS} order-writers, one frozen past the session timeout at a time (zombies), M3 faults, then "
        "every dead letter replayed",
        _zombies,
    ),
}
#: Scenarios run with several order-writer replicas, and those that replay every dead letter after the drain.
REPLICATED = {"f": REPLICAS}
REPLAYED = {"f"}
#: The scenario column of the table.
SHORT = {"a": "a M3 faults", "b": "b kills", "c": "c 429s+tokens", "d": "d all at once", "e": "e poison",
         "f": "f zombies+replay"}  # fmt: skip


async def replay_every_dead_letter(stack: ChaosStack) -> int:
    """`m3bridge dead-letters replay --service order-writer` for every letter, as an operator would after an
    incident (held quotes, quotes given up on): none may become a second order."""
    settings = BridgeSettings(kafka_bootstrap_servers=stack.bootstrap, service_name="m3bridge-cli",
                              state_url=f"sqlite+aiosqlite:///{stack.run_dir / 'cli-state.db'}")  # fmt: skip
    letters = await dead_letters.read_all(settings, "order-writer")
    sent, _ = await dead_letters.replay_remembered(settings, "order-writer", letters, again=False, dry_run=False)
    return sent


def say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


async def run_scenario(name: str, options: Options, *, builder: Builder | None = None, label: str = "") -> Row:
    title, scenario_builder = SCENARIOS.get(name, (label, builder))
    assert scenario_builder is not None
    run_dir = options.run_dir / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    stack = ChaosStack(run_dir, seed=options.seed, order_writers=REPLICATED.get(name, 1))
    say(f"[{name}] {title}: starting the stack (logs in {run_dir})")
    await asyncio.to_thread(stack.start)
    row = Row(scenario=SHORT.get(name, name), drain_deadline_s=options.drain_timeout_s)
    try:
        async with httpx.AsyncClient() as http:
            quotes = plan_quotes(options.quotes, options.seed)
            await create_documents(http, stack.qw_url, quotes)
            baseline = {c["CUNO"] for c in (await ion_admin(http, stack.ion_url, "customers"))["customers"]}
            window = options.quotes / options.rate
            chaos = Chaos(stack, http, random.Random(f"chaos:{options.seed}:{name}"))
            scenario_builder(chaos, window, options)
            say(f"[{name}] {len(quotes)} quotes over {window:.0f}s, {len(chaos.actions)} chaos actions")
            started = time.monotonic()
            playing = asyncio.create_task(chaos.play(started))
            for n, quote in enumerate(quotes):
                delay = started + n / options.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)  # the approval rate, not a synchronisation
                await approve(http, stack.qw_url, quote)
            last_approval = time.monotonic()
            await playing
            say(f"[{name}] all approved; draining (at most {options.drain_timeout_s:.0f}s)")
            row.drain_s = await wait_drained(http, stack.qw_url, quotes, last_approval, options.drain_timeout_s)
            await chaos.clear_faults()
            await chaos.close()
            if name in REPLAYED and row.drain_s is not None:
                replayed = await replay_every_dead_letter(stack)
                row.notes.append(f"replayed {replayed} dead letters of order-writer after the drain")
                # Measured once the replays are through: M3 quiet for longer than a replayed quote takes to start.
                await wait_m3_quiet(http, stack.ion_url, quiet_s=10.0, cap_s=300.0)
            if not await wait_m3_quiet(http, stack.ion_url):
                row.notes.append("M3 was still being called 60 s after the drain; measured anyway")
            truth = await collect(http, stack.urls, stack.bootstrap)
            row.poison_sent = len(chaos.poison_sent)
            judge(row, quotes, truth, baseline, set(chaos.poison_sent))
            row.chaos_log = [f"{at:6.1f}s {text}" for at, text in chaos.log]
            for key, why in chaos.poison_refused.items():
                row.notes.append(f"broker refused poison {key}: {why[:200]}")
            dead = stack.dead()
            if dead:
                row.notes.append(f"processes that exited on their own: {dead}")
            stats = (await http.get(f"{stack.qw_url}/__admin/stats", timeout=10)).json()
            row.notes.append(f"QuoteWerks webhook deliveries: {stats.get('deliveries')}")
    finally:
        await asyncio.to_thread(stack.stop)
    (run_dir / "row.json").write_text(json.dumps(row.as_dict(), indent=2, default=str))
    say(row.summary())
    if options.verbose:
        for line in row.chaos_log:
            say(f"  chaos {line}")
    return row
