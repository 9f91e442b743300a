"""Faithful stand-ins for the ION API Gateway / M3 and QuoteWerks, and the harness that starts them and the services
as real processes for tests and benchmarks."""
