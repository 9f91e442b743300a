"""The chaos suite: the real processes of the quote → order path against the simulators, under faults, kills,
throttling and poison messages; measured from ground truth (M3's and QuoteWerks' data, the result and dead-letter
topics). `make chaos` / `python -m tests.chaos --help`."""
