"""Reading the YAML rules files the services load at start (order mapping, customer sync): one way to read them
and one way to say what is wrong, so a bad file stops the service with every entry at fault named."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


def describe_errors(error: ValidationError) -> str:
    """One line per problem: `fields.phone: Input should be 'm3', 'quotewerks' or 'newest'`, lists as `[n]`."""
    lines = []
    for item in error.errors():
        where = ""
        for part in item["loc"]:
            where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{where or '(top level)'}: {message}")
    return "\n".join(lines)


def validated(model: type[Model], data: object, *, error: type[ValueError], what: str, origin: str) -> Model:
    """`data` (parsed YAML) as `model`; raises `error` naming every entry at fault."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(f"invalid {what} {origin}:\n{describe_errors(exc)}") from None


def load(model: type[Model], path: str | Path, *, error: type[ValueError], what: str) -> Model:
    """Read and validate a rules file; raises `error` when it is not YAML or not valid."""
    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise error(f"invalid {what} {file}: not YAML: {exc}") from None
    return validated(model, data, error=error, what=what, origin=str(file))
