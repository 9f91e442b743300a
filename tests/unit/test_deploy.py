"""Static checks of the container deployment: docker-compose.yml against the vendored Compose Specification schema,
cross-checked against `services.SERVICES` and `BridgeSettings` (Docker is not needed). The Dockerfile, Prometheus
and Grafana: test_deploy_monitoring.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft201909Validator

from services import SERVICES, m3_callers, settings_classes
from services.order_writer.app import OrderWriterSettings
from services.token_service.app import TokenServiceSettings
from shared.platform.settings import ENV_PREFIX, BridgeSettings
from shared.platform.state.db import BURST_CONNECTIONS
from tests.unit.deploy_files import (
    COMPOSE_FILE,
    COMPOSE_SCHEMA,
    CONTAINER_PORT,
    ROOT,
    SETTINGS_LOCATION_KEYS,
)

pytestmark = pytest.mark.unit


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's `environment`, either mapping or list form, as strings."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(part) for part in command]


_VARIABLE = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def _resolve(value: str) -> str:
    """A compose value as `docker compose` sees it with no variables set: `${VAR:-default}` is the default."""
    return _VARIABLE.sub(lambda match: match.group(2) or "", value)


def _port_bindings(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(host address, host port, container port) of a service's `ports`, short or long syntax, variables
    resolved to their defaults; the address is "" when the port is published on every interface."""
    bindings = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            address = _resolve(str(port.get("host_ip", "")))
            bindings.append((address, _resolve(str(port.get("published", ""))), str(port["target"])))
            continue
        parts = _resolve(str(port)).split("/")[0].split(":")
        host = parts[-2] if len(parts) >= 2 else ""
        address = ":".join(parts[:-2])
        bindings.append((address, host, parts[-1]))
    return bindings


def _published_ports(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host port, container port) pairs of a service's `ports`."""
    return [(host, container) for _, host, container in _port_bindings(service)]


# What a user must reach from outside the compose network: QuoteWerks' webhooks, catalog triggers, the
# availability API, ION's BODs, Prometheus and Grafana. Everything else talks on the compose network only.
PUBLISHED = {
    "quote-ingest", "catalog-sync", "inventory-query", "bod-listener", "prometheus", "alertmanager", "grafana",
}  # fmt: skip
# The containers that open the state store (ServiceRuntime(..., uses_state=True)) and the migration job.
STATE_USERS = {"migrate", "quote-ingest", "order-writer", "catalog-sync", "bod-listener"}


# --- (a) compose file against the Compose Specification ---


def test_compose_validates_against_compose_spec(compose: dict[str, Any]) -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    errors = sorted(Draft201909Validator(schema).iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_compose_has_no_obsolete_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose


def test_compose_has_infrastructure_and_jobs(compose_services: dict[str, dict[str, Any]]) -> None:
    for name in ("kafka", "kafka-init", "postgres", "migrate", "redis", "prometheus", "grafana"):
        assert name in compose_services, name
        assert "profiles" not in compose_services[name], f"{name} must start with a plain `docker compose up`"
    assert _command(compose_services["kafka-init"]) == ["topics"]
    assert _command(compose_services["migrate"]) == ["migrate"]
    kafka_env = _environment(compose_services["kafka"])
    assert kafka_env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "healthcheck" in compose_services["kafka"]
    assert "healthcheck" in compose_services["postgres"]
    assert "healthcheck" in compose_services["redis"]
    assert compose_services["kafka-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert compose_services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


# --- (b) every service in services.SERVICES, and nothing else, is served ---


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_bridge_service_is_in_compose(name: str, compose_services: dict[str, dict[str, Any]]) -> None:
    assert name in compose_services, f"{name} missing from docker-compose.yml"
    service = compose_services[name]
    assert _command(service) == ["serve", name]
    assert service.get("image") == "m3bridge:latest"
    assert "build" in service
    env = _environment(service)
    assert env.get("M3B_HTTP_PORT") == CONTAINER_PORT
    assert env.get("M3B_HTTP_HOST") == "0.0.0.0"
    assert "M3B_SERVICE_NAME" not in env, "the service name comes from `serve <name>`"
    healthcheck = service.get("healthcheck")
    assert healthcheck, f"{name} has no healthcheck"
    assert not healthcheck.get("disable", False)
    assert any("/readyz" in str(part) for part in healthcheck["test"])
    assert service.get("restart") == "unless-stopped"
    for job in ("kafka-init", "migrate"):
        assert service["depends_on"][job]["condition"] == "service_completed_successfully"
    ports = _published_ports(service)
    if name not in PUBLISHED:
        assert ports == [], f"{name} is reached on the compose network only"
        return
    assert len(ports) == 1, f"{name} should publish exactly one port"
    assert ports[0][1] == CONTAINER_PORT
    assert ports[0][0], f"{name} needs a fixed host port"


def test_host_ports_are_unique(compose_services: dict[str, dict[str, Any]]) -> None:
    host_ports = [host for service in compose_services.values() for host, _ in _published_ports(service) if host]
    duplicates = {port for port in host_ports if host_ports.count(port) > 1}
    assert not duplicates, f"host ports used twice: {sorted(duplicates)}"


def test_bridge_host_ports_follow_the_service_table(compose_services: dict[str, dict[str, Any]]) -> None:
    for entry in SERVICES.values():
        if entry.name in PUBLISHED:
            assert _published_ports(compose_services[entry.name]) == [(str(entry.local_port), CONTAINER_PORT)]


def test_only_what_users_reach_is_published_and_on_loopback_by_default(
    compose_services: dict[str, dict[str, Any]],
) -> None:
    published = {name for name, service in compose_services.items() if service.get("ports")}
    assert published == PUBLISHED
    for name in ("kafka", "postgres", "redis", "token-service", "order-writer"):
        assert not compose_services[name].get("ports"), f"{name} must not be published"
        assert not compose_services[name].get("expose"), name
        assert compose_services[name].get("network_mode") != "host", name
    for name in sorted(published):
        for port in compose_services[name]["ports"]:
            text = str(port)
            assert "${M3B_PUBLISH_ADDRESS:-127.0.0.1}" in text, f"{name}: {text} needs the bind-address variable"
        for address, host, _ in _port_bindings(compose_services[name]):
            assert address == "127.0.0.1", f"{name} publishes {host} on {address or 'every interface'}"
            assert host.isdigit(), f"{name}: host port {host!r}"


def test_the_port_parser_resolves_variables_and_sees_unbound_ports() -> None:
    service = {"ports": ["${A:-127.0.0.1}:${B:-8102}:8000", "9000:9000", "9001", {"target": 1, "published": "2"}]}
    expected = [("127.0.0.1", "8102", "8000"), ("", "9000", "9000"), ("", "", "9001"), ("", "2", "1")]
    assert _port_bindings(service) == expected


def test_kafka_has_no_host_listener(compose_services: dict[str, dict[str, Any]]) -> None:
    env = _environment(compose_services["kafka"])
    assert "localhost" not in env["KAFKA_ADVERTISED_LISTENERS"]
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:19092"


def test_the_compose_file_holds_no_password(
    compose: dict[str, Any], compose_services: dict[str, dict[str, Any]]
) -> None:
    lines = [line.split(" #")[0] for line in COMPOSE_FILE.read_text(encoding="utf-8").splitlines()]
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    literal = re.search(r"(?i)password\w*:[ \t]*\S", text.replace("POSTGRES_PASSWORD_FILE:", ""))
    assert not literal, f"a literal password: {literal.group(0) if literal else ''}"
    assert "POSTGRES_PASSWORD:" not in text
    postgres = compose_services["postgres"]
    assert _environment(postgres)["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres-password"
    assert postgres["secrets"] == ["postgres-password"]
    assert compose["secrets"]["postgres-password"]["file"] == "./deploy/secrets/postgres-password"
    for name, service in compose_services.items():
        for key, value in _environment(service).items():
            if key.endswith("_URL"):
                assert "@" not in value or ":" not in value.split("://", 1)[-1].split("@", 1)[0], f"{name}: {key}"
            if re.search(r"(?i)password|_secret$", key) and not key.endswith("_FILE"):
                raise AssertionError(f"{name}: {key} must come from a secret file")


def test_the_state_store_users_get_the_postgres_password_as_a_setting(
    compose_services: dict[str, dict[str, Any]],
) -> None:
    for name, service in compose_services.items():
        targets = {s["target"]: s["source"] for s in service.get("secrets") or [] if isinstance(s, dict)}
        if name in STATE_USERS:
            assert targets.get("m3b_state_password") == "postgres-password", name
            assert _environment(service)["M3B_STATE_URL"].startswith("postgresql+asyncpg://m3bridge@postgres:5432/")
        else:
            assert "m3b_state_password" not in targets, name
    for name in sorted(SERVICES):
        uses_state = "uses_state=True" in (ROOT / "services" / name.replace("-", "_") / "app.py").read_text()
        assert uses_state == (name in STATE_USERS), name


def test_the_state_password_stays_out_of_the_url_and_joins_it_only_to_open_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "m3b_state_password").write_text("generated-secret\n")
    monkeypatch.setenv("M3B_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("M3B_ENV_FILE", str(ROOT / "does-not-exist.env"))
    monkeypatch.setenv("M3B_STATE_URL", "postgresql+asyncpg://m3bridge@postgres:5432/m3bridge")
    settings = BridgeSettings()
    assert settings.state_url == "postgresql+asyncpg://m3bridge@postgres:5432/m3bridge"
    assert "generated-secret" not in repr(settings)
    assert settings.state_dsn() == "postgresql+asyncpg://m3bridge:generated-secret@postgres:5432/m3bridge"
    assert "generated-secret" in settings.secret_values()


def test_a_password_in_the_state_url_is_refused_without_being_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M3B_ENV_FILE", str(ROOT / "does-not-exist.env"))
    monkeypatch.setenv("M3B_STATE_URL", "postgresql+asyncpg://m3bridge:in-the-url-pw@postgres:5432/m3bridge")
    with pytest.raises(ValueError, match="M3B_STATE_URL carries a password: give it as M3B_STATE_PASSWORD") as refused:
        BridgeSettings()
    assert "in-the-url-pw" not in str(refused.value)
    assert "in-the-url-pw" not in repr(refused.value)


def test_the_secret_files_are_ignored_by_git(compose: dict[str, Any]) -> None:
    ignored = set((ROOT / ".gitignore").read_text(encoding="utf-8").splitlines())
    for secret in compose["secrets"].values():
        path = Path(secret["file"].removeprefix("./"))
        assert any(path.match(pattern) for pattern in ignored if pattern), f"{path} is not git-ignored"


def test_no_compose_service_serves_an_unknown_name(compose_services: dict[str, dict[str, Any]]) -> None:
    for compose_name, service in compose_services.items():
        command = _command(service)
        if command[:1] == ["serve"]:
            assert len(command) == 2, f"{compose_name}: {command}"
            assert command[1] in SERVICES, f"{compose_name} serves unknown service {command[1]!r}"
            assert command[1] == compose_name


def test_ionapi_secret_goes_to_token_service_only(
    compose: dict[str, Any], compose_services: dict[str, dict[str, Any]]
) -> None:
    assert compose["secrets"]["ionapi"]["file"] == "./deploy/secrets/tenant.ionapi"
    for name, service in compose_services.items():
        secrets = [s if isinstance(s, str) else s["source"] for s in service.get("secrets") or []]
        env = _environment(service)
        if name == "token-service":
            assert sorted(secrets) == ["ionapi", "read-key", "service-keys"]  # read-key: its /healthz detail
            assert env["ION_API_FILE"] == "/run/secrets/ionapi"
        else:
            assert "ionapi" not in secrets, f"{name} must not see the .ionapi credentials"
            assert "ION_API_FILE" not in env, name


def test_ionapi_files_are_ignored_by_git() -> None:
    assert "deploy/secrets/*.ionapi" in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()


# --- (c) every M3B_* key in compose is a setting ---


def test_compose_env_keys_are_settings(compose_services: dict[str, dict[str, Any]]) -> None:
    """Every M3B_* variable a container gets is a field of that service's settings class (jobs: the shared one)."""
    classes = settings_classes()
    unknown = {
        f"{compose_name}: {key}"
        for compose_name, service in compose_services.items()
        for key in _environment(service)
        if key.upper().startswith(ENV_PREFIX)
        and key.upper() not in SETTINGS_LOCATION_KEYS
        and key[len(ENV_PREFIX) :].lower() not in classes.get(compose_name, BridgeSettings).model_fields
    }
    assert not unknown, f"not settings of the service they are given to: {sorted(unknown)}"


def test_only_m3_callers_get_a_token_service_key(
    compose: dict[str, Any], compose_services: dict[str, dict[str, Any]]
) -> None:
    for name, service in compose_services.items():
        targets = {s["target"]: s["source"] for s in service.get("secrets") or [] if isinstance(s, dict)}
        if name in m3_callers():
            assert targets.get("m3b_token_service_key") == f"{name}-key"
            assert compose["secrets"][f"{name}-key"]["file"] == f"./deploy/secrets/{name}.key"
        else:
            assert "m3b_token_service_key" not in targets, name


def test_compose_env_values_are_valid_settings(
    compose_services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shared env parses into BridgeSettings (types, literals, bounds)."""
    env = _environment(compose_services["order-writer"])
    for key, value in env.items():
        if key.startswith(ENV_PREFIX) and key not in SETTINGS_LOCATION_KEYS:
            monkeypatch.setenv(key, re.sub(r"\$\{(\w+):-([^}]*)\}", r"\2", value))
    monkeypatch.setenv("M3B_ENV_FILE", str(ROOT / "does-not-exist.env"))
    monkeypatch.setenv("M3B_SECRETS_DIR", "")
    settings = BridgeSettings()
    assert settings.http_host == "0.0.0.0"
    assert settings.http_port == int(CONTAINER_PORT)
    assert settings.kafka_enable_idempotence is True
    assert settings.state_url.startswith("postgresql+asyncpg://")


def test_inbound_endpoints_get_their_secrets(compose_services: dict[str, dict[str, Any]]) -> None:
    def targets(name: str) -> set[str]:
        return {s["target"] for s in compose_services[name].get("secrets") or [] if isinstance(s, dict)}

    assert {"m3b_webhook_secret", "m3b_quotewerks_api_key"} <= targets("quote-ingest")
    assert "m3b_bod_secret" in targets("bod-listener")
    assert "m3b_quotewerks_api_key" in targets("catalog-sync")


# --- (d) replicas: token-service shares its budget through Redis, order-writer scales ---


def test_token_service_shares_its_budget_through_redis(
    compose_services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    token_service = compose_services["token-service"]
    url = _environment(token_service)["M3B_BUDGET_REDIS_URL"]
    assert url == "redis://redis:6379/0", "compose's redis service, on the compose network"
    redis = compose_services["redis"]
    assert redis["image"].startswith("redis:")
    assert token_service["depends_on"]["redis"]["condition"] == "service_healthy"
    for job in ("kafka-init", "migrate"):
        # A service's own depends_on replaces the anchor's: the jobs must still come first.
        assert token_service["depends_on"][job]["condition"] == "service_completed_successfully", job
    for key, value in _environment(token_service).items():
        # Compose's own interpolation, with nothing set: `${VAR:-default}` is the default.
        monkeypatch.setenv(key, re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value))
    monkeypatch.setenv("M3B_ENV_FILE", str(ROOT / "does-not-exist.env"))
    monkeypatch.setenv("M3B_SECRETS_DIR", "")
    assert TokenServiceSettings().budget_redis_url == url
    users = {name for name, service in compose_services.items() if "M3B_BUDGET_REDIS_URL" in _environment(service)}
    assert users == {"token-service"}


def test_redis_keeps_nothing(compose: dict[str, Any], compose_services: dict[str, dict[str, Any]]) -> None:
    """The budget is a pace over the next seconds and the token is fetched again: no snapshots, no volume."""
    redis = compose_services["redis"]
    command = _command(redis)
    assert command[0] == "redis-server"
    assert command[command.index("--save") + 1] == "", "no snapshots"
    assert command[command.index("--appendonly") + 1] == "no"
    assert not redis.get("volumes"), "nothing to keep"
    assert redis.get("read_only") is True
    assert "/data" in redis["tmpfs"]
    assert "redis" not in str(compose.get("volumes") or {})


def _scaling_blockers(service: dict[str, Any]) -> list[str]:
    """What stops `docker compose up --scale <service>=N`: a fixed name, a fixed host port, or one identity for all."""
    blockers = []
    if "container_name" in service:
        blockers.append("container_name")
    if "hostname" in service:
        blockers.append("hostname: every replica would hold quotes under one owner")
    if any(host for host, _ in _published_ports(service)):
        blockers.append("a fixed host port")
    if "M3B_INSTANCE_ID" in _environment(service):
        blockers.append("M3B_INSTANCE_ID: every replica would be the same instance")
    return blockers


def test_order_writer_can_be_scaled(compose_services: dict[str, dict[str, Any]]) -> None:
    assert _scaling_blockers(compose_services["order-writer"]) == []
    assert "--scale order-writer=" in COMPOSE_FILE.read_text(encoding="utf-8"), "say that it scales"


def test_the_scaling_check_sees_what_blocks_it(compose_services: dict[str, dict[str, Any]]) -> None:
    order_writer = compose_services["order-writer"]
    assert _scaling_blockers({**order_writer, "container_name": "m3bridge-order-writer"})
    assert _scaling_blockers({**order_writer, "hostname": "order-writer"})
    assert _scaling_blockers({**order_writer, "ports": ["127.0.0.1:8103:8000"]})
    assert _scaling_blockers({**order_writer, "environment": {"M3B_INSTANCE_ID": "one"}})
    assert _scaling_blockers(compose_services["quote-ingest"]), "a published service has a fixed host port"


def test_postgres_takes_the_connections_of_as_many_order_writers_as_partitions(
    compose_services: dict[str, dict[str, Any]],
) -> None:
    command = compose_services["postgres"]["command"]
    [max_connections] = [int(arg.split("=", 1)[1]) for arg in command if arg.startswith("max_connections=")]
    partitions = int(_environment(compose_services["kafka-init"])["M3B_KAFKA_TOPIC_PARTITIONS"])
    order_writer = OrderWriterSettings.model_fields["state_pool_size"].default + BURST_CONNECTIONS
    other = BridgeSettings.model_fields["state_pool_size"].default + BURST_CONNECTIONS
    with_state = [name for name, cls in settings_classes().items() if name not in ("order-writer", "token-service",
                                                                                  "inventory-query")]  # fmt: skip
    tools = 10  # migrate, m3bridge doctor / work / reconcile, psql
    assert max_connections >= partitions * order_writer + len(with_state) * other + tools
