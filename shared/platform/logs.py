"""Structured logging: one JSON object per line with service, correlation id and no secrets."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable

from pythonjsonlogger.json import JsonFormatter

from shared.platform.correlation import current_correlation_id

REDACTED = "***"


class _ContextFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        record.correlation_id = current_correlation_id()
        return True


class _NotTrueHere(logging.Filter):
    """Drops faststream's start-up warning that topic creation is off: the bridge creates its topics itself
    (`m3bridge topics`, the kafka-init job, `make run`) and each service checks that the ones it reads exist,
    naming any that does not."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name.startswith("faststream") and "Auto create topics is disabled" in record.getMessage())


#: The password of a URL (`scheme://user:password@host`): masked in every record, known or not, since a database or
#: Redis URL may carry one.
URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)(?P<password>[^@/\s]+)@")


class SecretMasker(logging.Filter):
    """Replaces every known secret value in a record's final text, whatever path it took to get there, and the
    password of any URL in it."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        # Very short values would mask ordinary words; real secrets are long.
        self._secrets.update(s for s in secrets if len(s) >= 6)

    def mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return URL_PASSWORD.sub(rf"\g<head>{REDACTED}@", text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.mask(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = self.mask(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        correlation_id = getattr(record, "correlation_id", None)
        return f"{text} [cid={correlation_id}]" if correlation_id else text


secret_masker = SecretMasker()


def configure_logging(service: str, *, level: str = "INFO", fmt: str = "json", secrets: Iterable[str] = ()) -> None:
    """Route all logging (ours, uvicorn's, faststream's, aiokafka's) through one handler on stderr."""
    secret_masker.add(secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter(service))
    handler.addFilter(_NotTrueHere())
    handler.addFilter(secret_masker)
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}{service}{correlation_id}",
                style="{",
                rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    else:
        handler.setFormatter(_TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "faststream", "faststream.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # aiokafka logs every reconnect attempt, httpx every request: keep them to warnings unless debugging.
    for chatty in ("aiokafka", "httpx", "httpcore"):
        logging.getLogger(chatty).setLevel("DEBUG" if level == "DEBUG" else "WARNING")
