"""Static checks of the image and the monitoring: the Dockerfile, the Prometheus config and alert rules (checked by
`promtool`, which must be installed) and the Grafana dashboard, against the metrics the services export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import shared.platform.metrics
from services import SERVICES
from tests.unit.deploy_files import (
    CONTAINER_PORT,
    DOCKERFILE,
    GRAFANA_PROVISIONING,
    PROMETHEUS_CONFIG,
    ROOT,
    RULES_DIR,
    exported_metric_names,
    load_yaml,
)

pytestmark = pytest.mark.unit

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
    # The runtime dependencies and the SQL Server driver chain (QuoteWerks database mode), never the dev extras.
    assert 'pip install ".[mssql]"' in text
    assert "[dev]" not in text, "the image must not carry the dev extras"
    assert "unixodbc tdsodbc" in text, "the [mssql] extra needs unixODBC and FreeTDS in the runtime stage"


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
    config = load_yaml(PROMETHEUS_CONFIG)
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


# --- (f) Grafana dashboard ---


def _dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads((GRAFANA_PROVISIONING / "dashboards" / "m3bridge.json").read_text())
    return dashboard


def test_the_dashboard_is_provisioned_from_the_mounted_folder() -> None:
    provider = load_yaml(GRAFANA_PROVISIONING / "dashboards" / "m3bridge.yml")
    [entry] = provider["providers"]
    # docker-compose.yml mounts deploy/grafana/provisioning at /etc/grafana/provisioning.
    assert entry["options"]["path"] == "/etc/grafana/provisioning/dashboards"
    assert entry["type"] == "file"
    datasources = load_yaml(GRAFANA_PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
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
    exported = exported_metric_names() | {"up"}
    for panel in _dashboard()["panels"]:
        for target in panel.get("targets", []):
            used = set(re.findall(rf"\b{shared.platform.metrics.PREFIX}_[a-zA-Z0-9_]+", target["expr"]))
            unknown = used - exported
            assert not unknown, f"panel {panel['title']!r} uses metrics no service exports: {sorted(unknown)}"


def test_promtool_accepts_config_and_rules(tmp_path: Path) -> None:
    """Prometheus' own checker must accept the configuration and the alert rules (Debian's `prometheus` package
    has it; `.ci/run` installs it)."""
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is not installed: apt-get install prometheus"
    config = load_yaml(PROMETHEUS_CONFIG)
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
    from shared.platform.settings import DEFAULT_MAPPING_FILE as DEFAULT_RULES

    assert not DEFAULT_RULES.is_absolute()
    assert (ROOT / DEFAULT_RULES).exists()
