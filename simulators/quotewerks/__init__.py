"""QuoteWerks simulator: documents (DocumentHeaders/DocumentItems), contacts, products and webhooks.

    from simulators.quotewerks import QwSimConfig, create_app, SCENARIOS
    app = create_app(QwSimConfig(api_key="k"))
    app.state.qw  # QwSim: store, webhooks

Run it with `python -m simulators.quotewerks --port 8300`. What is real QuoteWerks and what is invented is in
`docs/quotewerks-interface.md`.
"""

from simulators.quotewerks.app import QwSim, create_app
from simulators.quotewerks.config import DEFAULT_BODY_TEMPLATE, QwSimConfig, RetryPolicy, WebhookSpec
from simulators.quotewerks.data import SCENARIOS

__all__ = ["DEFAULT_BODY_TEMPLATE", "SCENARIOS", "QwSim", "QwSimConfig", "RetryPolicy", "WebhookSpec", "create_app"]
