"""Faithful stand-ins for the ION API Gateway / M3 and QuoteWerks (built by issues 3 and 4)."""
