import json
import logging

import pytest

from shared.platform.correlation import bind_correlation_id
from shared.platform.logs import configure_logging


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_service_and_correlation_id(capsys, restore_logging) -> None:
    configure_logging("order-writer", fmt="json")
    bind_correlation_id("cid-123")
    logging.getLogger("test").info("quote %s accepted", "AAAQ1001")
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["message"] == "quote AAAQ1001 accepted"
    assert line["service"] == "order-writer"
    assert line["correlation_id"] == "cid-123"
    assert line["level"] == "INFO"
    assert "ts" in line


def test_secrets_are_masked_in_messages_and_tracebacks(capsys, restore_logging) -> None:
    configure_logging("token-service", fmt="json", secrets=["very-secret-value"])
    log = logging.getLogger("test")
    log.warning("token request with %s", "very-secret-value")
    try:
        raise RuntimeError("bad client secret very-secret-value")
    except RuntimeError:
        log.exception("failed")
    err = capsys.readouterr().err
    assert "very-secret-value" not in err
    assert err.count("***") >= 2


def test_a_password_in_any_url_is_masked_even_when_no_secret_is_known(capsys, restore_logging) -> None:
    """A state store, Redis or QuoteWerks URL that carries its password (against the advice) never shows it."""
    configure_logging("order-writer", fmt="json")
    log = logging.getLogger("test")
    log.error("cannot connect to %s", "postgresql+asyncpg://m3bridge:s3cr3t-pw@db:5432/m3bridge")
    try:
        raise OSError("redis://:an0ther-pw@redis:6379/0 refused")
    except OSError:
        log.exception("budget")
    log.info("see http://example.com/docs/a:b@c for the format")  # a path, not credentials
    err = capsys.readouterr().err
    assert "s3cr3t-pw" not in err
    assert "an0ther-pw" not in err
    assert "postgresql+asyncpg://m3bridge:***@db:5432/m3bridge" in err
    assert "http://example.com/docs/a:b@c" in err


def test_text_format_for_people(capsys, restore_logging) -> None:
    configure_logging("quote-ingest", fmt="text")
    bind_correlation_id("abc")
    logging.getLogger("test").warning("hello")
    assert capsys.readouterr().err.strip().endswith("test: hello [cid=abc]")
