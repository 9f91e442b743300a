"""Static checks of the Kubernetes manifests in deploy/kubernetes: Kubernetes API schemas, compose parity, policies.

No cluster is needed: every manifest is validated offline against the API schemas that `kubernetes-validate`
ships (KEDA's ScaledObject against its CRD's schema, vendored in tests/fixtures), then cross-checked against
docker-compose.yml, `services.SERVICES`, the settings classes and the topics and consumer groups the code uses.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]  # ships no type information
import pytest
import yaml

from services import SERVICES, settings_classes
from services.token_service.app import TokenServiceSettings
from shared.contracts.topics import QUOTE_APPROVED
from shared.platform.settings import ENV_PREFIX, BridgeSettings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
KUSTOMIZATION = MANIFESTS / "kustomization.yaml"
COMPOSE_FILE = ROOT / "docker-compose.yml"
# The newest Kubernetes whose schemas kubernetes-validate 1.37.0 bundles.
KUBERNETES_VERSION = "1.37.0"
NAMESPACE = "m3bridge"
CONFIG_MAP = "m3bridge-config"
IMAGE = "m3bridge:latest"
CONTAINER_PORT = 8000
SECRETS_DIR = "/run/secrets"
# Read by shared.platform.settings itself (where to look for settings), not fields of BridgeSettings.
SETTINGS_LOCATION_KEYS = {"M3B_SECRETS_DIR", "M3B_ENV_FILE"}
# The compose jobs and the `m3bridge` command each runs (compose `command`, Kubernetes `args`).
JOBS = {"kafka-init": ["topics"], "migrate": ["migrate"]}
# What compose publishes: reached from outside the namespace.
PUBLISHED = {"quote-ingest", "catalog-sync", "inventory-query", "bod-listener"}
SCRAPER_NAMESPACE_LABELS = {"m3bridge.io/metrics": "allowed"}
PART_OF = {"app.kubernetes.io/part-of": "m3bridge"}
# Runs beside the six services: the rate budget and ION token the token-service replicas share.
REDIS = "redis"
REDIS_PORT = 6379
# Applied by hand, not by the kustomization: it needs KEDA's CRDs in the cluster (README.md "Replicas").
KEDA_SCALED_OBJECT = MANIFESTS / "order-writer-keda.yaml"
OPTIONAL_MANIFESTS = {KEDA_SCALED_OBJECT.name}
KEDA_SCHEMA = ROOT / "tests" / "fixtures" / "keda-scaledobject-v2.20.2.schema.yaml"
# The metadata keys of KEDA v2.20.2's kafka scaler read from a trigger (pkg/scalers/kafka_scaler.go, the
# `keda:"name=...,order=triggerMetadata..."` tags of kafkaMetadata); a misspelt key would be silently ignored.
KAFKA_TRIGGER_KEYS = {
    "bootstrapServers", "consumerGroup", "topic", "partitionLimitation", "lagThreshold", "activationLagThreshold",
    "offsetResetPolicy", "allowIdleConsumers", "excludePersistentLag", "scaleToZeroOnInvalidOffset",
    "limitToPartitionsWithLag", "ensureEvenDistributionOfPartitions", "version", "tls", "unsafeSsl", "sasl",
    "saslTokenProvider", "awsRegion",
}  # fmt: skip
ORDER_WRITER_APP = ROOT / "services" / "order_writer" / "app.py"


def _documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text(encoding="utf-8")) if document]


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    data = yaml.safe_load(KUSTOMIZATION.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def resources(kustomization: dict[str, Any]) -> list[dict[str, Any]]:
    """Every object the kustomization applies, in its order."""
    return [document for name in kustomization["resources"] for document in _documents(MANIFESTS / name)]


def _find(resources: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


@pytest.fixture(scope="module")
def compose_services() -> dict[str, dict[str, Any]]:
    services = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"]
    assert isinstance(services, dict)
    return services


#: Compose services of the monitoring stack: a cluster has its own.
MONITORING = ("prometheus", "alertmanager", "grafana")


@pytest.fixture(scope="module")
def compose_secret_files() -> dict[str, str]:
    """Compose secret name → the file's name under deploy/secrets, for the bridge's own containers (the cluster's
    monitoring stack, not these manifests, runs Prometheus and Alertmanager)."""
    compose = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    monitoring = {
        secret if isinstance(secret, str) else secret["source"]
        for name in MONITORING
        for secret in compose["services"].get(name, {}).get("secrets", [])
    }
    return {
        name: PurePosixPath(entry["file"]).name for name, entry in compose["secrets"].items() if name not in monitoring
    }


def _pod_spec(resource: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = resource["spec"]["template"]["spec"]
    return spec


def _container(resource: dict[str, Any]) -> dict[str, Any]:
    [container] = _pod_spec(resource)["containers"]
    assert isinstance(container, dict)
    return container


def _workloads(resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The Deployments and Jobs by name (the compose service each stands for)."""
    return {r["metadata"]["name"]: r for r in resources if r["kind"] in {"Deployment", "Job"}}


def _environment(resource: dict[str, Any], config: dict[str, str]) -> dict[str, str]:
    """What the container's environment holds: its ConfigMaps (only m3bridge-config exists) and its own `env`."""
    container = _container(resource)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert source["configMapRef"]["name"] == CONFIG_MAP, source
        env.update(config)
    for variable in container.get("env", []):
        assert "valueFrom" not in variable, f"{variable['name']}: settings come from the ConfigMap or secret files"
        env[variable["name"]] = str(variable["value"])
    return env


def _compose_environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def _compose_secret_mounts(service: dict[str, Any]) -> set[tuple[str, str]]:
    """(compose secret, file name under /run/secrets) of a compose service."""
    mounts = set()
    for entry in service.get("secrets") or []:
        source = entry if isinstance(entry, str) else entry["source"]
        target = entry if isinstance(entry, str) else entry.get("target", source)
        mounts.add((source, target))
    return mounts


def _secret_mounts(resource: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(Secret name, key, file name) of every secret file mounted under /run/secrets."""
    pod = _pod_spec(resource)
    mounted = {m["name"]: m["mountPath"] for m in _container(resource).get("volumeMounts", [])}
    mounts = set()
    for volume in pod.get("volumes", []):
        if "secret" in volume:
            raise AssertionError(f"{volume['name']}: mount secrets through the projected volume at {SECRETS_DIR}")
        if "projected" not in volume:
            continue
        assert mounted.get(volume["name"]) == SECRETS_DIR, volume["name"]
        for source in volume["projected"]["sources"]:
            secret = source["secret"]
            for item in secret["items"]:
                mounts.add((secret["name"], item["key"], item["path"]))
    return mounts


# --- (a) the kustomization and the API schemas ---


def test_the_kustomization_lists_every_manifest(kustomization: dict[str, Any]) -> None:
    files = {path.name for path in MANIFESTS.glob("*.yaml")} - {KUSTOMIZATION.name}
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed)), "a file listed twice"
    assert files >= OPTIONAL_MANIFESTS
    assert set(listed) == files - OPTIONAL_MANIFESTS, "the optional manifests need CRDs a cluster may not have"
    assert kustomization["namespace"] == NAMESPACE
    assert not list(MANIFESTS.glob("*.yml")), "name manifests *.yaml"


def test_the_kubernetes_version_is_bundled() -> None:
    assert kubernetes_validate.latest_version().startswith("1.37")


def test_every_manifest_validates_against_the_kubernetes_schemas(resources: list[dict[str, Any]]) -> None:
    assert resources
    errors = []
    for resource in resources:
        try:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as error:
            errors.append(f"{resource['kind']} {resource['metadata']['name']}: {error}")
    assert not errors, "\n".join(errors)


def test_the_validator_rejects_a_broken_manifest(resources: list[dict[str, Any]]) -> None:
    """The schema check sees mistakes: an unknown field (strict), a wrong type, a missing required field."""
    deployment = _find(resources, "Deployment", "order-writer")
    unknown = copy.deepcopy(deployment)
    _container(unknown)["readinesProbe"] = _container(unknown)["readinessProbe"]
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "one"
    missing = copy.deepcopy(deployment)
    del _container(missing)["name"]
    for broken in (unknown, wrong_type, missing):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_everything_is_in_the_namespace(resources: list[dict[str, Any]]) -> None:
    [namespace] = [r for r in resources if r["kind"] == "Namespace"]
    assert namespace["metadata"]["name"] == NAMESPACE
    for resource in resources:
        if resource["kind"] != "Namespace":
            assert resource["metadata"].get("namespace") == NAMESPACE, resource["metadata"]["name"]


def test_no_secret_value_is_in_the_manifests(resources: list[dict[str, Any]]) -> None:
    assert not [r for r in resources if r["kind"] == "Secret"], "Secrets are created by hand (README.md)"
    for resource in resources:
        if resource["kind"] in {"Deployment", "Job"}:
            for variable in _container(resource).get("env", []):
                assert "password" not in variable["name"].lower(), variable["name"]
                assert not variable["name"].upper().endswith(("_SECRET", "_KEY")), variable["name"]


# --- (b) the six services and the two jobs, as compose runs them ---


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_service_has_a_deployment_and_a_service(name: str, resources: list[dict[str, Any]]) -> None:
    deployment = _find(resources, "Deployment", name)
    service = _find(resources, "Service", name)
    container = _container(deployment)
    assert container["image"] == IMAGE
    assert container["args"] == ["serve", name]
    assert "command" not in container, "the image's ENTRYPOINT is `m3bridge`"
    [port] = container["ports"]
    assert port["containerPort"] == CONTAINER_PORT
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert pod_labels["app.kubernetes.io/name"] == name
    assert PART_OF.items() <= pod_labels.items()
    [service_port] = service["spec"]["ports"]
    assert service_port["port"] == CONTAINER_PORT, "M3B_TOKEN_SERVICE_URL and Prometheus use <service>:8000"
    assert service_port["targetPort"] in {CONTAINER_PORT, port.get("name")}
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP", "exposure is your ingress' job"


def test_nothing_but_the_six_services_redis_and_the_jobs_runs(resources: list[dict[str, Any]]) -> None:
    deployments = {r["metadata"]["name"] for r in resources if r["kind"] == "Deployment"}
    services = {r["metadata"]["name"] for r in resources if r["kind"] == "Service"}
    jobs = {r["metadata"]["name"] for r in resources if r["kind"] == "Job"}
    assert deployments == services == set(SERVICES) | {REDIS}
    assert jobs == set(JOBS)
    assert not {r["kind"] for r in resources} & {"StatefulSet", "PersistentVolumeClaim"}, "Kafka and PostgreSQL"


@pytest.mark.parametrize("name", sorted(JOBS))
def test_the_jobs_run_as_compose_runs_them(
    name: str, resources: list[dict[str, Any]], compose_services: dict[str, dict[str, Any]]
) -> None:
    job = _find(resources, "Job", name)
    container = _container(job)
    assert container["image"] == IMAGE
    assert container["args"] == JOBS[name] == [str(part) for part in compose_services[name]["command"]]
    assert _pod_spec(job)["restartPolicy"] in {"OnFailure", "Never"}


def _budget_problems(token_service: dict[str, Any], redis: dict[str, Any], config: dict[str, str]) -> list[str]:
    """Why token-service's replicas would not share one rate budget (each would spend the tenant's whole limit)."""
    spec = token_service["spec"]
    replicas = spec.get("replicas", 1)
    url = _environment(token_service, config).get("M3B_BUDGET_REDIS_URL", "")
    problems = []
    if not url:
        if replicas > 1 or spec.get("strategy", {}).get("type") != "Recreate":
            problems.append(f"{replicas} replicas (or a rolling update) without M3B_BUDGET_REDIS_URL")
        return problems
    [port] = redis["spec"]["ports"]
    if not url.startswith(f"redis://{redis['metadata']['name']}:{port['port']}/"):
        problems.append(f"M3B_BUDGET_REDIS_URL {url} is not the redis Service")
    return problems


def test_token_service_replicas_share_the_budget_through_redis(
    resources: list[dict[str, Any]], config: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = _find(resources, "Deployment", "token-service")
    redis = _find(resources, "Service", REDIS)
    assert deployment["spec"]["replicas"] > 1, "a lease must not wait for a restarted pod"
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, "keep every replica during a rollout"
    assert _budget_problems(deployment, redis, config) == []
    text = (MANIFESTS / "token-service.yaml").read_text(encoding="utf-8")
    assert "ONE replica" not in text
    assert "Redis" in text, "say how the replicas share the budget"
    assert "M3B_BUDGET_REDIS_URL" not in config, "a token-service setting: its own env, as compose gives it"
    # The URL is one TokenServiceSettings accepts (no credentials in it).
    for key, value in _environment(deployment, config).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("M3B_ENV_FILE", str(ROOT / "does-not-exist.env"))
    monkeypatch.setenv("M3B_SECRETS_DIR", "")
    assert TokenServiceSettings().budget_redis_url == f"redis://{REDIS}:{REDIS_PORT}/0"
    assert not [r for r in resources if r["kind"] == "HorizontalPodAutoscaler"], "KEDA creates order-writer's"


def test_the_budget_check_sees_replicas_without_redis(resources: list[dict[str, Any]], config: dict[str, str]) -> None:
    deployment = _find(resources, "Deployment", "token-service")
    redis = _find(resources, "Service", REDIS)
    alone = copy.deepcopy(deployment)
    _container(alone)["env"] = [v for v in _container(alone)["env"] if v["name"] != "M3B_BUDGET_REDIS_URL"]
    assert _budget_problems(alone, redis, config)
    elsewhere = copy.deepcopy(deployment)
    for variable in _container(elsewhere)["env"]:
        if variable["name"] == "M3B_BUDGET_REDIS_URL":
            variable["value"] = "redis://other-redis:6379/0"
    assert _budget_problems(elsewhere, redis, config)
    single = copy.deepcopy(alone)
    single["spec"].update(replicas=1, strategy={"type": "Recreate"})
    assert _budget_problems(single, redis, config) == [], "one replica may keep its budget in memory"


def _allowed_evictions(budget: dict[str, Any], replicas: int) -> int:
    """How many of `replicas` ready pods a PodDisruptionBudget lets a drain evict at once (integer values only)."""
    spec = budget["spec"]
    if "minAvailable" in spec:
        return max(replicas - int(spec["minAvailable"]), 0)
    return min(int(spec["maxUnavailable"]), replicas)


@pytest.mark.parametrize("name", ["token-service", "order-writer"])
def test_a_disruption_budget_keeps_the_service_up_during_drains(name: str, resources: list[dict[str, Any]]) -> None:
    deployment = _find(resources, "Deployment", name)
    budget = _find(resources, "PodDisruptionBudget", name)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _selects(budget["spec"]["selector"], pod_labels)
    others = [
        r["metadata"]["name"]
        for r in resources
        if r["kind"] == "Deployment"
        and r is not deployment
        and _selects(budget["spec"]["selector"], r["spec"]["template"]["metadata"]["labels"])
    ]
    assert not others, f"{name}'s budget also counts the pods of {others}"
    replicas = deployment["spec"].get("replicas", 1)
    # A drain can always move a pod (a budget that allows none blocks every node drain for good) ...
    assert _allowed_evictions(budget, replicas) >= 1, name
    # ... and, with more than one replica, never the last one.
    if replicas > 1:
        assert _allowed_evictions(budget, replicas) < replicas, name
    assert budget["spec"].get("unhealthyPodEvictionPolicy") == "AlwaysAllow", "a pod that is not ready serves nothing"


def test_the_eviction_count_follows_the_budget() -> None:
    assert _allowed_evictions({"spec": {"minAvailable": 1}}, 2) == 1
    assert _allowed_evictions({"spec": {"minAvailable": 1}}, 1) == 0
    assert _allowed_evictions({"spec": {"maxUnavailable": 1}}, 1) == 1
    assert _allowed_evictions({"spec": {"maxUnavailable": 2}}, 1) == 1


def test_redis_holds_nothing_that_must_survive(
    resources: list[dict[str, Any]], compose_services: dict[str, dict[str, Any]]
) -> None:
    deployment = _find(resources, "Deployment", REDIS)
    container = _container(deployment)
    assert container["image"] == compose_services[REDIS]["image"], "the same Redis as compose"
    assert container["args"] == [str(part) for part in compose_services[REDIS]["command"]]
    args = container["args"]
    assert args[args.index("--save") + 1] == "", "no snapshots"
    assert args[args.index("--appendonly") + 1] == "no"
    assert deployment["spec"]["replicas"] == 1, "two unconnected Redis would be two budgets"
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    for volume in _pod_spec(deployment)["volumes"]:
        assert set(volume) == {"name", "emptyDir"}, f"{volume['name']}: ephemeral volumes only"
    [port] = container["ports"]
    assert port["containerPort"] == REDIS_PORT
    [service_port] = _find(resources, "Service", REDIS)["spec"]["ports"]
    assert service_port["port"] == REDIS_PORT
    assert "exec" in container["readinessProbe"]
    assert "livenessProbe" in container


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_probes_point_at_readyz_and_healthz(name: str, resources: list[dict[str, Any]]) -> None:
    container = _container(_find(resources, "Deployment", name))
    port_names = {port.get("name") for port in container["ports"]} | {CONTAINER_PORT}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        if probe in container:
            assert container[probe]["httpGet"]["port"] in port_names, probe


def test_every_container_is_locked_down(resources: list[dict[str, Any]]) -> None:
    for name, workload in _workloads(resources).items():
        pod = _pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"].get("runAsUser") != 0, name
        assert pod.get("automountServiceAccountToken") is False, name
        container = _container(workload)
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["capabilities"]["drop"] == ["ALL"], name
        assert "add" not in context["capabilities"], name
        assert not context.get("privileged", False), name
        writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly", False)}
        if name == REDIS:
            assert writable == {"/data"}, f"{name}: the root filesystem is read-only, Redis works in /data"
        else:
            assert writable == {"/tmp"}, f"{name}: the root filesystem is read-only, Python needs a /tmp"
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= container["resources"][kind].keys(), f"{name}: resources.{kind}"


# --- (c) settings and secret files ---


@pytest.fixture(scope="module")
def config(resources: list[dict[str, Any]]) -> dict[str, str]:
    data = _find(resources, "ConfigMap", CONFIG_MAP)["data"]
    return {key: str(value) for key, value in data.items()}


def test_the_config_map_holds_shared_settings_only(config: dict[str, str]) -> None:
    for key in config:
        assert key.startswith(ENV_PREFIX), key
        assert key in SETTINGS_LOCATION_KEYS or key[len(ENV_PREFIX) :].lower() in BridgeSettings.model_fields, key
    assert config["M3B_SECRETS_DIR"] == SECRETS_DIR
    assert config["M3B_HTTP_HOST"] == "0.0.0.0"
    assert config["M3B_HTTP_PORT"] == str(CONTAINER_PORT)
    assert config["M3B_STATE_URL"].startswith("postgresql+asyncpg://m3bridge@"), "no password in the URL"


def test_the_shared_settings_parse(config: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in config.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("M3B_ENV_FILE", str(ROOT / "does-not-exist.env"))
    monkeypatch.setenv("M3B_SECRETS_DIR", "")
    settings = BridgeSettings()
    assert settings.http_port == CONTAINER_PORT
    assert settings.kafka_enable_idempotence is True


def test_every_m3b_variable_is_a_setting_of_its_service(
    resources: list[dict[str, Any]], config: dict[str, str]
) -> None:
    classes = settings_classes()
    unknown = {
        f"{name}: {key}"
        for name, workload in _workloads(resources).items()
        for key in _environment(workload, config)
        if key.upper().startswith(ENV_PREFIX)
        and key.upper() not in SETTINGS_LOCATION_KEYS
        and key[len(ENV_PREFIX) :].lower() not in classes.get(name, BridgeSettings).model_fields
    }
    assert not unknown, f"not settings of the service they are given to: {sorted(unknown)}"


def test_every_container_gets_the_environment_compose_gives(
    resources: list[dict[str, Any]], config: dict[str, str], compose_services: dict[str, dict[str, Any]]
) -> None:
    for name, workload in _workloads(resources).items():
        env = _environment(workload, config)
        compose_env = _compose_environment(compose_services[name])
        assert env.keys() == compose_env.keys(), f"{name}: {sorted(env.keys() ^ compose_env.keys())}"
        assert "M3B_SERVICE_NAME" not in env, "the service name comes from `serve <name>`"
        for key in ("M3B_TOKEN_SERVICE_URL", "ION_API_FILE"):
            if key in env:
                assert env[key] == compose_env[key], f"{name}: {key}"


def test_the_secret_files_are_mounted_where_compose_mounts_them(
    resources: list[dict[str, Any]],
    compose_services: dict[str, dict[str, Any]],
    compose_secret_files: dict[str, str],
) -> None:
    """Compose secret S with target T is the Secret m3bridge-S's key (S's file name) at /run/secrets/T."""
    for name, workload in _workloads(resources).items():
        expected = {
            (f"m3bridge-{source}", compose_secret_files[source], target)
            for source, target in _compose_secret_mounts(compose_services[name])
        }
        assert _secret_mounts(workload) == expected, name


def test_the_readme_creates_every_secret(resources: list[dict[str, Any]], compose_secret_files: dict[str, str]) -> None:
    readme = (MANIFESTS / "README.md").read_text(encoding="utf-8")
    mounts = {mount for workload in _workloads(resources).values() for mount in _secret_mounts(workload)}
    for secret, key, _ in mounts:
        assert f"{secret.removeprefix('m3bridge-')}:{key}" in readme, f"README.md does not create {secret}"
    used = {secret for secret, _, _ in mounts}
    assert used == {f"m3bridge-{source}" for source in compose_secret_files}, "every compose secret is mounted"


# --- (d) network policies: who may connect to which pod ---


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against a set of labels."""
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        matched = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not matched:
            return False
    return True


# The labels of the bridge's namespace as the API server has them (it adds kubernetes.io/metadata.name itself).
OWN_NAMESPACE_LABELS = {"kubernetes.io/metadata.name": NAMESPACE, **PART_OF}
BRIDGE_POD_LABELS = {**PART_OF, "app.kubernetes.io/name": "order-writer"}
TOKEN_SERVICE_POD_LABELS = {
    **PART_OF,
    "app.kubernetes.io/name": "token-service",
    "app.kubernetes.io/component": "service",
}


@dataclass(frozen=True)
class Source:
    """Where a connection may come from: its pod's namespace and that namespace's labels, and the pod's labels."""

    namespace: str
    namespace_labels: dict[str, str]
    pod_labels: dict[str, str]


SOURCES = {
    "bridge pod": Source(NAMESPACE, OWN_NAMESPACE_LABELS, BRIDGE_POD_LABELS),
    "token-service pod": Source(NAMESPACE, OWN_NAMESPACE_LABELS, TOKEN_SERVICE_POD_LABELS),
    "other pod in the namespace": Source(NAMESPACE, OWN_NAMESPACE_LABELS, {"run": "debug"}),
    "Prometheus": Source(
        "monitoring", {"kubernetes.io/metadata.name": "monitoring", **SCRAPER_NAMESPACE_LABELS}, {"app": "prometheus"}
    ),
    # Labelled like the bridge's pods, so a policy that forgets the namespace shows.
    "outside": Source("elsewhere", {"kubernetes.io/metadata.name": "elsewhere"}, BRIDGE_POD_LABELS),
}


def _peer_admits(peer: dict[str, Any], source: Source) -> bool:
    """One `from` entry of a NetworkPolicy (in the bridge's namespace) against a source."""
    if "ipBlock" in peer:
        return source.namespace != NAMESPACE
    if "namespaceSelector" in peer:
        in_namespace = _selects(peer["namespaceSelector"], source.namespace_labels)
    else:
        in_namespace = source.namespace == NAMESPACE
    return in_namespace and _selects(peer.get("podSelector") or {}, source.pod_labels)


def _admitted(policies: list[dict[str, Any]], pod_labels: dict[str, str], port: int) -> set[str]:
    """The sources that may connect to a pod with these labels on this port."""
    selecting = [p for p in policies if _selects(p["spec"]["podSelector"], pod_labels)]
    assert selecting, f"no policy selects {pod_labels}: all traffic would be allowed"
    admitted = set()
    for policy in selecting:
        assert "Ingress" in policy["spec"]["policyTypes"], policy["metadata"]["name"]
        for rule in policy["spec"].get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(entry.get("port") in {port, "http"} for entry in ports):
                continue
            for source_name, source in SOURCES.items():
                peers = rule.get("from")
                if not peers or any(_peer_admits(peer, source) for peer in peers):
                    admitted.add(source_name)
    return admitted


@pytest.fixture(scope="module")
def policies(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in resources if r["kind"] == "NetworkPolicy"]


def test_ingress_is_denied_by_default(policies: list[dict[str, Any]]) -> None:
    deny = [p for p in policies if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress")]
    assert deny, "a default deny for every pod of the namespace"
    assert _admitted(policies, {"app.kubernetes.io/name": "kafka-init", **PART_OF}, CONTAINER_PORT) == set()


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_service_admits_what_compose_publishes(
    name: str, policies: list[dict[str, Any]], resources: list[dict[str, Any]]
) -> None:
    labels = _find(resources, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
    admitted = _admitted(policies, labels, CONTAINER_PORT)
    assert "Prometheus" in admitted, f"{name}: /metrics"
    assert "bridge pod" in admitted, name
    if name in PUBLISHED:
        assert "outside" in admitted, name
    elif name == "token-service":
        assert admitted == {"bridge pod", "token-service pod", "Prometheus"}, name
    else:
        assert admitted == {"bridge pod", "token-service pod", "other pod in the namespace", "Prometheus"}, name
    assert _admitted(policies, labels, 5432) == set(), f"{name}: only the HTTP port"
    assert _admitted(policies, labels, REDIS_PORT) == set(), name


def test_redis_admits_token_service_only(policies: list[dict[str, Any]], resources: list[dict[str, Any]]) -> None:
    labels = _find(resources, "Deployment", REDIS)["spec"]["template"]["metadata"]["labels"]
    assert _admitted(policies, labels, REDIS_PORT) == {"token-service pod"}
    assert _admitted(policies, labels, CONTAINER_PORT) == set(), "no HTTP side, not scraped"
    token_service = _find(resources, "Deployment", "token-service")["spec"]["template"]["metadata"]["labels"]
    assert TOKEN_SERVICE_POD_LABELS.items() <= token_service.items(), "the source above is token-service's pods"


def test_the_policy_evaluator_sees_selectors() -> None:
    selector = {"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "NotIn", "values": ["2"]}]}
    assert _selects(selector, {"a": "1"})
    assert not _selects(selector, {"a": "1", "b": "2"})
    assert not _selects(selector, {"a": "0"})
    assert _selects({}, {"anything": "x"})
    peer = {"namespaceSelector": {"matchLabels": SCRAPER_NAMESPACE_LABELS}}
    assert _peer_admits(peer, SOURCES["Prometheus"])
    assert not _peer_admits(peer, SOURCES["outside"])
    assert not _peer_admits(peer, SOURCES["bridge pod"])
    assert _peer_admits({"podSelector": {}}, SOURCES["other pod in the namespace"])
    assert not _peer_admits({"podSelector": {}}, SOURCES["outside"])
    everywhere = {"namespaceSelector": {}, "podSelector": {"matchLabels": PART_OF}}
    assert _peer_admits(everywhere, SOURCES["bridge pod"])
    assert _peer_admits(everywhere, SOURCES["outside"])


# --- (e) the optional KEDA ScaledObject for order-writer (a CRD kind: validated against KEDA's vendored schema) ---


def _strict(schema: Any) -> Any:
    """The CRD schema as `kubectl apply` (strict field validation) applies it: an object with `properties` takes no
    other field, unless it says so (additionalProperties, x-kubernetes-preserve-unknown-fields)."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    return strict


@pytest.fixture(scope="module")
def keda_validator() -> jsonschema.Draft7Validator:
    schema = _strict(yaml.safe_load(KEDA_SCHEMA.read_text(encoding="utf-8")))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.fixture(scope="module")
def scaled_object() -> dict[str, Any]:
    [document] = _documents(KEDA_SCALED_OBJECT)
    return document


def _schema_errors(validator: jsonschema.Draft7Validator, resource: dict[str, Any]) -> list[str]:
    errors = sorted(validator.iter_errors(resource), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


def test_the_keda_schema_is_a_released_crd_version() -> None:
    header = KEDA_SCHEMA.read_text(encoding="utf-8").split("\n\n", 1)[0]
    assert re.search(r"tag v2\.\d+\.\d+ \(commit [0-9a-f]{40}\)", header), "name the release and commit"
    assert "config/crd/bases/keda.sh_scaledobjects.yaml" in header


def test_the_scaled_object_validates_against_keda_s_schema(
    scaled_object: dict[str, Any], keda_validator: jsonschema.Draft7Validator
) -> None:
    assert scaled_object["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled_object["kind"] == "ScaledObject"
    assert scaled_object["metadata"]["namespace"] == NAMESPACE
    assert _schema_errors(keda_validator, scaled_object) == []


def test_the_keda_validator_rejects_a_broken_scaled_object(
    scaled_object: dict[str, Any], keda_validator: jsonschema.Draft7Validator
) -> None:
    """Trigger metadata values are strings (an unquoted `true` is refused by the API server), required fields, and
    a misspelt spec field (strict)."""
    unquoted = copy.deepcopy(scaled_object)
    unquoted["spec"]["triggers"][0]["metadata"]["excludePersistentLag"] = True
    no_target = copy.deepcopy(scaled_object)
    del no_target["spec"]["scaleTargetRef"]
    misspelt = copy.deepcopy(scaled_object)
    misspelt["spec"]["maxReplicas"] = misspelt["spec"].pop("maxReplicaCount")
    no_triggers = copy.deepcopy(scaled_object)
    no_triggers["spec"]["triggers"] = []
    for broken in (unquoted, no_target, misspelt, no_triggers):
        assert _schema_errors(keda_validator, broken)


def _partitions(resources: list[dict[str, Any]], config: dict[str, str]) -> int:
    """The partitions `m3bridge topics` (the kafka-init Job) creates the topics with."""
    env = _environment(_find(resources, "Job", "kafka-init"), config)
    default = BridgeSettings.model_fields["kafka_topic_partitions"].default
    return int(env.get("M3B_KAFKA_TOPIC_PARTITIONS", default))


def _quote_consumer_group() -> str:
    """The consumer group of order-writer's subscriber to QUOTE_APPROVED, as services/order_writer/app.py names it."""
    source = ORDER_WRITER_APP.read_text(encoding="utf-8")
    [group] = re.findall(r"runtime\.subscriber\(\s*QUOTE_APPROVED,\s*group=\"([^\"]+)\"", source)
    return str(group)


def test_the_scaled_object_scales_order_writer_on_its_consumer_lag(
    scaled_object: dict[str, Any], resources: list[dict[str, Any]], config: dict[str, str]
) -> None:
    spec = scaled_object["spec"]
    target = spec["scaleTargetRef"]
    assert target.get("kind", "Deployment") == "Deployment"
    deployment = _find(resources, "Deployment", target["name"])
    assert target["name"] == "order-writer"
    assert "replicas" not in deployment["spec"], "applying order-writer.yaml again would reset KEDA's count"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"], "one picks up quotes as they arrive"
    partitions = _partitions(resources, config)
    assert spec["maxReplicaCount"] <= partitions, "a replica beyond the partitions gets none"
    assert "M3B_KAFKA_TOPIC_PARTITIONS" in KEDA_SCALED_OBJECT.read_text(encoding="utf-8"), "say what bounds it"
    [trigger] = spec["triggers"]
    assert trigger["type"] == "kafka"
    metadata = trigger["metadata"]
    assert set(metadata) <= KAFKA_TRIGGER_KEYS, f"unknown to KEDA's kafka scaler: {set(metadata) - KAFKA_TRIGGER_KEYS}"
    assert metadata["topic"] == QUOTE_APPROVED.name
    assert metadata["consumerGroup"] == _quote_consumer_group() == "m3bridge.order-writer"
    assert metadata["bootstrapServers"] == config["M3B_KAFKA_BOOTSTRAP_SERVERS"], "the brokers the bridge uses"
    assert int(metadata["lagThreshold"]) > 0
    assert metadata["offsetResetPolicy"] == "earliest", "as the consumer: a group with no offset owes the whole topic"
    assert metadata["excludePersistentLag"] == "true", "a stuck partition does not call for replicas"


def test_the_partition_count_is_read_where_kafka_init_gets_it(
    resources: list[dict[str, Any]], config: dict[str, str]
) -> None:
    job = _find(resources, "Job", "kafka-init")
    assert _partitions(resources, config) == 6
    unset = copy.deepcopy(job)
    _container(unset)["env"] = [v for v in _container(unset)["env"] if v["name"] != "M3B_KAFKA_TOPIC_PARTITIONS"]
    others = [r for r in resources if r is not job]
    assert _partitions([*others, unset], config) == 4, "the setting's default"
    assert _partitions([*others, unset], {**config, "M3B_KAFKA_TOPIC_PARTITIONS": "12"}) == 12


def test_the_readme_says_how_to_apply_the_optional_manifests() -> None:
    readme = (MANIFESTS / "README.md").read_text(encoding="utf-8")
    for name in sorted(OPTIONAL_MANIFESTS):
        assert f"kubectl apply -f deploy/kubernetes/{name}" in readme, name
