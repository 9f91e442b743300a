"""Where the command-line tools find the state store and the broker of a local run (`make run`).

`m3bridge run` writes `<state dir>/run.json` (the broker's address, the state store, the supervisor's pid). A
tool run without M3B_KAFKA_BOOTSTRAP_SERVERS or M3B_STATE_URL in its environment takes them from there: the state
store always (it outlives the run), the broker only while that run is alive.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from shared.platform.settings import BridgeSettings

RUN_FILE = "run.json"


def run_file(state_dir: str | None = None) -> Path:
    return Path(state_dir or os.environ.get("M3B_RUN_STATE_DIR", "var")) / RUN_FILE


def write(
    state_dir: Path, *, kafka_bootstrap: str, state_url: str, pid: int, urls: dict[str, str], **more: str
) -> None:
    """`more`: the simulator tenant's `.ionapi` (`ionapi`), QuoteWerks' URL, where the run's keys are."""
    path = state_dir / RUN_FILE
    found = {"kafka_bootstrap": kafka_bootstrap, "state_url": state_url, "pid": pid, "urls": urls, **more}
    path.write_text(json.dumps(found, indent=2), encoding="utf-8")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read() -> dict[str, Any] | None:
    path = run_file()
    try:
        found: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    found["alive"] = isinstance(found.get("pid"), int) and _alive(found["pid"])
    return found


class BrokerNotFoundError(RuntimeError):
    """No broker configured and no local run alive."""


def cli_settings(*, needs_broker: bool = False) -> BridgeSettings:
    """The settings a command-line tool works with: its environment first, else the local run's."""
    overrides: dict[str, Any] = {}
    local = read()
    if "M3B_STATE_URL" not in os.environ and local and local.get("state_url"):
        overrides["state_url"] = local["state_url"]
    if "M3B_KAFKA_BOOTSTRAP_SERVERS" not in os.environ:
        if local and local.get("alive") and local.get("kafka_bootstrap"):
            overrides["kafka_bootstrap_servers"] = local["kafka_bootstrap"]
        elif needs_broker:
            where = run_file()
            raise BrokerNotFoundError(
                "no broker: set M3B_KAFKA_BOOTSTRAP_SERVERS, or start `make run` "
                f"({where} {'names a run that has stopped' if local else 'does not exist'})"
            )
    return BridgeSettings(service_name="m3bridge-cli", **overrides)
