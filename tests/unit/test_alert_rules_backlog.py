"""The alert rules about what piles up or differs: the backlog of consumer groups, the reconciliations' differences,
the catalog against QuoteWerks; each firing on its cause only in `promtool test rules`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.unit.deploy_files import RULES_DIR, alert_rules

pytestmark = pytest.mark.unit


def test_promtool_fires_the_backlog_alerts_only_while_a_backlog_does_not_shrink(tmp_path: Path) -> None:
    """promtool's rule unit test: two order-writer replicas report the same partitions (counted once); 40 approved
    quotes stuck on one partition page after a quarter of an hour; a catalog-sync backlog that drains does not fire,
    one of 300 that stays does after half an hour."""
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is not installed: apt-get install prometheus"
    rules = {rule.get("alert"): rule for rule in alert_rules()}
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
    rules = {rule.get("alert"): rule for rule in alert_rules()}

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
    [rule] = [rule for rule in alert_rules() if rule.get("alert") == "CatalogDiffersFromM3"]
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
