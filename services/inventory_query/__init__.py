"""inventory-query: Answers live availability and price checks in milliseconds without hammering M3."""
