"""Static checks of the container deployment: Dockerfile, docker-compose.yml, Prometheus config and rules.

Docker is not needed: the compose file is validated against the vendored Compose Specification schema and
cross-checked against `services.SERVICES` and `BridgeSettings`; and `promtool` (it must be installed) checks them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from faststream.prometheus.container import MetricsContainer
from jsonschema import Draft201909Validator
from prometheus_client import REGISTRY, CollectorRegistry

import shared.metrics
from services import SERVICES, m3_callers, settings_classes
from shared.settings import ENV_PREFIX, BridgeSettings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_SCHEMA = ROOT / "tests" / "schemas" / "compose-spec.json"
DOCKERFILE = ROOT / "Dockerfile"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES_DIR = PROMETHEUS_DIR / "rules"
GRAFANA_PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
CONTAINER_PORT = "8000"
# Read by shared.settings itself (where to look for settings), not fields of BridgeSettings.
SETTINGS_LOCATION_KEYS = {"M3B_SECRETS_DIR", "M3B_ENV_FILE"}


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = _load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def compose_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services = compose["services"]
    assert isinstance(services, dict)
    return services


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
PUBLISHED = {"quote-ingest", "catalog-sync", "inventory-query", "bod-listener", "prometheus", "grafana"}
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
    for name in ("kafka", "kafka-init", "postgres", "migrate", "prometheus", "grafana"):
        assert name in compose_services, name
        assert "profiles" not in compose_services[name], f"{name} must start with a plain `docker compose up`"
    assert _command(compose_services["kafka-init"]) == ["topics"]
    assert _command(compose_services["migrate"]) == ["migrate"]
    kafka_env = _environment(compose_services["kafka"])
    assert kafka_env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "healthcheck" in compose_services["kafka"]
    assert "healthcheck" in compose_services["postgres"]
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
    for name in ("kafka", "postgres", "token-service", "order-writer"):
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


def test_the_state_password_goes_into_the_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "m3b_state_password").write_text("generated-secret\n")
    monkeypatch.setenv("M3B_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("M3B_ENV_FILE", str(ROOT / "does-not-exist.env"))
    monkeypatch.setenv("M3B_STATE_URL", "postgresql+asyncpg://m3bridge@postgres:5432/m3bridge")
    settings = BridgeSettings()
    assert settings.state_url == "postgresql+asyncpg://m3bridge:generated-secret@postgres:5432/m3bridge"
    assert "generated-secret" in settings.secret_values()


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
            assert secrets == ["ionapi", "service-keys"]
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


# --- (d) Dockerfile ---


def _dockerfile_stages() -> list[list[tuple[str, str]]]:
    """Instructions per build stage, as (INSTRUCTION, arguments), with line continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    stages: list[list[tuple[str, str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append([])
        assert stages, f"instruction before FROM: {line}"
        stages[-1].append((instruction, arguments.strip()))
    return stages


def _last(stage: list[tuple[str, str]], instruction: str) -> str | None:
    values = [arguments for name, arguments in stage if name == instruction]
    return values[-1] if values else None


def test_dockerfile_is_multi_stage_on_python_311_slim() -> None:
    stages = _dockerfile_stages()
    assert len(stages) >= 2
    runtime_from = stages[-1][0][1].split()[0]
    assert runtime_from.startswith("python:3.11-slim")
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "pip install ." in text
    assert "[dev]" not in text, "the image must not carry the dev extras"


def test_dockerfile_runtime_stage() -> None:
    runtime = _dockerfile_stages()[-1]
    entrypoint = _last(runtime, "ENTRYPOINT")
    assert entrypoint is not None
    assert json.loads(entrypoint) == ["m3bridge"]
    cmd = _last(runtime, "CMD")
    assert cmd is not None
    command = json.loads(cmd)
    assert command[0] == "serve"
    assert command[1] in SERVICES
    user = _last(runtime, "USER")
    assert user is not None
    assert user.split(":")[0] not in {"root", "0"}, "the runtime stage must run as a non-root user"
    exposed = {port.split("/")[0] for name, args in runtime if name == "EXPOSE" for port in args.split()}
    assert CONTAINER_PORT in exposed
    healthcheck = _last(runtime, "HEALTHCHECK")
    assert healthcheck is not None
    assert "http://127.0.0.1:8000/readyz" in healthcheck
    assert "curl" not in healthcheck, "python:3.11-slim has no curl"


def test_dockerignore_keeps_the_context_small() -> None:
    entries = set((ROOT / ".dockerignore").read_text(encoding="utf-8").split())
    assert {".venv", "var", ".git", "tests"} <= entries


# --- (e) Prometheus config and rules ---


def test_prometheus_scrapes_exactly_the_six_services() -> None:
    config = _load_yaml(PROMETHEUS_CONFIG)
    targets = [
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    ]
    assert sorted(targets) == sorted(f"{name}:{CONTAINER_PORT}" for name in SERVICES)
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]


def test_prometheus_mounts_match_the_config(compose_services: dict[str, dict[str, Any]]) -> None:
    volumes = [str(volume) for volume in compose_services["prometheus"]["volumes"]]
    assert any(volume.startswith("./deploy/prometheus:/etc/prometheus") for volume in volumes)
    grafana_volumes = [str(volume) for volume in compose_services["grafana"]["volumes"]]
    assert any(v.startswith("./deploy/grafana/provisioning:/etc/grafana/provisioning") for v in grafana_volumes)


def _rules() -> list[dict[str, Any]]:
    files = sorted(RULES_DIR.glob("*.yml"))
    assert files, f"no rule files in {RULES_DIR}"
    rules = []
    for path in files:
        document = _load_yaml(path)
        assert document["groups"], path
        for group in document["groups"]:
            assert group["name"]
            assert group["rules"], f"{path}: group {group['name']} is empty"
            rules.extend(group["rules"])
    return rules


def test_alert_rules_are_complete() -> None:
    rules = _rules()
    alerts = {rule.get("alert") for rule in rules}
    assert {"ServiceDown", "ServiceNotReady"} <= alerts
    for rule in rules:
        name = rule.get("alert") or rule.get("record")
        assert name, rule
        assert str(rule.get("expr", "")).strip(), f"{name} has no expr"
        if "alert" in rule:
            annotations = rule.get("annotations") or {}
            assert str(annotations.get("summary", "")).strip(), f"{name} has no summary"
            assert str(annotations.get("description", "")).strip(), f"{name} has no description"
            assert (rule.get("labels") or {}).get("severity"), f"{name} has no severity label"


# The series names prometheus-client exposes per metric family type.
SERIES_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "info": ("_info",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}


def _exported_metric_names() -> set[str]:
    """Every series name the services can export: shared.metrics plus faststream's with our prefix."""
    settings_classes()  # imports every service's modules, which register their metrics
    faststream_registry = CollectorRegistry()
    MetricsContainer(faststream_registry, metrics_prefix=shared.metrics.PREFIX, custom_label_names=[])
    names: set[str] = set()
    for registry in (REGISTRY, faststream_registry):
        for family in registry.collect():
            names.update(f"{family.name}{suffix}" for suffix in SERIES_SUFFIXES.get(family.type, ("",)))
    return names


def test_the_processing_errors_runbook_points_at_the_dead_letters() -> None:
    [rule] = [rule for rule in _rules() if rule.get("alert") == "MessageProcessingErrors"]
    description = rule["annotations"]["description"]
    assert "dlq.{{ $labels.app_name }}.v1" in description
    assert "m3bridge dead-letters list --service" in description
    assert "m3bridge dead-letters replay" in description


def test_alert_rules_use_only_exported_metrics() -> None:
    exported = _exported_metric_names()
    for rule in _rules():
        used = set(re.findall(rf"\b{shared.metrics.PREFIX}_[a-zA-Z0-9_]+", str(rule["expr"])))
        unknown = used - exported
        assert not unknown, f"{rule.get('alert')} uses metrics no service exports: {sorted(unknown)}"


# --- (f) Grafana dashboard ---


def _dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads((GRAFANA_PROVISIONING / "dashboards" / "m3bridge.json").read_text())
    return dashboard


def test_the_dashboard_is_provisioned_from_the_mounted_folder() -> None:
    provider = _load_yaml(GRAFANA_PROVISIONING / "dashboards" / "m3bridge.yml")
    [entry] = provider["providers"]
    # docker-compose.yml mounts deploy/grafana/provisioning at /etc/grafana/provisioning.
    assert entry["options"]["path"] == "/etc/grafana/provisioning/dashboards"
    assert entry["type"] == "file"
    datasources = _load_yaml(GRAFANA_PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    uids = {source["uid"] for source in datasources}
    dashboard = _dashboard()
    assert dashboard["uid"]
    assert dashboard["title"]
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels), "panel ids must be unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] <= 24 - grid["w"], panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in uids, panel["title"]


def test_the_dashboard_uses_only_exported_metrics() -> None:
    exported = _exported_metric_names() | {"up"}
    for panel in _dashboard()["panels"]:
        for target in panel.get("targets", []):
            used = set(re.findall(rf"\b{shared.metrics.PREFIX}_[a-zA-Z0-9_]+", target["expr"]))
            unknown = used - exported
            assert not unknown, f"panel {panel['title']!r} uses metrics no service exports: {sorted(unknown)}"


def test_promtool_accepts_config_and_rules(tmp_path: Path) -> None:
    """Prometheus' own checker must accept the configuration and the alert rules (Debian's `prometheus` package
    has it; `.ci/run` installs it)."""
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is not installed: apt-get install prometheus"
    config = _load_yaml(PROMETHEUS_CONFIG)
    assert isinstance(config, dict)
    # The container path of the rules does not exist here: check a copy pointing at the repository's rules.
    config["rule_files"] = [str(RULES_DIR / "*.yml")]
    local_config = tmp_path / "prometheus.yml"
    local_config.write_text(yaml.safe_dump(config), encoding="utf-8")
    for args in (
        ["check", "config", str(local_config)],
        ["check", "rules", *map(str, sorted(RULES_DIR.glob("*.yml")))],
    ):
        result = subprocess.run([promtool, *args], capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}\n{result.stderr}"


def test_the_image_carries_the_default_mapping_rules() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "COPY --chown=m3bridge:m3bridge deploy/config /app/deploy/config" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert "!deploy/config" in ignored[ignored.index("deploy") :]
    from shared.settings import DEFAULT_MAPPING_FILE as DEFAULT_RULES

    assert not DEFAULT_RULES.is_absolute()
    assert (ROOT / DEFAULT_RULES).exists()


def test_inbound_endpoints_get_their_secrets(compose_services: dict[str, dict[str, Any]]) -> None:
    def targets(name: str) -> set[str]:
        return {s["target"] for s in compose_services[name].get("secrets") or [] if isinstance(s, dict)}

    assert {"m3b_webhook_secret", "m3b_quotewerks_api_key"} <= targets("quote-ingest")
    assert "m3b_bod_secret" in targets("bod-listener")
    assert "m3b_quotewerks_api_key" in targets("catalog-sync")
