"""What one module logged during a test, whatever the session did to the root logger before (a service's logging set
up by an earlier in-process test replaces the handlers pytest's caplog relies on)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


class Records(logging.Handler):
    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def records_of(logger_name: str, level: int = logging.WARNING) -> Iterator[list[logging.LogRecord]]:
    """The records `logger_name` emits inside the block, at `level` and above. An earlier test may leave the logger
    disabled (a logging config with disable_existing_loggers): it is enabled for the block, then put back."""
    logger, seen = logging.getLogger(logger_name), Records(level)
    was_disabled, logger.disabled = logger.disabled, False
    # The logger must pass records of `level` on even where the root logger is set higher.
    was_level = logger.level
    if logger.getEffectiveLevel() > level:
        logger.setLevel(level)
    logger.addHandler(seen)
    try:
        yield seen.records
    finally:
        logger.removeHandler(seen)
        logger.setLevel(was_level)
        logger.disabled = was_disabled
