"""Settings every service shares; each service subclasses `BridgeSettings` with its own fields.

All settings come from environment variables prefixed `M3B_`, a `.env` file (path in `M3B_ENV_FILE`,
default `./.env`) and secret files (directory in `M3B_SECRETS_DIR`, default `/run/secrets` when it exists):
a file named like the setting, e.g. `/run/secrets/m3b_kafka_sasl_password`, holds its value. Environment
variables win over `.env`, which wins over secret files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)

ENV_PREFIX = "M3B_"
DEFAULT_SECRETS_DIR = Path("/run/secrets")
DEFAULT_MAPPING_FILE = Path("deploy/config/order-mapping.yaml")
DEFAULT_CUSTOMER_RULES = Path("deploy/config/customer-sync.yaml")
CHECKOUT = Path(__file__).resolve().parents[2]
MAX_CONSUMER_BACKOFF_S = 120.0
"""Most time the waits between the attempts of one consumed message may add up to (half aiokafka's
max_poll_interval of 300 s, leaving room for the attempts themselves)."""


def config_path(configured: Path) -> Path:
    """A relative rules file is looked up in the working directory (the image's /app), then in the checkout."""
    if configured.is_absolute() or configured.exists():
        return configured
    return CHECKOUT / configured


class BridgeSettings(BaseSettings):
    """What every M3 Bridge process needs: its name, HTTP side, logging, Kafka and state store."""

    # A refused setting names itself and why, never its value: it may be a secret, or a URL that carries one.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", case_sensitive=False, hide_input_in_errors=True
    )

    service_name: str = Field("m3bridge", description="Name in logs, metrics, Kafka client ids and `source` headers.")
    instance_id: str = Field(
        default_factory=lambda: os.environ.get("HOSTNAME", "") or f"pid{os.getpid()}",
        description="Distinguishes replicas of one service (defaults to the container hostname).",
    )
    http_host: str = Field("127.0.0.1", description="Address the HTTP side (health, metrics, API) binds to.")
    http_port: int = Field(8000, ge=0, le=65535, description="Port of the HTTP side.")
    http_tls_cert_file: Path | None = Field(
        None,
        description="Serve the HTTP side over TLS (1.2 or newer) with this certificate chain (PEM); with "
        "M3B_HTTP_TLS_KEY_FILE. Probes and callers then use https.",
    )
    http_tls_key_file: Path | None = Field(
        None, description="The private key (PEM) of M3B_HTTP_TLS_CERT_FILE; mount it as a secret file."
    )
    max_body_bytes: int = Field(
        4_194_304,
        ge=1024,
        description="Largest HTTP request body any endpoint accepts (bytes): a larger Content-Length is answered 413 "
        "before anything is read, a chunked body once it grows past it. Routes with their own limit "
        "(M3B_WEBHOOK_MAX_BYTES, M3B_BOD_MAX_BYTES) are bounded by this one too.",
    )
    operator_key: SecretStr = Field(
        SecretStr(""),
        description="Key of operator actions (catalog-sync `POST /v1/sync/full`, `/v1/sync/poll`), sent as "
        "`Authorization: Bearer <key>` or `X-API-Key: <key>`; also admits reads. Unset: those routes answer 401. Use "
        "a secret file (`m3b_operator_key`; `make keys` writes `operator-key`).",
    )
    read_key: SecretStr = Field(
        SecretStr(""),
        description="Key of reads (inventory-query `/v1/availability`, order-writer's quote trace, the detail of "
        "`/healthz` and `/readyz`), sent like the operator key. Unset: only the operator key is admitted. Use a secret "
        "file (`m3b_read_key`; `make keys` writes `read-key`).",
    )
    metrics_require_key: bool = Field(
        False,
        description="Put `/metrics` behind the read key (or the operator key); `/healthz` and `/readyz` stay open "
        "(their status; the detail needs the key).",
    )
    http_docs: bool = Field(
        False, description="Serve the OpenAPI document and its pages (`/openapi.json`, `/docs`, `/redoc`)."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    log_format: Literal["json", "text"] = Field("json", description="`json` lines for collectors, `text` for people.")
    crash_points: str = Field(
        "",
        description="Tests only: named crash points to arm (`name[:exit|:stall][@n]`, comma-separated; see "
        "`shared/platform/crash_points.py`). Empty in production.",
    )

    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated Kafka bootstrap servers.")
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = Field(
        "PLAINTEXT", description="How to reach the brokers."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism when the protocol is SASL_*."
    )
    kafka_sasl_username: str = Field("", description="SASL user name.")
    kafka_sasl_password: SecretStr = Field(SecretStr(""), description="SASL password (use a secret file).")
    kafka_ssl_ca_file: Path | None = Field(
        None, description="With SSL / SASL_SSL: the CA bundle (PEM) the brokers' certificates are checked against, "
        "for a private CA; unset: the system's trust store.",
    )  # fmt: skip
    kafka_ssl_cert_file: Path | None = Field(
        None, description="With SSL / SASL_SSL: this client's certificate (PEM), for brokers that require one."
    )
    kafka_ssl_key_file: Path | None = Field(
        None, description="The private key (PEM) of M3B_KAFKA_SSL_CERT_FILE (mount it as a secret file)."
    )
    http_ca_file: Path | None = Field(
        None, description="A CA bundle (PEM) trusted for the bridge's outgoing HTTPS (the ION API Gateway, "
        "token-service, a QuoteWerks adapter), for a private CA or a TLS-inspecting proxy; unset: the system's.",
    )  # fmt: skip
    kafka_session_timeout_ms: int = Field(
        6000,
        ge=1000,
        description="Consumer group session timeout. Small keeps group joins fast on the embedded broker; "
        "use 10000-45000 on Apache Kafka.",
    )
    kafka_heartbeat_interval_ms: int = Field(1000, ge=100, description="Consumer group heartbeat interval.")
    kafka_max_poll_interval_ms: int = Field(
        300_000,
        ge=10_000,
        description="Longest a consumer may spend on the messages of one poll before the group gives its partitions "
        "to another replica. order-writer holds each quote it works on with a lease (M3B_ORDER_LEASE_S), so a "
        "replica past this interval cannot write a quote the new owner took over.",
    )
    kafka_fetch_max_wait_ms: int = Field(
        50,
        ge=1,
        le=10_000,
        description="How long a consumer's fetch may wait for data. The embedded broker holds fetches for the full "
        "wait, so it is each hop's latency there; Apache Kafka answers as soon as data arrives.",
    )
    kafka_enable_idempotence: bool = Field(
        False, description="Idempotent producer. Turn on for Apache Kafka; the embedded broker lacks it."
    )
    kafka_max_request_size: int = Field(1_048_576, ge=1024, description="Largest message the producer sends, bytes.")
    kafka_topic_partitions: int = Field(4, ge=1, description="Partitions for topics the bridge creates.")
    kafka_topic_replication: int = Field(1, ge=1, description="Replication factor for topics the bridge creates.")
    kafka_dead_letter_retention_ms: int = Field(
        30 * 24 * 60 * 60 * 1000,
        ge=-1,
        description="`retention.ms` of the dead-letter topics `m3bridge topics` creates (default 30 days; -1 keeps "
        "them forever); existing topics are not changed.",
    )

    state_url: str = Field(
        "sqlite+aiosqlite:///var/m3bridge.db",
        description="SQLAlchemy URL of the state store, without a password: `sqlite+aiosqlite:///path` or "
        "`postgresql+asyncpg://user@host/db` (the password: M3B_STATE_PASSWORD; TLS: `?ssl=verify-full`, a private "
        "CA in PGSSLROOTCERT).",
    )
    state_pool_size: int = Field(
        5,
        ge=1,
        le=200,
        description="Connections a service keeps open to a PostgreSQL state store; up to 5 more are opened for a burst "
        "and closed after it. Opening one costs PostgreSQL a process: keep this near the service's concurrency, and "
        "(this + 5) times the replicas, over all services, under PostgreSQL's max_connections.",
    )
    state_password: SecretStr = Field(
        SecretStr(""),
        description="Password of the state store (M3B_STATE_URL carries none; a secret file: `m3b_state_password`).",
    )
    heartbeat_interval_s: float = Field(
        10.0, gt=0, description="How often the service announces itself on the heartbeat topic."
    )
    outbox_relay_interval_s: float = Field(
        2.0,
        gt=0,
        description="How often a service that records messages in its outbox (quote-ingest, bod-listener) publishes "
        "the ones still there from its previous pass (left behind by a crash or a broker outage).",
    )
    shutdown_grace_s: float = Field(20.0, gt=0, description="How long in-flight work may take to drain on shutdown.")
    consumer_max_attempts: int = Field(
        8,
        ge=1,
        le=30,
        description="Attempts a consumed message gets while its handling fails for retryable reasons; then it is "
        "dead-lettered and the partition moves on. Messages that cannot be decoded are dead-lettered at once.",
    )
    consumer_backoff_initial_s: float = Field(
        0.5, gt=0, description="Wait before a consumed message's second attempt; doubles each attempt, plus jitter."
    )
    consumer_backoff_max_s: float = Field(10.0, gt=0, description="Longest wait between two attempts of a message.")
    consumer_message_budget_s: float = Field(
        240.0,
        gt=0,
        description="Most time one consumed message may take, its attempts and the waits between them together; an "
        "attempt still running then is cancelled and the message dead-lettered (`retries-exhausted`; what was done "
        "is recorded, a replay resumes it). Must stay below M3B_KAFKA_MAX_POLL_INTERVAL_MS, so the group never gives "
        "the partition to another replica while this one still works on the message.",
    )
    consumer_stall_after_s: float = Field(
        30.0,
        gt=0,
        description="A subscriber on one message this long (or retrying it) is listed as stalled in /healthz.",
    )
    consumer_lag_interval_s: float = Field(
        30.0,
        ge=0,
        description="How often a service measures the backlog of its consumer groups on the broker "
        "(m3bridge_consumer_lag per group, topic and partition; /healthz `backlog`); 0 turns it off.",
    )

    @model_validator(mode="after")
    def _kafka_tls_files_fit_the_protocol(self) -> Self:
        if (self.kafka_ssl_cert_file is None) != (self.kafka_ssl_key_file is None):
            raise ValueError("M3B_KAFKA_SSL_CERT_FILE and M3B_KAFKA_SSL_KEY_FILE go together: set both, or neither")
        given = self.kafka_ssl_ca_file or self.kafka_ssl_cert_file
        if given is not None and self.kafka_security_protocol not in ("SSL", "SASL_SSL"):
            raise ValueError("M3B_KAFKA_SSL_* files need M3B_KAFKA_SECURITY_PROTOCOL SSL or SASL_SSL")
        return self

    @model_validator(mode="after")
    def _tls_cert_and_key_together(self) -> Self:
        if (self.http_tls_cert_file is None) != (self.http_tls_key_file is None):
            raise ValueError("M3B_HTTP_TLS_CERT_FILE and M3B_HTTP_TLS_KEY_FILE go together: set both, or neither")
        return self

    @model_validator(mode="after")
    def _no_password_in_the_state_url(self) -> Self:
        # urllib, not SQLAlchemy: services without a state store do not load the database libraries.
        if urlsplit(self.state_url).password:
            # Refused rather than used: a URL is echoed by tools and error messages, a secret setting never is.
            raise ValueError(
                "M3B_STATE_URL carries a password: give it as M3B_STATE_PASSWORD (a secret file, m3b_state_password) "
                "and leave it out of the URL"
            )
        return self

    def state_dsn(self) -> str:
        """The state store's URL with its password (M3B_STATE_PASSWORD), for opening it; never log or show it."""
        password = self.state_password.get_secret_value()
        if not password:
            return self.state_url
        from sqlalchemy.engine import make_url

        return make_url(self.state_url).set(password=password).render_as_string(hide_password=False)

    @model_validator(mode="after")
    def _backoff_fits_the_poll_interval(self) -> Self:
        # Retries run inside the handler, while the consumer does not poll: all waits of one message must stay well
        # under the consumer's max_poll_interval (aiokafka: 300 s), or the group evicts the consumer mid-retry.
        waits = sum(
            min(self.consumer_backoff_initial_s * (2**n + 1), self.consumer_backoff_max_s)
            for n in range(self.consumer_max_attempts - 1)
        )
        if waits > MAX_CONSUMER_BACKOFF_S:
            raise ValueError(
                f"M3B_CONSUMER_MAX_ATTEMPTS, M3B_CONSUMER_BACKOFF_INITIAL_S and M3B_CONSUMER_BACKOFF_MAX_S allow "
                f"{waits:.0f}s of waits for one message; keep it under {MAX_CONSUMER_BACKOFF_S:.0f}s"
            )
        if self.consumer_message_budget_s * 1000 >= self.kafka_max_poll_interval_ms:
            raise ValueError(
                f"M3B_CONSUMER_MESSAGE_BUDGET_S ({self.consumer_message_budget_s:.0f}s) must stay below "
                f"M3B_KAFKA_MAX_POLL_INTERVAL_MS ({self.kafka_max_poll_interval_ms} ms)"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file locations are themselves read from the environment at construction time, so a test or a
        # container can point them elsewhere without a code change.
        env_file = os.environ.get(f"{ENV_PREFIX}ENV_FILE", ".env")
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            env_settings,
            DotEnvSettingsSource(settings_cls, env_file=env_file),
        ]
        secrets_dir = os.environ.get(f"{ENV_PREFIX}SECRETS_DIR")
        if secrets_dir is None and DEFAULT_SECRETS_DIR.is_dir():
            secrets_dir = str(DEFAULT_SECRETS_DIR)
        if secrets_dir:
            sources.append(SecretsSettingsSource(settings_cls, secrets_dir=secrets_dir))
        return tuple(sources)

    def secret_values(self) -> list[str]:
        """Every non-empty secret this settings object holds, so logging can mask them."""
        return [
            value.get_secret_value()
            for value in self.__dict__.values()
            if isinstance(value, SecretStr) and value.get_secret_value()
        ]


class M3CallerSettings(BridgeSettings):
    """Settings of the services that call M3 (through token-service leases)."""

    token_service_url: str = Field(
        "http://127.0.0.1:8101",
        description="Where token-service answers leases; several replicas comma-separated (one that cannot be "
        "reached is passed over). Behind a Kubernetes Service, its one URL.",
    )
    token_service_key: SecretStr = Field(
        SecretStr(""), description="This service's key for token-service (one of its M3B_SERVICE_KEYS)."
    )
    m3_company: int = Field(100, ge=0, le=999, description="M3 company (CONO) the bridge works in.")
    m3_division: str = Field("", max_length=3, description="M3 division (DIVI); empty means the user's default.")
    m3_timeout_s: float = Field(
        60.0, gt=0, description="Timeout of one Gateway request (the Gateway gives up at 60 s)."
    )
    m3_deadline_s: float = Field(120.0, gt=0, description="Total time one M3 call may take, retries included.")
    m3_max_attempts: int = Field(6, ge=1, le=20, description="Attempts for transient failures and 429s.")
    m3_breaker_failures: int = Field(
        5, ge=1, description="Consecutive transient failures of one M3 program that open its circuit breaker."
    )
    m3_breaker_reset_s: float = Field(
        30.0, gt=0, description="How long an open circuit refuses calls before one probe call may go."
    )


class CustomerRulesSettings(M3CallerSettings):
    """The services that apply customer changes (order-writer one way, catalog-sync the other) read the same rules."""

    mapping_file: Path = Field(
        DEFAULT_MAPPING_FILE,
        description="The quote → M3 order mapping rules (YAML; catalog-sync reads its country table); relative to the "
        "working directory.",
    )
    customer_sync_file: Path = Field(
        DEFAULT_CUSTOMER_RULES,
        description="Customer field ownership and conflict rules (YAML), read by order-writer and catalog-sync.",
    )


class QuoteWerksSettings(BridgeSettings):
    """How a service reaches QuoteWerks (quote-ingest and catalog-sync): its SQL Server database or an HTTP adapter."""

    quotewerks_url: str = Field(
        "http://127.0.0.1:8300",
        description="QuoteWerks: its SQL Server database (`mssql+aioodbc://user@host:1433/QuoteWerks?driver=FreeTDS"
        "&TDS_Version=7.4`) or an HTTP adapter's base URL (`http(s)://`, e.g. the simulator).",
    )
    quotewerks_api_key: SecretStr = Field(SecretStr(""), description="Key for the QuoteWerks HTTP adapter.")
    quotewerks_sql_password: SecretStr = Field(
        SecretStr(""),
        description="Password of the SQL login when M3B_QUOTEWERKS_URL is a database URL (kept out of the URL).",
    )


def _shown_default(name: str, info: Any) -> str:
    if name == "instance_id":
        return "the host name (HOSTNAME)"  # computed where the service runs
    default = info.get_default(call_default_factory=True)
    if isinstance(default, SecretStr):
        return "(secret)" if default.get_secret_value() == "" else "(secret, set)"
    if isinstance(default, dict | list):
        return f"`{json.dumps(default, default=str)}`"
    return f"`{default}`" if default not in ("", None) else "(empty)"


def settings_table(service_settings: dict[str, type[BridgeSettings]]) -> str:
    """The settings reference: one row per setting with every service that reads it and its default, from the
    code (a setting of a base several services share is listed once)."""
    rows = ["| variable | default | read by | meaning |", "|---|---|---|---|"]
    readers: dict[str, list[str]] = {}
    first: dict[str, tuple[str, Any]] = {}
    for name in BridgeSettings.model_fields:
        if name != "service_name":
            readers[name], first[name] = ["all"], (name, BridgeSettings.model_fields[name])
    for service, cls in service_settings.items():
        for name, info in cls.model_fields.items():
            if name in BridgeSettings.model_fields:
                continue
            readers.setdefault(name, []).append(service)
            first.setdefault(name, (name, info))
    for name, services in readers.items():
        info = first[name][1]
        description = (info.description or "").replace("|", "\\|")
        rows.append(f"| `{ENV_PREFIX}{name.upper()}` | {_shown_default(name, info)} | {', '.join(services)} | "
                    f"{description} |")  # fmt: skip
    return "\n".join(rows)
