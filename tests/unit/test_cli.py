import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import shared.contracts.topics
from m3bridge.cli import main
from m3bridge.keys import SITE_SUPPLIED_SECRETS
from services import m3_callers


def test_keys_are_written_privately_and_not_overwritten_by_accident(tmp_path: Path) -> None:
    """Private on the host (the directory 0700), readable by whichever user a container runs as (the files 0644:
    compose bind-mounts them with the host's mode), what the site put there made so too."""
    tmp_path = tmp_path / "secrets"
    tmp_path.mkdir(mode=0o755)
    (tmp_path / "tenant.ionapi").write_text("{}")
    (tmp_path / "tenant.ionapi").chmod(0o600)
    assert main(["keys", "--out", str(tmp_path)]) == 0
    keys = json.loads((tmp_path / "service-keys.json").read_text())
    assert set(keys) == set(m3_callers()) == {"order-writer", "catalog-sync", "inventory-query"}
    for name, key in keys.items():
        assert (tmp_path / f"{name}.key").read_text() == key
        assert len(key) >= 40
    assert len((tmp_path / "webhook-secret").read_text()) >= 40
    assert len((tmp_path / "bod-secret").read_text()) >= 40
    assert len((tmp_path / "postgres-password").read_text()) >= 40
    operator, read = (tmp_path / "operator-key").read_text(), (tmp_path / "read-key").read_text()
    assert len(operator) >= 40
    assert len(read) >= 40
    assert operator != read
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700
    for path in tmp_path.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    for supplied in SITE_SUPPLIED_SECRETS:  # left for the site to fill in
        assert (tmp_path / supplied).read_text() == ""
    (tmp_path / "quotewerks-sql-password").write_text("the DBA's password")
    (tmp_path / "quotewerks-sql-password").chmod(0o600)
    assert main(["keys", "--out", str(tmp_path)]) == 0  # kept, made readable
    assert stat.S_IMODE((tmp_path / "quotewerks-sql-password").stat().st_mode) == 0o644
    assert json.loads((tmp_path / "service-keys.json").read_text()) == keys
    assert main(["keys", "--out", str(tmp_path), "--force"]) == 0
    assert json.loads((tmp_path / "service-keys.json").read_text()) != keys
    assert (tmp_path / "quotewerks-sql-password").read_text() == "the DBA's password"  # never overwritten


def test_topics_connects_like_the_services_and_gives_dead_letters_their_retention(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    async def ensure_topics(bootstrap_servers: str, **options: Any) -> list[str]:
        calls.append((bootstrap_servers, options))
        return []

    monkeypatch.setattr(shared.contracts.topics, "ensure_topics", ensure_topics)
    monkeypatch.setenv("M3B_ENV_FILE", "/does-not-exist.env")
    monkeypatch.setenv("M3B_SECRETS_DIR", "")
    for key, value in {
        "M3B_KAFKA_BOOTSTRAP_SERVERS": "kafka.example:9093",
        "M3B_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "M3B_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "M3B_KAFKA_SASL_USERNAME": "bridge",
        "M3B_KAFKA_SASL_PASSWORD": "s3cret",
        "M3B_KAFKA_DEAD_LETTER_RETENTION_MS": "1234",
    }.items():
        monkeypatch.setenv(key, value)
    assert main(["topics", "--partitions", "3"]) == 0
    [(bootstrap, options)] = calls
    assert bootstrap == "kafka.example:9093"
    assert (options["partitions"], options["replication"], options["dead_letter_retention_ms"]) == (3, 1, 1234)
    client = options["client_options"]
    assert client["security_protocol"] == "SASL_SSL"
    assert client["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (client["sasl_plain_username"], client["sasl_plain_password"]) == ("bridge", "s3cret")
    assert client["ssl_context"] is not None


def test_serve_names_the_setting_that_stops_a_service_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("M3B_TOKEN_SERVICE_KEY", "a-key-long-enough")
    monkeypatch.setenv("M3B_QUOTES_IN_FLIGHT", "0")
    assert main(["serve", "order-writer"]) == 2
    err = capsys.readouterr().err
    assert (
        err.strip() == "m3bridge serve order-writer: M3B_QUOTES_IN_FLIGHT=0: Input should be greater than or equal to 1"
    )
    monkeypatch.delenv("M3B_QUOTES_IN_FLIGHT")
    monkeypatch.setenv("M3B_MAPPING_FILE", str(tmp_path / "nowhere.yaml"))
    assert main(["serve", "order-writer"]) == 2
    err = capsys.readouterr().err
    assert "cannot read" in err
    assert "nowhere.yaml" in err
    assert "(M3B_MAPPING_FILE)" in err
    assert "Traceback" not in err


def test_a_refused_secret_setting_is_named_without_its_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("M3B_SERVICE_KEYS", "not json: the-actual-secret")
    assert main(["serve", "token-service"]) == 2
    err = capsys.readouterr().err
    assert "M3B_SERVICE_KEYS" in err
    assert "the-actual-secret" not in err


def test_a_password_in_a_url_setting_stops_the_start_in_one_line_without_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("M3B_TOKEN_SERVICE_KEY", "a-key-long-enough")
    monkeypatch.setenv("M3B_STATE_URL", "postgresql+asyncpg://m3bridge:url-pass-word@db:5432/m3bridge")
    assert main(["serve", "order-writer"]) == 2
    err = capsys.readouterr().err
    assert "M3B_STATE_URL carries a password: give it as M3B_STATE_PASSWORD" in err
    assert "url-pass-word" not in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("service", ["token-service", "inventory-query"])
def test_a_service_without_a_state_store_starts_without_the_database_libraries(service: str) -> None:
    """Memory: SQLAlchemy, Alembic and the drivers are some 40 MB; only the services that open the store load them."""
    import subprocess
    import sys

    program = (
        "import sys, shared.platform.runtime\n"
        "shared.platform.runtime.serve = lambda runtime: None\n"
        "from m3bridge.cli import main\n"
        f"assert main(['serve', {service!r}]) == 0\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in "
        "('sqlalchemy', 'alembic', 'asyncpg', 'aiosqlite', 'redis')}))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "M3B_TOKEN_SERVICE_KEY": "a-key-long-enough", "M3B_LOG_LEVEL": "WARNING"}
    run = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, env=env,
                         check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]", run.stdout


def test_a_service_does_not_load_the_libraries_of_httpx_command_line() -> None:
    """rich, click's colours and pygments are some 5 MB of resident memory in every container; httpx loads them for
    its own command line unless told it is not there. Seen in what a service start imports (here one stopped by a
    bad setting right after its imports)."""
    env = {**os.environ, "M3B_HTTP_PORT": "not-a-port"}
    started = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "m3bridge.cli", "serve", "inventory-query"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert started.returncode == 2, started.stderr[-2000:]
    imported = {line.rsplit("|", 1)[1].strip() for line in started.stderr.splitlines() if line.count("|") == 2}
    assert {"httpx", "fastapi"} <= imported
    assert not imported & {"rich", "pygments"}
