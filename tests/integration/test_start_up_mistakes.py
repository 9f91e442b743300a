"""The first hour of a new installation: a mistake at start is said once in the log, naming the file or setting
(`m3bridge serve`'s own one-line refusals: tests/unit/test_cli.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from services.token_service.app import TokenServiceSettings, create_runtime
from tests.integration.test_poison_messages import running


async def test_a_truncated_ionapi_file_is_said_once_in_the_log_at_start(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrong .ionapi is the first mistake of a new installation: the log says which file and why, at start."""
    ionapi = tmp_path / "tenant.ionapi"
    ionapi.write_text('{"ti": "TENANT", "ci": "client"')  # cut short
    runtime = create_runtime(TokenServiceSettings(kafka_bootstrap_servers=kafka_bootstrap, ion_api_file=ionapi,
                                                 heartbeat_interval_s=60))  # fmt: skip
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        async with running(runtime):
            pass
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    [said] = [line for line in lines if "M3B_ION_API_FILE" in line["message"]]
    assert said["level"] == "ERROR"
    assert str(ionapi) in said["message"]
    assert "JSONDecodeError" in said["message"]
    assert "grants no lease" in said["message"]
