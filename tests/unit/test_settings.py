from pathlib import Path

import pytest
from pydantic import ValidationError

from services.order_writer.app import OrderWriterSettings
from shared.platform.settings import BridgeSettings


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("M3B_SECRETS_DIR", str(tmp_path / "no-secrets"))
    (tmp_path / "no-secrets").mkdir()


def test_defaults_suit_the_embedded_stack() -> None:
    settings = BridgeSettings()
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert settings.state_url.startswith("sqlite+aiosqlite:///")
    assert settings.kafka_enable_idempotence is False


def test_environment_uses_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M3B_KAFKA_BOOTSTRAP_SERVERS", "kafka:19092")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "ignored:1")
    assert BridgeSettings().kafka_bootstrap_servers == "kafka:19092"


def test_service_settings_name_the_service() -> None:
    assert OrderWriterSettings().service_name == "order-writer"


def test_env_file_is_read_and_environment_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env_file = tmp_path / "custom.env"
    env_file.write_text("M3B_LOG_LEVEL=DEBUG\nM3B_HTTP_PORT=9999\n")
    monkeypatch.setenv("M3B_ENV_FILE", str(env_file))
    monkeypatch.setenv("M3B_HTTP_PORT", "8123")
    settings = BridgeSettings()
    assert settings.log_level == "DEBUG"
    assert settings.http_port == 8123


def test_secrets_come_from_files_and_are_not_printed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "m3b_kafka_sasl_password").write_text("s3cret-from-file")
    monkeypatch.setenv("M3B_SECRETS_DIR", str(secrets))
    settings = BridgeSettings()
    assert settings.kafka_sasl_password.get_secret_value() == "s3cret-from-file"
    assert "s3cret-from-file" not in repr(settings)
    assert settings.secret_values() == ["s3cret-from-file"]


def test_bad_values_are_refused_with_the_setting_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M3B_HTTP_PORT", "not-a-port")
    with pytest.raises(ValidationError, match="http_port"):
        BridgeSettings()
