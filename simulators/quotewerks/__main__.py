"""Run the QuoteWerks simulator: `python -m simulators.quotewerks --host 127.0.0.1 --port 8300`.

`--webhook-url URL --webhook-secret-header NAME --webhook-secret VALUE` registers a webhook with that custom header
at start for each `--webhook-event` (default QuoteValet.Accepted; customer events get a body naming the customer).
The secret may come from QW_WEBHOOK_SECRET instead, to keep it off the command line; the API key likewise from
QW_API_KEY. Secrets are never printed."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import uvicorn
from pydantic import SecretStr

from simulators.quotewerks.app import create_app
from simulators.quotewerks.config import (
    CUSTOMER_BODY_TEMPLATE,
    DEFAULT_BODY_TEMPLATE,
    QwSimConfig,
    WebhookSpec,
)

log = logging.getLogger("simulators.quotewerks")


def build_config(args: argparse.Namespace) -> QwSimConfig:
    config = QwSimConfig.model_validate_json(args.config.read_text()) if args.config else QwSimConfig()
    api_key = args.api_key or os.environ.get("QW_API_KEY")
    if api_key:
        config = config.model_copy(update={"api_key": SecretStr(api_key)})
    if args.webhook_url:
        secret = args.webhook_secret or os.environ.get("QW_WEBHOOK_SECRET", "")
        headers = {args.webhook_secret_header: secret} if secret else {}
        specs = [
            WebhookSpec(
                Name=f"M3 Bridge quote-ingest ({event})", Event=event, URL=args.webhook_url, Headers=headers,
                Body=CUSTOMER_BODY_TEMPLATE if event.startswith("QuoteWerks.Customer") else DEFAULT_BODY_TEMPLATE,
            )
            for event in args.webhook_event or ["QuoteValet.Accepted"]
        ]  # fmt: skip
        config = config.model_copy(update={"webhooks": [*config.webhooks, *specs]})
    return config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m simulators.quotewerks", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8300)
    parser.add_argument("--config", type=Path, help="QwSimConfig as JSON")
    parser.add_argument("--api-key", help="value of the X-API-Key header the API requires (or QW_API_KEY)")
    parser.add_argument("--webhook-url", help="register webhooks to this URL at start")
    parser.add_argument(
        "--webhook-event", action="append", help="an event of such a webhook (repeatable; default QuoteValet.Accepted)"
    )
    parser.add_argument("--webhook-secret-header", default="X-M3Bridge-Webhook-Secret", help="its custom header name")
    parser.add_argument("--webhook-secret", help="its custom header value (or QW_WEBHOOK_SECRET)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    config = build_config(args)
    app = create_app(config)
    logging.basicConfig(level=args.log_level.upper())
    log.info(
        "QuoteWerks simulator for tenant %s at http://%s:%s; %d webhook(s) registered",
        config.tenant_account_number, args.host, args.port, len(config.webhooks),
    )  # fmt: skip
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
