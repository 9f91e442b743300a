"""The alert rules: complete, on exported metrics only, each with its runbook, and each firing on its cause only in
`promtool test rules` (promtool must be installed: `make system`)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import shared.platform.metrics
from tests.unit.deploy_files import RULES_DIR, alert_rules, exported_metric_names

pytestmark = pytest.mark.unit


def test_alert_rules_are_complete() -> None:
    rules = alert_rules()
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
def test_the_processing_errors_runbook_points_at_the_dead_letters() -> None:
    [rule] = [rule for rule in alert_rules() if rule.get("alert") == "MessageProcessingErrors"]
    description = rule["annotations"]["description"]
    assert "dlq.{{ $labels.app_name }}.v1" in description
    assert "m3bridge dead-letters list --service" in description
    assert "m3bridge dead-letters replay" in description


def test_alert_rules_use_only_exported_metrics() -> None:
    exported = exported_metric_names()
    for rule in alert_rules():
        used = set(re.findall(rf"\b{shared.platform.metrics.PREFIX}_[a-zA-Z0-9_]+", str(rule["expr"])))
        unknown = used - exported
        assert not unknown, f"{rule.get('alert')} uses metrics no service exports: {sorted(unknown)}"


def test_rate_budget_not_shared_tells_the_operator_what_happens() -> None:
    [rule] = [rule for rule in alert_rules() if rule.get("alert") == "RateBudgetNotShared"]
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
    [rule] = [rule for rule in alert_rules() if rule.get("alert") == "RateBudgetNotShared"]
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
    [rule] = [rule for rule in alert_rules() if rule.get("alert") == "GatewaySlow"]
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
    [rule] = [rule for rule in alert_rules() if rule.get("alert") == "CustomerReviewWaiting"]
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
    [rule] = [rule for rule in alert_rules() if rule.get("alert") == "QuotesWaitingForAPerson"]
    description = " ".join(rule["annotations"]["description"].split()).replace("{{ $labels.error_class }}", "business")
    assert "m3bridge work retry ID" in description
    labels = 'job="m3bridge", instance="order-writer:8000", kind="quote"'
    change_labels = 'job="m3bridge", instance="catalog-sync:8000", kind="item", error_class="catalog-delta"'
    [change_rule] = [rule for rule in alert_rules() if rule.get("alert") == "ChangesWaitingForAPerson"]
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
    rules = {rule.get("alert"): rule for rule in alert_rules()}

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
