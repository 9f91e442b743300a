"""Where the deployment files are, and how the deployment tests (test_deploy*.py, test_kubernetes.py) read them."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml
from faststream.prometheus.container import MetricsContainer
from prometheus_client import REGISTRY, CollectorRegistry

import shared.platform.metrics
from services import settings_classes

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_SCHEMA = ROOT / "tests" / "schemas" / "compose-spec.json"
DOCKERFILE = ROOT / "Dockerfile"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES_DIR = PROMETHEUS_DIR / "rules"
GRAFANA_PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
CONTAINER_PORT = "8000"
# Read by shared.platform.settings itself (where to look for settings), not fields of BridgeSettings.
SETTINGS_LOCATION_KEYS = {"M3B_SECRETS_DIR", "M3B_ENV_FILE"}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alert_rules() -> list[dict[str, Any]]:
    files = sorted(RULES_DIR.glob("*.yml"))
    assert files, f"no rule files in {RULES_DIR}"
    rules = []
    for path in files:
        document = load_yaml(path)
        assert document["groups"], path
        for group in document["groups"]:
            assert group["name"]
            assert group["rules"], f"{path}: group {group['name']} is empty"
            rules.extend(group["rules"])
    return rules


SERIES_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "info": ("_info",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}


def exported_metric_names() -> set[str]:
    """Every series name the services can export: shared.platform.metrics plus faststream's with our prefix."""
    settings_classes()  # imports every service's modules, which register their metrics
    importlib.import_module("shared.platform.consumer_lag")  # imported by the runtime once a service starts
    faststream_registry = CollectorRegistry()
    MetricsContainer(faststream_registry, metrics_prefix=shared.platform.metrics.PREFIX, custom_label_names=[])
    names: set[str] = set()
    for registry in (REGISTRY, faststream_registry):
        for family in registry.collect():
            names.update(f"{family.name}{suffix}" for suffix in SERIES_SUFFIXES.get(family.type, ("",)))
    return names
