import json
import stat
from pathlib import Path

from m3bridge.cli import main
from services import m3_callers


def test_keys_are_written_privately_and_not_overwritten_by_accident(tmp_path: Path) -> None:
    assert main(["keys", "--out", str(tmp_path)]) == 0
    keys = json.loads((tmp_path / "service-keys.json").read_text())
    assert set(keys) == set(m3_callers()) == {"order-writer", "catalog-sync", "inventory-query"}
    for name, key in keys.items():
        assert (tmp_path / f"{name}.key").read_text() == key
        assert len(key) >= 40
    assert len((tmp_path / "webhook-secret").read_text()) >= 40
    assert len((tmp_path / "bod-secret").read_text()) >= 40
    for path in tmp_path.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert main(["keys", "--out", str(tmp_path)]) == 1
    assert json.loads((tmp_path / "service-keys.json").read_text()) == keys
    assert main(["keys", "--out", str(tmp_path), "--force"]) == 0
    assert json.loads((tmp_path / "service-keys.json").read_text()) != keys
