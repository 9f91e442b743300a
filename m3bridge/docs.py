"""Documents generated from the code: the AsyncAPI document, the example quote and the settings reference."""

from __future__ import annotations

import json
from pathlib import Path

from services import settings_classes
from shared.contracts import QUOTE_APPROVED_EXAMPLE, asyncapi
from shared.platform.settings import settings_table

SETTINGS = Path(__file__).resolve().parent.parent / "docs" / "settings.md"
START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def with_settings(text: str) -> str:
    """`text` (docs/settings.md) with its table between the markers generated from the code."""
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{settings_table(settings_classes())}\n{END}{tail}"


EXAMPLE = asyncapi.DOCUMENT.parent / "examples" / "quote-approved.json"


def expected() -> dict[Path, str]:
    return {
        asyncapi.DOCUMENT: asyncapi.build(),
        SETTINGS: with_settings(SETTINGS.read_text()),
        EXAMPLE: json.dumps(QUOTE_APPROVED_EXAMPLE, indent=2) + "\n",
    }


def stale() -> list[Path]:
    return [path for path, text in expected().items() if not path.exists() or path.read_text() != text]


def write() -> list[Path]:
    changed = stale()
    for path, text in expected().items():
        if path in changed:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return changed
