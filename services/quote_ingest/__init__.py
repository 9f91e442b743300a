"""quote-ingest: receives QuoteWerks approvals and customer changes, publishes them, and writes M3 order
numbers back."""
