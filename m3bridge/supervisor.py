"""`make run`: the whole bridge on one machine, with no Docker and no JVM.

Starts the embedded broker (Tansu), migrates the SQLite state store, creates the topics, then starts every
service as its own process with prefixed, coloured log lines; waits until each answers ready on /readyz and
prints where everything listens. SIGINT or SIGTERM stops the services (they drain), then the broker; a process
that will not stop is killed, and children die with the supervisor even if it is killed itself. `--quotewerks db`
replaces the QuoteWerks simulator with a local SQLite database of its schema (`m3bridge.local_quotewerks`). Once
the run is up, a service or simulator that exits on its own is started again with the same command, port and
environment, after a growing wait (`m3bridge.restarts`); the broker is not (its topics live in its memory), so the
whole run stops when it dies.

A hand-written supervisor rather than honcho: start-up has an order (broker, migrations, topics, services),
readiness is an HTTP check, and shutdown must reach whole process groups.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import secrets
import signal
import sys
import time
from pathlib import Path

import httpx

from m3bridge import demo, local_quotewerks, local_run, restarts, tansu
from m3bridge.children import Child, Children
from services import SERVICES, m3_callers
from shared.contracts.topics import ensure_topics
from shared.platform.state import db
from simulators.quotewerks.data import SCENARIOS

RUN_KEYS_FILE = "run-keys.json"
SIMULATORS = {
    "ion-sim": "ION API Gateway + OAuth + M3 MI simulator; admin at /__admin/docs",
    "quotewerks-sim": "QuoteWerks documents, customers, products, webhooks; admin at /__admin/docs",
}


class Supervisor(Children):
    def __init__(self, options: argparse.Namespace) -> None:
        super().__init__(
            colour=options.color == "always" or (options.color == "auto" and sys.stdout.isatty()),
            width=max(len(name) for name in [*SERVICES, *SIMULATORS, "kafka", "supervisor"]),
        )
        self.options = options
        self.state_dir = Path(options.state_dir).resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.demo_target: tuple[str, str] | None = None
        self.quotewerks_db: Path | None = None  # `--quotewerks db`: the SQLite file quote-ingest polls
        self.demo_quotes: list[str] = []
        self.ingest_view: local_quotewerks.IngestView | None = None
        self.poll_interval = os.environ.get("M3B_POLL_INTERVAL_S", local_quotewerks.POLL_INTERVAL_S)
        # This run's keys of the bridge's own API (operator actions, availability reads), shown in the banner.
        self.operator_key = os.environ.get("M3B_OPERATOR_KEY") or secrets.token_urlsafe(24)
        self.read_key = os.environ.get("M3B_READ_KEY") or secrets.token_urlsafe(24)

    def _port(self, preferred: int) -> int:
        return preferred if preferred and not tansu.port_open("127.0.0.1", preferred) else tansu.free_port()

    # --- the run -------------------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stopping.set)
        started = time.monotonic()
        try:
            await self._start_all()
        except Exception as exc:
            self.say("supervisor", f"start-up failed: {exc}")
            for child in self.children:
                if child.process is not None and child.process.returncode not in (None, 0):
                    self.say("supervisor", f"last lines of {child.name}:")
                    for line in child.tail:
                        self.say(child.name, line)
            await self.stop()
            return 1
        self._print_summary(time.monotonic() - started)
        for child in self.children:
            if child.name != "kafka":
                self.keep_running(child)
        if self.options.demo and self.demo_target is not None and "quote-ingest" in self._names():
            await demo.via_simulator(*self.demo_target, say=functools.partial(self.say, "demo"), stopping=self.stopping)
        elif (
            self.options.demo
            and self.quotewerks_db is not None
            and self.ingest_view is not None
            and "quote-ingest" in self._names()
        ):
            await demo.via_database(
                self.quotewerks_db,
                self.ingest_view,
                self.demo_quotes,
                say=functools.partial(self.say, "demo"),
                stopping=self.stopping,
            )
        [broker] = [child.process for child in self.children if child.name == "kafka" and child.process is not None]
        broker_exit = asyncio.create_task(broker.wait())
        stop_wait = asyncio.create_task(self.stopping.wait())
        await asyncio.wait([stop_wait, broker_exit], return_when=asyncio.FIRST_COMPLETED)
        exit_code = 0
        if not self.stopping.is_set():
            self.say("supervisor", f"kafka {restarts.how_it_ended(broker.returncode or 0)}: a new broker would not "
                     "have the topics (they live in its memory), so everything stops")  # fmt: skip
            exit_code = 1
        broker_exit.cancel()
        stop_wait.cancel()
        await self.stop()
        return exit_code

    async def _start_all(self) -> None:
        options = self.options
        database = self.state_dir / "m3bridge.db"
        if not options.keep_state:
            # The broker and the simulators keep nothing across runs; a ledger that did would point at orders
            # this run's M3 never had.
            for stale in self.state_dir.glob("m3bridge.db*"):
                stale.unlink()
        state_url = f"sqlite+aiosqlite:///{database}"

        kafka_port = self._port(options.kafka_port)
        broker = Child("kafka", tansu.broker_command(kafka_port), {**os.environ, "RUST_LOG": "warn"}, port=kafka_port)
        self.children.append(broker)
        await self._spawn(broker, 0)
        deadline = time.monotonic() + 15
        while not tansu.port_open("127.0.0.1", kafka_port):
            if broker.process is not None and broker.process.returncode is not None:
                raise RuntimeError(f"broker exited with code {broker.process.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError("broker did not start listening within 15s")
            await asyncio.sleep(0.02)
        bootstrap = f"127.0.0.1:{kafka_port}"
        self.say("supervisor", f"broker listening on {bootstrap}")

        revision = await db.migrate(state_url)
        self.say("supervisor", f"state store {state_url} at migration {revision}")
        created = await ensure_topics(bootstrap, partitions=options.partitions, replication=1)
        self.say("supervisor", f"topics ready ({len(created)} created)")

        services = [SERVICES[name] for name in (options.only or SERVICES)]
        ports = {
            entry.name: self._port(options.port_base + (entry.local_port - 8101) if options.port_base else 0)
            for entry in services
        }
        # M3 changes reach bod-listener as ION delivers BODs: IMS v3 multipart messages to its IMS end point, with the
        # API key header the Gateway adds for the target (an "IMS via ION API" connection point).
        bod_secret = secrets.token_urlsafe(24)
        ion_port = self._port(options.ion_port)
        ionapi = self.state_dir / "sim-tenant.ionapi"
        ion_command = [sys.executable, "-m", "simulators.ion", "--port", str(ion_port), "--ionapi", str(ionapi),
                       "--log-level", "warning"]  # fmt: skip
        if "bod-listener" in ports:
            ion_command += ["--bod-url", f"http://127.0.0.1:{ports['bod-listener']}/ims"]
        ion = Child(
            "ion-sim",
            ion_command,
            {**os.environ, "PYTHONUNBUFFERED": "1", "ION_BOD_SECRET": bod_secret},
            port=ion_port,
            ready_path="/healthz",
        )  # fmt: skip
        await self.start(ion)

        # QuoteWerks sends approvals and customer changes to quote-ingest with a shared secret in a custom header,
        # as the real one does.
        webhook_secret, qw_api_key = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        if options.quotewerks == "db":
            qw_url = await self._create_quotewerks_db()
        else:
            qw_url = await self._start_quotewerks_sim(ports, webhook_secret, qw_api_key)

        # Each service gets its own key for token-service; they live only in these processes' environments.
        keys = {name: secrets.token_urlsafe(24) for name in m3_callers()}
        base_env = {
            **os.environ,
            "M3B_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "M3B_STATE_URL": state_url,
            "M3B_LOG_FORMAT": os.environ.get("M3B_LOG_FORMAT", "text"),
            "M3B_HTTP_HOST": "127.0.0.1",
            "PYTHONUNBUFFERED": "1",
            # Local runs serve /docs and /openapi.json (off by default in a deployment).
            "M3B_HTTP_DOCS": os.environ.get("M3B_HTTP_DOCS", "true"),
            # The run's read key shows every service's /healthz and /readyz detail (and inventory-query's reads).
            "M3B_READ_KEY": self.read_key,
        }
        local_run.write(
            self.state_dir, kafka_bootstrap=bootstrap, state_url=state_url, pid=os.getpid(),
            urls={entry.name: f"http://127.0.0.1:{ports[entry.name]}" for entry in services},
            ionapi=str(ionapi), quotewerks_url=qw_url, keys_file=str(self.state_dir / RUN_KEYS_FILE),
        )  # fmt: skip
        self._write_run_keys(
            {"operator": self.operator_key, "read": self.read_key, "webhook_secret": webhook_secret,
             "bod_secret": bod_secret, "quotewerks_api_key": qw_api_key, "token_service": keys}
        )  # fmt: skip
        token_service_url = f"http://127.0.0.1:{ports.get('token-service', 8101)}"
        for entry in services:
            env = {
                **base_env,
                "M3B_HTTP_PORT": str(ports[entry.name]),
                "M3B_INSTANCE_ID": f"local-{entry.name}",
            }
            if entry.name in keys:
                env |= {"M3B_TOKEN_SERVICE_URL": token_service_url, "M3B_TOKEN_SERVICE_KEY": keys[entry.name]}
            if entry.name == "token-service":
                env |= {"M3B_ION_API_FILE": str(ionapi), "M3B_SERVICE_KEYS": json.dumps(keys)}
            if entry.name in ("quote-ingest", "catalog-sync"):
                env |= {"M3B_QUOTEWERKS_URL": qw_url, "M3B_QUOTEWERKS_API_KEY": qw_api_key}
            if entry.name == "quote-ingest":
                env |= {"M3B_WEBHOOK_SECRET": webhook_secret}
                if self.quotewerks_db is not None:
                    # No webhooks from a database: the poll is the only way in, so it runs every few seconds.
                    env |= {**local_quotewerks.INGEST_ENV, "M3B_POLL_INTERVAL_S": self.poll_interval}
            if entry.name == "bod-listener":
                env |= {"M3B_BOD_SECRET": bod_secret}
            if entry.name in ("catalog-sync", "order-writer", "inventory-query"):
                env |= {"M3B_OPERATOR_KEY": self.operator_key}
            child = Child(
                entry.name, [sys.executable, "-m", "m3bridge.cli", "serve", entry.name], env, port=ports[entry.name]
            )
            await self.start(child)

        deadline = time.monotonic() + options.ready_timeout
        async with httpx.AsyncClient() as client:
            waits = [self._wait_ready(c, client, deadline, self.options.ready_timeout) for c in self.children
                     if c.name != "kafka"]  # fmt: skip
            stop = asyncio.create_task(self.stopping.wait())
            gathered = asyncio.ensure_future(asyncio.gather(*waits))
            await asyncio.wait([stop, gathered], return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
            if not gathered.done():
                gathered.cancel()
                raise RuntimeError("interrupted while starting")
            stop.cancel()
            gathered.result()

    def _write_run_keys(self, keys: dict[str, object]) -> None:
        """This run's keys and secrets, for tools that call the local stack (the fuzz suite, a curl by hand): readable
        by the owner only, replaced on every run (each run makes new ones)."""
        path = self.state_dir / RUN_KEYS_FILE
        path.unlink(missing_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(keys, handle, indent=2)

    async def _start_quotewerks_sim(self, ports: dict[str, int], webhook_secret: str, api_key: str) -> str:
        qw_port = self._port(self.options.quotewerks_port)
        quotewerks = Child(
            "quotewerks-sim",
            [sys.executable, "-m", "simulators.quotewerks", "--port", str(qw_port), "--log-level", "warning",
             "--webhook-url", f"http://127.0.0.1:{ports.get('quote-ingest', 8102)}/webhooks/quotewerks",
             "--webhook-event", "QuoteValet.Accepted", "--webhook-event", "QuoteWerks.CustomerChanged"],
            {**os.environ, "PYTHONUNBUFFERED": "1", "QW_API_KEY": api_key, "QW_WEBHOOK_SECRET": webhook_secret},
            port=qw_port,
            ready_path="/healthz",
        )  # fmt: skip
        await self.start(quotewerks)
        self.demo_target = (quotewerks.url, api_key)
        return quotewerks.url

    async def _create_quotewerks_db(self) -> str:
        """`--quotewerks db`: no QuoteWerks simulator; a SQLite file of the QuoteWerks schema subset with the demo
        quotes, which quote-ingest (polling) and catalog-sync use through the SQL connector."""
        path = self.state_dir / local_quotewerks.DATABASE_FILE
        self.ingest_view = local_quotewerks.ingest_view()
        approved = {self.ingest_view.approved_status.casefold()}
        self.demo_quotes = await local_quotewerks.create(path, keep=self.options.keep_state, approved=approved)
        self.quotewerks_db = path
        url = local_quotewerks.database_url(path)
        self.say("supervisor", f"QuoteWerks database {url} with quotes {', '.join(self.demo_quotes)}")
        return url

    async def _stop_all(self) -> None:
        # Services first (they drain and revoke their token against the simulator), then simulators, then Kafka.
        self.say("supervisor", "stopping services")
        services = [c for c in self.children if c.name != "kafka" and c.name not in SIMULATORS]
        await asyncio.gather(*(self._stop(c, self.options.grace) for c in services))
        await asyncio.gather(*(self._stop(c, 10) for c in self.children if c.name in SIMULATORS))
        for child in self.children:
            if child.name == "kafka":
                await self._stop(child, 10)
        self.say("supervisor", "all stopped")

    def _names(self) -> set[str]:
        return {child.name for child in self.children}

    def _print_summary(self, elapsed_s: float) -> None:
        self.say("supervisor", f"M3 Bridge is up in {elapsed_s:.1f}s. Ctrl-C stops everything.")
        for child in self.children:
            pid = child.process.pid if child.process else "-"
            if child.name == "kafka":
                where = f"kafka://127.0.0.1:{child.port}"
            elif child.name in SIMULATORS:
                where = f"{child.url}  ({SIMULATORS[child.name]})"
            else:
                where = f"{child.url}  (/healthz /readyz /metrics /docs)"
            self.say("supervisor", f"  {child.name:<{self.width}} pid {pid:<8} {where}")
        if self.quotewerks_db is not None and self.ingest_view is not None:
            url = local_quotewerks.database_url(self.quotewerks_db)
            self.say("supervisor", f"  QuoteWerks: the SQLite database {url} (no simulator, no webhooks: quote-ingest "
                     f"polls it every {self.poll_interval} s)")  # fmt: skip
            others = self.demo_quotes[1:] or self.demo_quotes
            if others:
                how = local_quotewerks.approve_by_hand(self.quotewerks_db, others[0], self.ingest_view)
                self.say("supervisor", f"  approve another quote by hand: {how}")
        elif self.demo_target is not None:
            url, api_key = self.demo_target
            self.say("supervisor", f"  QuoteWerks: the simulator at {url}")
            another = SCENARIOS["lines-20"]  # orders as it is (the demo took "ordinary")
            keys = self.state_dir / RUN_KEYS_FILE
            self.say("supervisor", f"  approve another quote: curl -X POST -H 'X-API-Key: {api_key}' "
                     f"{url}/api/v1/documents/{another}/approve (this run's keys: {keys})")  # fmt: skip
        self._print_keys()
        self.say("supervisor", "READY")

    def _print_keys(self) -> None:
        """How to call the routes behind this run's operator and read keys."""
        urls = {child.name: child.url for child in self.children}
        if "catalog-sync" in urls:
            self.say("supervisor", f"  sync now (operator key): curl -X POST -H 'Authorization: Bearer "
                     f"{self.operator_key}' {urls['catalog-sync']}/v1/sync/poll")  # fmt: skip
        if "inventory-query" in urls:
            self.say("supervisor", f"  availability (read key): curl -H 'Authorization: Bearer {self.read_key}' "
                     f"'{urls['inventory-query']}/v1/availability/ITM000001?warehouse=100'")  # fmt: skip


def run(options: argparse.Namespace) -> int:
    return asyncio.run(Supervisor(options).run())
