"""Alerts reach someone: deploy/alertmanager/alertmanager.yml is valid for Alertmanager (`amtool check-config`, which
must be installed), routes critical alerts to the pager and the rest to the team (`amtool config routes test`), holds
back only alerts the rule files define, and Prometheus and docker compose are wired to it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.deploy_files import PROMETHEUS_CONFIG, ROOT, RULES_DIR, load_yaml

pytestmark = pytest.mark.unit

ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"


def amtool() -> str:
    found = shutil.which("amtool")
    assert found is not None, "amtool is not installed: apt-get install prometheus-alertmanager (make system does)"
    return found


def alert_rules() -> dict[str, dict[str, Any]]:
    rules: dict[str, dict[str, Any]] = {}
    for path in sorted(RULES_DIR.glob("*.yml")):
        for group in load_yaml(path)["groups"]:
            rules.update({rule["alert"]: rule for rule in group["rules"] if "alert" in rule})
    return rules


def route(labels: dict[str, str], config: Path = ALERTMANAGER_CONFIG) -> str:
    arguments = [f"{name}={value}" for name, value in labels.items()]
    result = subprocess.run([amtool(), "config", "routes", "test", f"--config.file={config}", *arguments],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_amtool_accepts_the_configuration() -> None:
    result = subprocess.run([amtool(), "check-config", str(ALERTMANAGER_CONFIG)], capture_output=True, text=True,
                            check=False)  # fmt: skip
    assert result.returncode == 0, f"amtool check-config:\n{result.stdout}\n{result.stderr}"
    assert "SUCCESS" in result.stdout


def test_amtool_refuses_a_broken_configuration(tmp_path: Path) -> None:
    """The check above can fail: a receiver the route names but nobody defines is refused."""
    broken = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    broken["route"]["receiver"] = "nobody"
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    result = subprocess.run([amtool(), "check-config", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode != 0


@pytest.mark.parametrize("alert", sorted(alert_rules()))
def test_every_alert_reaches_a_receiver_by_its_severity(alert: str) -> None:
    severity = alert_rules()[alert]["labels"]["severity"]
    expected = "erp-integration-pager" if severity == "critical" else "erp-integration-team"
    assert route({"alertname": alert, "severity": severity, "instance": "order-writer:8000"}) == expected


def test_one_notification_per_cause_not_per_instance_or_quote() -> None:
    config = load_yaml(ALERTMANAGER_CONFIG)
    assert config["route"]["group_by"] == ["alertname"]
    assert config["route"]["repeat_interval"] == "4h"


def test_only_alerts_the_rules_define_are_held_back() -> None:
    """An inhibition naming an alert that no longer exists would silently stop holding anything back."""
    names = set(alert_rules())
    config = load_yaml(ALERTMANAGER_CONFIG)
    assert config["inhibit_rules"], "symptoms are held back while their cause fires"
    for rule in config["inhibit_rules"]:
        for matcher in [*rule["source_matchers"], *rule["target_matchers"]]:
            name, _, value = matcher.partition("=")
            assert name.rstrip("=~!") == "alertname", matcher
            for alert in value.lstrip("~").strip('"').split("|"):
                assert alert in names, f"{matcher}: no alert rule {alert}"


def test_no_secret_is_in_the_configuration() -> None:
    config = load_yaml(ALERTMANAGER_CONFIG)
    for receiver in config["receivers"]:
        for email in receiver.get("email_configs", []):
            assert "auth_password" not in email, "the SMTP password is a file (auth_password_file)"
            assert email["auth_password_file"].startswith("/etc/alertmanager/secrets/")
        for hook in receiver.get("webhook_configs", []):
            credentials = hook["http_config"]["authorization"]
            assert "credentials" not in credentials, "the pager's token is a file (credentials_file)"


def test_prometheus_and_compose_send_alerts_to_it() -> None:
    prometheus = load_yaml(PROMETHEUS_CONFIG)
    [manager] = prometheus["alerting"]["alertmanagers"]
    assert manager["static_configs"][0]["targets"] == ["alertmanager:9093"]
    compose = load_yaml(ROOT / "docker-compose.yml")
    service = compose["services"]["alertmanager"]
    assert "./deploy/alertmanager:/etc/alertmanager:ro" in service["volumes"]
    mounted = {secret["target"] for secret in service["secrets"]}
    config = ALERTMANAGER_CONFIG.read_text(encoding="utf-8")
    for target in mounted:
        assert target in config, f"{target} is mounted but not used"
    for path in {line.split(":", 1)[1].strip() for line in config.splitlines() if "_file:" in line}:
        assert path in mounted, f"{path} is read but not mounted"
