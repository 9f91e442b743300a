"""`m3bridge doctor`: is this installation ready for go-live? Checked against the configured tenant and systems.

- the `.ionapi` file and a token with its grant (the doctor fetches its own, as token-service does);
- every MI transaction the bridge uses, probed harmlessly and classified granted / denied by Connect API
  Authorization / not found: a read runs with no inputs (its mandatory key missing), a write only when M3's
  metadata says it has a mandatory input (then M3 refuses the empty call before doing anything); the denied ones
  are listed for the M3 administrator;
- MRS001MI metadata (the client's pre-checks), the Data Lake (a COUNT of MITMAS; which full-load path that size
  takes);
- QuoteWerks (the adapter or the database: a read of recently changed quotes), the Kafka topics and their
  partitions, the state store's migrations.
Under `make run` it finds the simulator's tenant, QuoteWerks, broker and store itself (`var/run.json`). A readable
table or `--json`; exit 1 when something blocks go-live (a `fail`), 0 otherwise (`warn` is worth reading).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import SecretStr

from m3bridge import local_run
from shared.m3 import M3AuthorizationDeniedError, M3BusinessError, M3Client, M3Error, M3NotFoundError
from shared.m3.lease import Lease, Priority, Report
from shared.m3.transactions import USED_TRANSACTIONS, changes_m3

Status = Literal["ok", "warn", "fail", "skip"]


@dataclass
class Check:
    area: str
    name: str
    status: Status
    detail: str = ""


class OwnToken:
    """Stands in for token-service: every lease is the doctor's own token of the tenant. No shared budget for its
    few dozen calls, but it stays gentle: at most `calls_per_s` a second (M3B_DOCTOR_CALLS_PER_S, 5), and a 429
    pauses it as asked."""

    def __init__(self, keeper: Any, m3_base_url: str, calls_per_s: float = 5.0) -> None:
        self.keeper = keeper
        self.m3_base_url = m3_base_url
        self.calls_per_s = max(calls_per_s, 0.1)
        self._next_at = 0.0
        self.unpaced = False  # the throttling probe's burst: its requests go together, within one period
        self.throttled = 0
        self._paused_until = 0.0

    async def lease(self, priority: Priority, *, permits: int = 1, max_wait_s: float = 30.0) -> Lease:
        loop = asyncio.get_running_loop()
        wait = max(self._paused_until, self._next_at if not self.unpaced else 0.0) - loop.time()
        if wait > 0:
            await asyncio.sleep(min(wait, max_wait_s))
        self._next_at = max(self._next_at, loop.time()) + permits / self.calls_per_s
        token = await self.keeper.token()
        expires = datetime.fromtimestamp(token.expires_at, UTC)
        return Lease(access_token=SecretStr(token.access_token), expires_at=expires, permits=permits, waited_ms=0.0,
                     m3_base_url=self.m3_base_url)  # fmt: skip

    async def report(self, report: Report) -> None:
        """A 429: the next call waits as long as the Gateway asked (a second when it did not say)."""
        if report.kind == "throttled":
            self.throttled += 1
            loop = asyncio.get_running_loop()
            self._paused_until = max(self._paused_until, loop.time() + (report.retry_after_s or 1.0))


def local_setting(name: str, default: str = "") -> str:
    """A setting from the environment, else from the local run (`make run`)."""
    if os.environ.get(name):
        return os.environ[name]
    run = local_run.read() or {}
    keys = _run_keys(run)
    values = {
        "M3B_ION_API_FILE": run.get("ionapi", ""),
        "M3B_QUOTEWERKS_URL": run.get("quotewerks_url", ""),
        "M3B_QUOTEWERKS_API_KEY": keys.get("quotewerks_api_key", ""),
        "M3B_QUOTE_INGEST_URL": (run.get("urls") or {}).get("quote-ingest", ""),
        "M3B_WEBHOOK_SECRET": keys.get("webhook_secret", ""),
    }
    return str(values.get(name) or default)


def _run_keys(run: dict[str, Any]) -> dict[str, Any]:
    path = run.get("keys_file")
    try:
        found: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8")) if path else {}
    except (OSError, ValueError):
        return {}
    return found


async def check_tenant(ionapi: str, checks: list[Check], http: httpx.AsyncClient) -> M3Client | None:
    from services.token_service.tokens import TokenKeeper, TokenUnavailableError
    from shared.m3.ionapi import IonApiCredentials, IonApiFileError

    try:
        credentials = IonApiCredentials.load(Path(ionapi))
    except IonApiFileError as bad:
        checks.append(Check("tenant", ".ionapi file", "fail", f"{bad} (M3B_ION_API_FILE)"))
        return None
    checks.append(Check("tenant", ".ionapi file", "ok", f"tenant {credentials.tenant}, {credentials.ion_api_url}"))
    keeper = TokenKeeper(credentials, timeout_s=20.0)
    try:
        await keeper.token()
    except (TokenUnavailableError, httpx.HTTPError, OSError) as failed:
        checks.append(Check("tenant", f"token ({credentials.grant_type} grant)", "fail", str(failed)[:300]))
        return None
    checks.append(Check("tenant", f"token ({credentials.grant_type} grant)", "ok", "issued"))
    company = int(os.environ.get("M3B_M3_COMPANY", "100"))
    pace = float(os.environ.get("M3B_DOCTOR_CALLS_PER_S", "5"))
    return M3Client(OwnToken(keeper, credentials.m3_base_url, pace), http, company=company,  # type: ignore[arg-type]
                    division=os.environ.get("M3B_M3_DIVISION") or None, validate=False, max_attempts=3,
                    deadline_s=60.0, source="doctor")  # fmt: skip


async def check_transactions(m3: M3Client, checks: list[Check]) -> list[str]:
    """Each transaction the bridge uses, probed; returns the denied ones."""
    denied: list[str] = []
    metadata_ok = True
    try:
        probe = await m3.metadata("OIS100MI", "AddBatchHead", priority=Priority.INTERACTIVE)
    except M3Error as failed:
        probe, metadata_ok = None, False
        checks.append(Check("M3", "MRS001MI metadata", "warn", f"{failed}: writes are not probed"))
    else:
        if probe is None:
            metadata_ok = False
            checks.append(Check("M3", "MRS001MI metadata", "warn", "not readable: the client skips its pre-checks "
                                "and M3 alone validates; writes are not probed"))  # fmt: skip
        else:
            checks.append(Check("M3", "MRS001MI metadata", "ok", "readable"))
    for program, transactions in USED_TRANSACTIONS.items():
        for transaction in transactions:
            name = f"{program}/{transaction}"
            if changes_m3(program, transaction):
                if not metadata_ok:
                    checks.append(Check("M3", name, "skip", "not probed: M3's metadata is not readable"))
                    continue
                try:
                    spec = await m3.metadata(program, transaction, priority=Priority.INTERACTIVE)
                except M3Error as failed:
                    checks.append(Check("M3", name, "warn", f"not probed: its metadata could not be read: {failed}"))
                    continue
                if spec is None or not any(field.mandatory for field in spec.inputs.values()):
                    checks.append(Check("M3", name, "skip", "not probed: it has no mandatory input to leave out"))
                    continue
            try:
                await m3.execute(program, transaction, {}, priority=Priority.INTERACTIVE, maxrecs=1)
                checks.append(Check("M3", name, "ok", "granted"))
            except M3AuthorizationDeniedError as refused:
                denied.append(name)
                checks.append(Check("M3", name, "fail", f"denied by Connect API Authorization: {refused}"))
            except M3NotFoundError as missing:
                checks.append(Check("M3", name, "fail", f"not found in this M3: {missing}"))
            except M3BusinessError as answered:
                checks.append(Check("M3", name, "ok", f"granted (M3 answered: {str(answered)[:80]})"))
            except M3Error as failed:
                checks.append(Check("M3", name, "warn", f"could not tell: {failed}"[:300]))
    return denied


#: The throttling probe: a read the bridge uses, sent with its key left out (M3 answers at once, changes nothing).
THROTTLE_PROBE = ("MMS200MI", "GetItmBasic")


def configured_policy() -> tuple[int, int, int | None]:
    """The Gateway policy token-service is configured for: (period in ms, spike-arrest maximum, delayAfterCount)."""
    delay_after = os.environ.get("M3B_THROTTLE_DELAY_AFTER_COUNT", "")
    period_ms = int(os.environ.get("M3B_THROTTLE_PERIOD_MS", "60000"))
    max_requests = int(os.environ.get("M3B_THROTTLE_MAX_REQUESTS", "3000"))
    return period_ms, max_requests, int(delay_after) if delay_after else None


async def _timed_probe(m3: M3Client) -> float:
    began = asyncio.get_running_loop().time()
    with contextlib.suppress(M3Error):
        await m3.execute(*THROTTLE_PROBE, {}, priority=Priority.INTERACTIVE, maxrecs=1)
    return asyncio.get_running_loop().time() - began


async def check_throttling(m3: M3Client, checks: list[Check]) -> None:
    """The configured throttling policy against what the Gateway answers, harmlessly: one probe alone, then a small
    burst (a quarter of what the configured policy lets through in one period, at most 10) sent together. A 429
    means the tenant's policy is stricter than configured (or others use it heavily now); a burst much slower than
    the single call means rate smoothing starts earlier than configured."""
    period_ms, max_requests, delay_after = configured_policy()
    configured = f"M3B_THROTTLE_MAX_REQUESTS={max_requests} per M3B_THROTTLE_PERIOD_MS={period_ms}" + (
        f", M3B_THROTTLE_DELAY_AFTER_COUNT={delay_after}" if delay_after else ""
    )
    leases = m3.lease_client
    if not isinstance(leases, OwnToken):
        return
    burst = max(2, min(10, (delay_after or max_requests) // 4))
    before = leases.throttled
    alone = await _timed_probe(m3)
    leases.unpaced = True
    try:
        together = await asyncio.gather(*(_timed_probe(m3) for _ in range(burst)))
    finally:
        leases.unpaced = False
    refused = leases.throttled - before
    slowest = max(together)
    measured = f"one alone {alone * 1000:.0f} ms, {burst} together ≤ {slowest * 1000:.0f} ms"
    if refused:
        checks.append(Check("Gateway", "throttling policy", "fail", (
            f"429 to {refused} of {burst + 1} requests within one period, far below the configured {configured}: the "
            "tenant's policy is stricter (ask the ION administrator for it and set M3B_THROTTLE_*), or other callers "
            "use it heavily now")))  # fmt: skip
    elif slowest > 3 * alone + 0.3:
        checks.append(Check("Gateway", "throttling policy", "warn", (
            f"{measured}: the Gateway delayed requests sent together (rate smoothing) before the configured "
            f"{configured} would; set M3B_THROTTLE_DELAY_AFTER_COUNT to the policy's delayAfterCount")))  # fmt: skip
    else:
        checks.append(Check("Gateway", "throttling policy", "ok", f"{measured}, no 429; configured {configured}"))


async def check_data_lake(m3: M3Client, checks: list[Check]) -> None:
    from services.catalog_sync.datalake import DataLakeClient

    threshold = int(os.environ.get("M3B_DATA_LAKE_THRESHOLD", "2000"))
    try:
        rows = await DataLakeClient(m3, poll_s=0.5, timeout_s=60.0).query(
            "SELECT COUNT(*) FROM MITMAS WHERE deleted = false"
        )
        count = int(next(iter(rows[0].values())))
    except Exception as failed:  # any failure: full loads page MI instead
        checks.append(Check("Data Lake", "COUNT of MITMAS", "warn", f"{type(failed).__name__}: {failed}"[:300]
                            + "; full loads will page MI (MMS200MI/LstItmByItm)"))  # fmt: skip
        return
    path = "the Data Lake" if count > threshold else "MI paging"
    checks.append(Check("Data Lake", "COUNT of MITMAS", "ok",
                        f"{count} items: full loads read {path} (M3B_DATA_LAKE_THRESHOLD {threshold})"))  # fmt: skip


async def check_quotewerks(checks: list[Check], http: httpx.AsyncClient) -> None:
    from shared.quotewerks import QuoteWerksError
    from shared.quotewerks.connect import is_database_url, quotewerks_client
    from shared.quotewerks.errors import QuoteWerksConfigError

    url = local_setting("M3B_QUOTEWERKS_URL")
    if not url:
        checks.append(Check("QuoteWerks", "connection", "fail", "M3B_QUOTEWERKS_URL is not set"))
        return
    kind = "database" if is_database_url(url) else "adapter"
    try:
        password = SecretStr(os.environ.get("M3B_QUOTEWERKS_SQL_PASSWORD", ""))
        key = SecretStr(local_setting("M3B_QUOTEWERKS_API_KEY"))
        client = quotewerks_client(url, key, http=http, sql_password=password)
        try:
            # quote-ingest's own read (its safety-net poll): approved quotes changed lately.
            status = json.loads(os.environ.get("M3B_APPROVED_STATUSES", '["Accepted"]'))[0]
            recent = await client.documents(doc_type="QUOTE", status=status,
                                            modified_since=datetime.now(UTC) - timedelta(days=1))  # fmt: skip
        finally:
            await client.aclose()
    except (QuoteWerksError, QuoteWerksConfigError, OSError, ValueError) as failed:
        checks.append(Check("QuoteWerks", kind, "fail", str(failed)[:300]))
        return
    checks.append(Check("QuoteWerks", kind, "ok", f"documents readable ({len(recent)} changed in the last day)"))


async def check_webhook(checks: list[Check], http: httpx.AsyncClient) -> None:
    """quote-ingest's webhook end point as QuoteWerks reaches it (M3B_QUOTE_INGEST_URL: the address the QuoteWerks
    webhook is configured with, without the path), with the shared secret in its header: an empty body must be
    refused as malformed (422: reachable, secret accepted), never as unauthenticated (401). Nothing is recorded."""
    from shared.quotewerks.connect import is_database_url

    if is_database_url(local_setting("M3B_QUOTEWERKS_URL")):
        checks.append(Check("QuoteWerks", "webhook", "skip", "database mode: no webhooks, quote-ingest polls"))
        return
    url = local_setting("M3B_QUOTE_INGEST_URL").rstrip("/")
    if not url:
        checks.append(Check("QuoteWerks", "webhook", "skip", "not checked: set M3B_QUOTE_INGEST_URL to the address "
                            "QuoteWerks' webhook delivers to"))  # fmt: skip
        return
    secret = local_setting("M3B_WEBHOOK_SECRET")
    header = os.environ.get("M3B_WEBHOOK_SECRET_HEADER", "X-M3Bridge-Webhook-Secret")
    target = f"{url}/webhooks/quotewerks"
    try:
        answer = await http.post(target, json={}, headers={header: secret} if secret else {}, timeout=15)
    except httpx.HTTPError as failed:
        checks.append(Check("QuoteWerks", "webhook", "fail", f"{target} unreachable: {type(failed).__name__}"))
        return
    if answer.status_code == 401:
        status: Status = "fail" if secret else "warn"
        refused = f"the shared secret was refused: QuoteWerks' webhook must send M3B_WEBHOOK_SECRET in header {header}"
        detail = refused if secret else "reachable; the secret not checked (M3B_WEBHOOK_SECRET not given)"
        checks.append(Check("QuoteWerks", "webhook", status, f"{target}: {detail}"))
    elif answer.status_code in (400, 422):
        checks.append(Check("QuoteWerks", "webhook", "ok", f"{target} reachable, the secret in {header} accepted"))
    else:
        checks.append(Check("QuoteWerks", "webhook", "fail", f"{target} answered {answer.status_code}"))


async def check_kafka(settings: Any, checks: list[Check]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    from shared.contracts.topics import ALL_TOPICS
    from shared.platform.kafka import aiokafka_client_options

    admin = AIOKafkaAdminClient(**aiokafka_client_options(settings), client_id="m3bridge-doctor",
                                request_timeout_ms=10_000)  # fmt: skip
    try:
        await asyncio.wait_for(admin.start(), 15)
        existing = set(await admin.list_topics())
        described = await admin.describe_topics([t.name for t in ALL_TOPICS if t.name in existing])
    except Exception as failed:
        checks.append(
            Check("Kafka", settings.kafka_bootstrap_servers, "fail", f"{type(failed).__name__}: {failed}"[:300])
        )
        return
    finally:
        await admin.close()
    missing = [t.name for t in ALL_TOPICS if t.name not in existing]
    if missing:
        checks.append(Check("Kafka", "topics", "fail", f"missing: {', '.join(missing)} (m3bridge topics creates them)"))
    else:
        checks.append(Check("Kafka", "topics", "ok", f"all {len(ALL_TOPICS)} exist"))
    few = [f"{d['topic']} ({len(d['partitions'])})" for d in described
           if len(d.get("partitions") or []) < settings.kafka_topic_partitions]  # fmt: skip
    if few:
        checks.append(Check("Kafka", "partitions", "warn", f"fewer than M3B_KAFKA_TOPIC_PARTITIONS "
                            f"{settings.kafka_topic_partitions}: {', '.join(few)}"))  # fmt: skip


async def check_state(settings: Any, checks: list[Check]) -> None:
    from shared.platform.state import db

    engine = db.create_engine(settings.state_dsn())
    try:
        current = await db.current_revision(engine)
    except Exception as failed:
        checks.append(Check("state store", "reachable", "fail", f"{type(failed).__name__} (M3B_STATE_URL)"))
        return
    finally:
        await engine.dispose()
    newest = db.newest_revision()
    if current == newest:
        checks.append(Check("state store", "migrations", "ok", f"at {current}"))
    else:
        checks.append(Check("state store", "migrations", "warn", f"at {current or 'none'}, newest {newest}: "
                            "`m3bridge migrate` (services also migrate at start)"))  # fmt: skip


async def diagnose(*, ionapi: str | None = None) -> tuple[list[Check], list[str]]:
    checks: list[Check] = []
    denied: list[str] = []
    settings = local_run.cli_settings()
    async with httpx.AsyncClient() as http:
        m3 = await check_tenant(ionapi or local_setting("M3B_ION_API_FILE", "/run/secrets/ionapi"), checks, http)
        if m3 is not None:
            # First, while the doctor has sent nothing else this period: its own probes must not fill the count.
            await check_throttling(m3, checks)
            denied = await check_transactions(m3, checks)
            await check_data_lake(m3, checks)
        await check_quotewerks(checks, http)
        await check_webhook(checks, http)
    await check_kafka(settings, checks)
    await check_state(settings, checks)
    return checks, denied


def describe(checks: list[Check], denied: list[str]) -> str:
    marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}
    lines = [f"{marks[c.status]}  {c.area:<11} {c.name:<24} {c.detail}" for c in checks]
    failed = sum(c.status == "fail" for c in checks)
    warned = sum(c.status == "warn" for c in checks)
    if denied:
        lines.append("\nFor the M3 administrator (Connect API Authorization, SES005): grant the bridge's user")
        lines += [f"  {name}" for name in denied]
    lines.append(f"\n{len(checks)} checks: {failed} blocking, {warned} to read" + ("" if failed else "; ready"))
    return "\n".join(lines)


def run(*, as_json: bool, ionapi: str | None) -> int:
    checks, denied = asyncio.run(diagnose(ionapi=ionapi))
    if as_json:
        print(json.dumps({"checks": [asdict(c) for c in checks], "denied": denied}, indent=2))
    else:
        print(describe(checks, denied))
    return 1 if any(c.status == "fail" for c in checks) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(as_json="--json" in sys.argv, ionapi=None))
