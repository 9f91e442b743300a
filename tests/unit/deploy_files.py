"""Where the deployment files are, and how the deployment tests (test_deploy*.py, test_kubernetes.py) read them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

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
