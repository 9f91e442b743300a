"""Static checks of the image and the monitoring: the Dockerfile, the Prometheus config and alert rules (checked by
`promtool`, which must be installed) and the Grafana dashboard, against the metrics the services export."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from faststream.prometheus.container import MetricsContainer
from prometheus_client import REGISTRY, CollectorRegistry

import shared.platform.metrics
from services import SERVICES, settings_classes
from tests.unit.deploy_files import (
    CONTAINER_PORT,
    DOCKERFILE,
    GRAFANA_PROVISIONING,
    PROMETHEUS_CONFIG,
    ROOT,
    RULES_DIR,
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


def _rules() -> list[dict[str, Any]]:
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


def test_the_processing_errors_runbook_points_at_the_dead_letters() -> None:
    [rule] = [rule for rule in _rules() if rule.get("alert") == "MessageProcessingErrors"]
    description = rule["annotations"]["description"]
    assert "dlq.{{ $labels.app_name }}.v1" in description
    assert "m3bridge dead-letters list --service" in description
    assert "m3bridge dead-letters replay" in description


def test_alert_rules_use_only_exported_metrics() -> None:
    exported = _exported_metric_names()
    for rule in _rules():
        used = set(re.findall(rf"\b{shared.platform.metrics.PREFIX}_[a-zA-Z0-9_]+", str(rule["expr"])))
        unknown = used - exported
        assert not unknown, f"{rule.get('alert')} uses metrics no service exports: {sorted(unknown)}"


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
    exported = _exported_metric_names() | {"up"}
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


def test_rate_budget_not_shared_tells_the_operator_what_happens() -> None:
    [rule] = [rule for rule in _rules() if rule.get("alert") == "RateBudgetNotShared"]
    assert "m3bridge_rate_budget_shared" in rule["expr"]
    assert rule["for"] == "1m"
    assert rule["labels"]["severity"] == "warning"
    text = f"{rule['annotations']['summary']} {rule['annotations']['description']}"
    for what in ("Redis", "M3B_BUDGET_REDIS_URL", "alone", "bulk"):
        assert what in text, what


def test_promtool_fires_rate_budget_not_shared_only_while_redis_is_unreachable(tmp_path: Path) -> None:
    """promtool's rule unit test: replica a loses Redis for 3 minutes, replica b keeps it; the alert fires for a once
    the minute has passed, never for b, and stops when a is back on the shared budget."""
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is not installed: apt-get install prometheus"
    a = 'm3bridge_rate_budget_shared{job="m3bridge", instance="token-service-a:8000"}'
    b = 'm3bridge_rate_budget_shared{job="m3bridge", instance="token-service-b:8000"}'
    [rule] = [rule for rule in _rules() if rule.get("alert") == "RateBudgetNotShared"]
    annotations = {
        key: " ".join(str(value).split()).replace("{{ $labels.instance }}", "token-service-a:8000")
        for key, value in rule["annotations"].items()
    }
    assert "{{" not in str(annotations), "template the expected annotations like the rule's"
    fired = {
        "exp_labels": {"job": "m3bridge", "instance": "token-service-a:8000", "severity": "warning"},
        "exp_annotations": annotations,
    }
    tests = {
        "rule_files": [str(path) for path in sorted(RULES_DIR.glob("*.yml"))],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                # Shared for 1 minute, alone for 3 (12 samples), shared again.
                "input_series": [{"series": a, "values": "1x4 0x11 1x8"}, {"series": b, "values": "1x24"}],
                "alert_rule_test": [
                    {"eval_time": "90s", "alertname": "RateBudgetNotShared", "exp_alerts": []},
                    {"eval_time": "150s", "alertname": "RateBudgetNotShared", "exp_alerts": [fired]},
                    {"eval_time": "5m", "alertname": "RateBudgetNotShared", "exp_alerts": []},
                ],
            }
        ],
    }
    test_file = tmp_path / "rate-budget-test.yml"
    test_file.write_text(yaml.safe_dump(tests), encoding="utf-8")
    result = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"promtool test rules:\n{result.stdout}\n{result.stderr}"


def test_promtool_fires_gateway_slow_for_the_slow_instance_only(tmp_path: Path) -> None:
    """promtool's rule unit test: order-writer a's M3 calls take 3-5 s for 20 minutes, b's 50-100 ms; the alert fires
    for a once 10 minutes have passed, never for b."""
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is not installed: apt-get install prometheus"
    [rule] = [rule for rule in _rules() if rule.get("alert") == "GatewaySlow"]
    assert "M3B_THROTTLE_DELAY_AFTER_COUNT" in rule["annotations"]["description"]
    annotations = {
        key: " ".join(str(value).split()).replace("{{ $labels.instance }}", "order-writer-a:8000")
        for key, value in rule["annotations"].items()
    }
    assert "{{" not in str(annotations), "template the expected annotations like the rule's"
    fired = {"job": "m3bridge", "instance": "order-writer-a:8000", "severity": "warning"}

    def buckets(instance: str, slow: bool) -> list[dict[str, str]]:
        labels = f'job="m3bridge", instance="{instance}", program="OIS100MI", transaction="Confirm"'
        series = []
        for le in ("0.05", "0.1", "1", "2.5", "5", "+Inf"):
            counted = (le in ("5", "+Inf")) if slow else le != "0.05"
            series.append({"series": f'm3bridge_m3_request_duration_seconds_bucket{{{labels}, le="{le}"}}',
                           "values": "0+60x80" if counted else "0x80"})  # fmt: skip
        return series

    tests = {
        "rule_files": [str(path) for path in sorted(RULES_DIR.glob("*.yml"))],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "15s",
                "input_series": buckets("order-writer-a:8000", True) + buckets("order-writer-b:8000", False),
                "alert_rule_test": [
                    {"eval_time": "8m", "alertname": "GatewaySlow", "exp_alerts": []},
                    {
                        "eval_time": "17m",
                        "alertname": "GatewaySlow",
                        "exp_alerts": [{"exp_labels": fired, "exp_annotations": annotations}],
                    },
                ],
            }
        ],
    }
    test_file = tmp_path / "gateway-slow-test.yml"
    test_file.write_text(yaml.safe_dump(tests), encoding="utf-8")
    result = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"promtool test rules:\n{result.stdout}\n{result.stderr}"


def test_promtool_fires_customer_review_waiting_only_after_hours_of_open_items(tmp_path: Path) -> None:
    """promtool's rule unit test: one conflict opens and stays for 5 hours, a deleted-record item is settled within
    the hour; the alert fires for the conflicts only, once they have waited 4 hours."""
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is not installed: apt-get install prometheus"
    [rule] = [rule for rule in _rules() if rule.get("alert") == "CustomerReviewWaiting"]
    description = " ".join(rule["annotations"]["description"].split())
    assert "m3bridge customers conflicts" in description
    assert "m3bridge customers resolve ID --take m3|quotewerks|value" in description
    labels = 'job="m3bridge", instance="catalog-sync:8000"'
    tests = {
        "rule_files": [str(path) for path in sorted(RULES_DIR.glob("*.yml"))],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "5m",
                "input_series": [
                    {"series": f'm3bridge_customer_review_items{{{labels}, kind="conflict"}}', "values": "0 1x70"},
                    {"series": f'm3bridge_customer_review_items{{{labels}, kind="deleted"}}', "values": "1x10 0x60"},
                ],
                "alert_rule_test": [
                    {"eval_time": "3h", "alertname": "CustomerReviewWaiting", "exp_alerts": []},
                    {
                        "eval_time": "5h",
                        "alertname": "CustomerReviewWaiting",
                        "exp_alerts": [
                            {
                                "exp_labels": {"job": "m3bridge", "kind": "conflict", "severity": "warning"},
                                "exp_annotations": {
                                    "summary": "1 customer conflict item(s) have waited hours for a person",
                                    "description": description,
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    test_file = tmp_path / "customer-review-test.yml"
    test_file.write_text(yaml.safe_dump(tests), encoding="utf-8")
    result = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"promtool test rules:\n{result.stdout}\n{result.stderr}"


def test_promtool_fires_quotes_waiting_for_a_person_per_class(tmp_path: Path) -> None:
    """promtool's rule unit test: a held quote of class business stays open for 5 hours, an authorization failure is
    retried within the hour; the alert fires for business only, after 4 hours. An item change catalog-sync could not
    apply, open as long, fires the change alert (not the quote one)."""
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is not installed: apt-get install prometheus"
    [rule] = [rule for rule in _rules() if rule.get("alert") == "QuotesWaitingForAPerson"]
    description = " ".join(rule["annotations"]["description"].split()).replace("{{ $labels.error_class }}", "business")
    assert "m3bridge work retry ID" in description
    labels = 'job="m3bridge", instance="order-writer:8000", kind="quote"'
    change_labels = 'job="m3bridge", instance="catalog-sync:8000", kind="item", error_class="catalog-delta"'
    [change_rule] = [rule for rule in _rules() if rule.get("alert") == "ChangesWaitingForAPerson"]
    change_description = " ".join(change_rule["annotations"]["description"].split()).replace(
        "{{ $labels.kind }}", "item"
    )
    assert "m3bridge work retry ID" in change_description
    tests = {
        "rule_files": [str(path) for path in sorted(RULES_DIR.glob("*.yml"))],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "5m",
                "input_series": [
                    {"series": f'm3bridge_work_items_open{{{labels}, error_class="business"}}', "values": "1x70"},
                    {
                        "series": f'm3bridge_work_items_open{{{labels}, error_class="authorization"}}',
                        "values": "1x10 0x60",
                    },
                    {"series": f"m3bridge_work_items_open{{{change_labels}}}", "values": "2x70"},
                ],
                "alert_rule_test": [
                    {"eval_time": "3h", "alertname": "ChangesWaitingForAPerson", "exp_alerts": []},
                    {
                        "eval_time": "5h",
                        "alertname": "ChangesWaitingForAPerson",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "job": "m3bridge",
                                    "kind": "item",
                                    "error_class": "catalog-delta",
                                    "severity": "warning",
                                },
                                "exp_annotations": {
                                    "summary": "2 item change(s) of class catalog-delta have waited hours on the "
                                    "work queue",
                                    "description": change_description,
                                },
                            }
                        ],
                    },
                    {"eval_time": "3h", "alertname": "QuotesWaitingForAPerson", "exp_alerts": []},
                    {
                        "eval_time": "5h",
                        "alertname": "QuotesWaitingForAPerson",
                        "exp_alerts": [
                            {
                                "exp_labels": {"job": "m3bridge", "error_class": "business", "severity": "warning"},
                                "exp_annotations": {
                                    "summary": "1 quote(s) of class business have waited hours on the work queue",
                                    "description": description,
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    test_file = tmp_path / "work-queue-test.yml"
    test_file.write_text(yaml.safe_dump(tests), encoding="utf-8")
    result = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"promtool test rules:\n{result.stdout}\n{result.stderr}"


def test_promtool_fires_throttling_token_and_poll_alerts_on_their_causes_only(tmp_path: Path) -> None:
    """promtool's rule unit test, three causes at once: 429s reported by order-writer; token fetches failing on
    token-service a while b keeps fetching; quote polls failing on quote-ingest a while b's succeed."""
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is not installed: apt-get install prometheus"
    rules = {rule.get("alert"): rule for rule in _rules()}

    def annotations(name: str, **labels: str) -> dict[str, str]:
        found = {}
        for key, value in rules[name]["annotations"].items():
            text = " ".join(str(value).split())
            for label, replacement in labels.items():
                text = text.replace("{{ $labels." + label + " }}", replacement)
            found[key] = text
        return found

    def series(name: str, labels: str, values: str) -> dict[str, str]:
        return {"series": f'{name}{{job="m3bridge", {labels}}}', "values": values}

    expected_throttling = annotations("GatewayThrottling")
    expected_throttling["summary"] = "The ION API Gateway answered 429 to the bridge 10 times in 10 minutes"
    tests = {
        "rule_files": [str(path) for path in sorted(RULES_DIR.glob("*.yml"))],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    series(
                        "m3bridge_upstream_reports_total",
                        'instance="ts:8000", kind="throttled", service="order-writer"',
                        "0x10 0+1x30",
                    ),
                    series(
                        "m3bridge_upstream_reports_total",
                        'instance="ts:8000", kind="unauthorized", service="order-writer"',
                        "0+1x40",
                    ),
                    series(
                        "m3bridge_token_refresh_total",
                        'instance="ts-a:8000", grant="password", outcome="error"',
                        "0x10 0+1x30",
                    ),
                    series(
                        "m3bridge_token_refresh_total", 'instance="ts-a:8000", grant="password", outcome="ok"', "1x40"
                    ),
                    series(
                        "m3bridge_token_refresh_total",
                        'instance="ts-b:8000", grant="password", outcome="error"',
                        "0+1x40",
                    ),
                    series(
                        "m3bridge_token_refresh_total", 'instance="ts-b:8000", grant="password", outcome="ok"', "0+1x40"
                    ),
                    series("m3bridge_quote_polls_total", 'instance="qi-a:8000", outcome="failed"', "0+1x40"),
                    series("m3bridge_quote_polls_total", 'instance="qi-a:8000", outcome="ok"', "5x40"),
                    series("m3bridge_quote_polls_total", 'instance="qi-b:8000", outcome="failed"', "0+1x40"),
                    series("m3bridge_quote_polls_total", 'instance="qi-b:8000", outcome="ok"', "0+1x40"),
                ],
                "alert_rule_test": [
                    {"eval_time": "8m", "alertname": "GatewayThrottling", "exp_alerts": []},
                    {
                        "eval_time": "25m",
                        "alertname": "GatewayThrottling",
                        "exp_alerts": [
                            {
                                "exp_labels": {"job": "m3bridge", "severity": "warning"},
                                "exp_annotations": expected_throttling,
                            }
                        ],
                    },
                    {"eval_time": "12m", "alertname": "TokenRefreshFailing", "exp_alerts": []},
                    {
                        "eval_time": "20m",
                        "alertname": "TokenRefreshFailing",
                        "exp_alerts": [
                            {
                                "exp_labels": {"job": "m3bridge", "instance": "ts-a:8000", "severity": "critical"},
                                "exp_annotations": annotations("TokenRefreshFailing", instance="ts-a:8000"),
                            }
                        ],
                    },
                    {
                        "eval_time": "35m",
                        "alertname": "QuoteWerksPollFailing",
                        "exp_alerts": [
                            {
                                "exp_labels": {"job": "m3bridge", "instance": "qi-a:8000", "severity": "warning"},
                                "exp_annotations": annotations("QuoteWerksPollFailing", instance="qi-a:8000"),
                            }
                        ],
                    },
                ],
            }
        ],
    }
    test_file = tmp_path / "causes-test.yml"
    test_file.write_text(yaml.safe_dump(tests), encoding="utf-8")
    result = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"promtool test rules:\n{result.stdout}\n{result.stderr}"


def test_promtool_fires_the_backlog_alerts_only_while_a_backlog_does_not_shrink(tmp_path: Path) -> None:
    """promtool's rule unit test: two order-writer replicas report the same partitions (counted once); 40 approved
    quotes stuck on one partition page after a quarter of an hour; a catalog-sync backlog that drains does not fire,
    one of 300 that stays does after half an hour."""
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is not installed: apt-get install prometheus"
    rules = {rule.get("alert"): rule for rule in _rules()}
    quotes = "quotewerks.quote.approved.v1"

    def lag(instance: str, group: str, topic: str, partition: int, values: str) -> dict[str, str]:
        labels = f'job="m3bridge", instance="{instance}", group="{group}", topic="{topic}", partition="{partition}"'
        return {"series": f"m3bridge_consumer_lag{{{labels}}}", "values": values}

    def annotations(name: str, value: str, **labels: str) -> dict[str, str]:
        found = {}
        for key, text in rules[name]["annotations"].items():
            text = " ".join(str(text).split()).replace("{{ $value | humanize }}", value)
            for label, replacement in labels.items():
                text = text.replace("{{ $labels." + label + " }}", replacement)
            found[key] = text
        return found

    writers, catalog = "m3bridge.order-writer", "m3bridge.catalog-sync"
    tests = {
        "rule_files": [str(path) for path in sorted(RULES_DIR.glob("*.yml"))],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    lag("ow-a:8000", writers, quotes, 0, "40x60"),
                    lag("ow-b:8000", writers, quotes, 0, "40x60"),
                    lag("ow-a:8000", writers, quotes, 1, "0x60"),
                    lag("cs:8000", catalog, "m3.item.changed.v1", 0, "500-10x50"),
                    lag("cs:8000", catalog, "m3.price.changed.v1", 0, "300x90"),
                ],
                "alert_rule_test": [
                    {"eval_time": "10m", "alertname": "ApprovedQuotesBacklog", "exp_alerts": []},
                    {
                        "eval_time": "20m",
                        "alertname": "ApprovedQuotesBacklog",
                        "exp_alerts": [
                            {
                                "exp_labels": {"group": writers, "topic": quotes, "severity": "critical"},
                                "exp_annotations": annotations("ApprovedQuotesBacklog", "40", group=writers),
                            }
                        ],
                    },
                    {"eval_time": "25m", "alertname": "ConsumerBacklogNotShrinking", "exp_alerts": []},
                    {
                        "eval_time": "35m",
                        "alertname": "ConsumerBacklogNotShrinking",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "group": catalog,
                                    "topic": "m3.price.changed.v1",
                                    "severity": "warning",
                                },
                                "exp_annotations": annotations(
                                    "ConsumerBacklogNotShrinking", "300", group=catalog, topic="m3.price.changed.v1"
                                ),
                            }
                        ],
                    },
                ],
            }
        ],
    }
    test_file = tmp_path / "backlog-test.yml"
    test_file.write_text(yaml.safe_dump(tests), encoding="utf-8")
    result = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"promtool test rules:\n{result.stdout}\n{result.stderr}"


def test_promtool_fires_the_reconciliation_alerts_per_kind(tmp_path: Path) -> None:
    """promtool's rule unit test: the reconciliation found one approval never ordered (critical, at once) and two
    orders deleted in M3 (warning); none differ in another way."""
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is not installed: apt-get install prometheus"
    rules = {rule.get("alert"): rule for rule in _rules()}

    def annotations(name: str, value: str, kind: str = "") -> dict[str, str]:
        return {
            key: " ".join(str(text).split())
            .replace("{{ $value | humanize }}", value)
            .replace("{{ $labels.kind }}", kind)
            for key, text in rules[name]["annotations"].items()
        }

    def found(kind: str, values: str) -> dict[str, str]:
        return {"series": f'm3bridge_reconcile_differences{{job="m3bridge", instance="ow:8000", kind="{kind}"}}',
                "values": values}  # fmt: skip

    tests = {
        "rule_files": [str(path) for path in sorted(RULES_DIR.glob("*.yml"))],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    found("approved, never ordered", "0x5 1x10"),
                    found("order missing in M3", "0x5 2x10"),
                    found("order differs in M3", "0x15"),
                ],
                "alert_rule_test": [
                    {"eval_time": "3m", "alertname": "ApprovalsNeverOrdered", "exp_alerts": []},
                    {"eval_time": "3m", "alertname": "OrdersDifferFromM3", "exp_alerts": []},
                    {
                        "eval_time": "8m",
                        "alertname": "ApprovalsNeverOrdered",
                        "exp_alerts": [
                            {
                                "exp_labels": {"job": "m3bridge", "severity": "critical"},
                                "exp_annotations": annotations("ApprovalsNeverOrdered", "1"),
                            }
                        ],
                    },
                    {
                        "eval_time": "8m",
                        "alertname": "OrdersDifferFromM3",
                        "exp_alerts": [
                            {
                                "exp_labels": {"job": "m3bridge", "kind": "order missing in M3", "severity": "warning"},
                                "exp_annotations": annotations("OrdersDifferFromM3", "2", "order missing in M3"),
                            }
                        ],
                    },
                ],
            }
        ],
    }
    test_file = tmp_path / "reconcile-test.yml"
    test_file.write_text(yaml.safe_dump(tests), encoding="utf-8")
    result = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"promtool test rules:\n{result.stdout}\n{result.stderr}"


def test_promtool_fires_catalog_differs_from_m3_only_when_differences_stay(tmp_path: Path) -> None:
    """promtool's rule unit test: a reconciliation that repaired its differences within the hour does not fire; two
    products left different for over an hour do."""
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is not installed: apt-get install prometheus"
    [rule] = [rule for rule in _rules() if rule.get("alert") == "CatalogDiffersFromM3"]
    annotations = {
        key: " ".join(str(text).split()).replace("{{ $value | humanize }}", "2")
        for key, text in rule["annotations"].items()
    }
    series = 'm3bridge_catalog_differences{job="m3bridge", instance="cs:8000"}'
    tests = {
        "rule_files": [str(path) for path in sorted(RULES_DIR.glob("*.yml"))],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "5m",
                "input_series": [{"series": series, "values": "3x6 0x6 2x20"}],
                "alert_rule_test": [
                    {"eval_time": "50m", "alertname": "CatalogDiffersFromM3", "exp_alerts": []},
                    {"eval_time": "120m", "alertname": "CatalogDiffersFromM3", "exp_alerts": []},
                    {
                        "eval_time": "140m",
                        "alertname": "CatalogDiffersFromM3",
                        "exp_alerts": [
                            {"exp_labels": {"job": "m3bridge", "severity": "warning"}, "exp_annotations": annotations}
                        ],
                    },
                ],
            }
        ],
    }
    test_file = tmp_path / "catalog-test.yml"
    test_file.write_text(yaml.safe_dump(tests), encoding="utf-8")
    result = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"promtool test rules:\n{result.stdout}\n{result.stderr}"
