"""The customer stack of the end-to-end customer tests: bod-listener, the ION simulator delivering BODs to it as ION
does (IMS v3), token-service, the QuoteWerks simulator with a customer webhook to quote-ingest, order-writer and
catalog-sync, every box a process; state in the module's PostgreSQL."""

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from m3bridge.tansu import free_port
from simulators.processes import Captured
from simulators.stack import IonSim, QuoteWerksSim, start_ion, start_quotewerks, start_service, start_token_service

WEBHOOK_SECRET = "webhook-secret-for-tests"
BOD_SECRET = "bod-secret-for-tests"
KEYS = {"order-writer": "ow-key-123456", "catalog-sync": "cs-key-123456"}
CUSTOMER_EVENT = "QuoteWerks.CustomerChanged"


@dataclass
class Stack:
    ion: IonSim
    quotewerks: QuoteWerksSim
    writer: Captured
    catalog: Captured
    catalog_url: str

    def m3_customer(self, number: str) -> dict[str, Any]:
        """CRS610MI as M3 holds it (the simulator's admin read: no Gateway call, no budget)."""
        record: dict[str, Any] = self.ion.admin("GET", f"m3/customers/{number}")
        return record

    def bods_generated(self) -> int:
        return int(self.ion.admin("GET", "bods")["generated"])

    def customer_webhooks(self) -> int:
        """Deliveries of customer-change webhooks QuoteWerks made (retries of one delivery count once)."""
        hooks = self.quotewerks.api("GET", "webhooks")["webhooks"]
        total = 0
        for hook in hooks:
            if hook["Event"] == CUSTOMER_EVENT:
                deliveries = self.quotewerks.api("GET", f"webhooks/{hook['ID']}/deliveries")["deliveries"]
                total += sum(1 for d in deliveries if d["Attempt"] == 1)
        return total


def settled(read: Callable[[], Any], quiet_s: float = 3.0, timeout_s: float = 60) -> Any:
    """The value once it has not changed for `quiet_s` (the system has stopped reacting)."""
    deadline = time.monotonic() + timeout_s
    value, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = read()
        if now != value:
            value, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return value
    raise AssertionError(f"never settled: still changing at {value!r}")


@contextlib.contextmanager
def customer_stack(
    tmp: Callable[[str], Path], kafka_bootstrap: str, state_url: str, catalog_settings: dict[str, str] | None = None
) -> Iterator[Stack]:
    """`tmp(name)` makes a folder; `catalog_settings`: more of catalog-sync's environment."""
    common = {"M3B_STATE_URL": state_url, "M3B_KAFKA_SESSION_TIMEOUT_MS": "6000"}
    with contextlib.ExitStack() as started:  # a part that fails to start still stops the ones before it
        listener, listener_url = start_service(
            "bod-listener", kafka_bootstrap, {**common, "M3B_BOD_SECRET": BOD_SECRET}
        )
        started.callback(listener.kill_all)
        ion = start_ion(
            tmp("ion"),
            # As ION delivers: IMS v3 multipart messages to bod-listener's IMS end point, both payload encodings.
            {
                "bod_target_url": f"{listener_url}/ims",
                "bod_headers": {"X-M3Bridge-BOD-Secret": BOD_SECRET},
                "bod_encodings": ["NONE", "BASE64"],
            },
        )
        started.callback(ion.stop)
        token_service = start_token_service(ion, kafka_bootstrap, KEYS)
        started.callback(token_service.stop)
        ingest_port = free_port()
        webhook_url = f"http://127.0.0.1:{ingest_port}/webhooks/quotewerks"
        quotewerks = start_quotewerks(webhook_url, WEBHOOK_SECRET)
        started.callback(quotewerks.stop)
        quotewerks.api("POST", "webhooks", {
            "Name": "M3 Bridge customers", "Event": CUSTOMER_EVENT, "URL": webhook_url,
            "Headers": {"X-M3Bridge-Webhook-Secret": WEBHOOK_SECRET},
            "Body": '{"event": "{{System.EventFullName}}", "CMAccountNo": "{{Customer.CMAccountNo}}"}',
        })  # fmt: skip
        ingest, _ = start_service("quote-ingest", kafka_bootstrap, {
            **common, "M3B_QUOTEWERKS_URL": quotewerks.url, "M3B_QUOTEWERKS_API_KEY": quotewerks.api_key,
            "M3B_WEBHOOK_SECRET": WEBHOOK_SECRET,
        }, port=ingest_port)  # fmt: skip
        started.callback(ingest.kill_all)
        m3_caller = {"M3B_TOKEN_SERVICE_URL": token_service.url}
        writer, _ = start_service("order-writer", kafka_bootstrap, {
            **common, **m3_caller, "M3B_TOKEN_SERVICE_KEY": KEYS["order-writer"],
        })  # fmt: skip
        started.callback(writer.kill_all)
        catalog, catalog_url = start_service("catalog-sync", kafka_bootstrap, {
            **common, **m3_caller, "M3B_TOKEN_SERVICE_KEY": KEYS["catalog-sync"],
            "M3B_QUOTEWERKS_URL": quotewerks.url, "M3B_QUOTEWERKS_API_KEY": quotewerks.api_key,
            "M3B_FULL_LOAD_AT_START": "false", "M3B_FULL_LOAD_INTERVAL_S": "0", **(catalog_settings or {}),
        })  # fmt: skip
        started.callback(catalog.kill_all)
        built = Stack(ion, quotewerks, writer, catalog, catalog_url)
        # Other tests of the session may have left M3 customer changes on the topic; let the services finish them.
        settled(lambda: (built.customer_webhooks(), len(writer.lines), len(catalog.lines)))
        yield built
