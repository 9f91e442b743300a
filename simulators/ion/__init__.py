"""ION API Gateway simulator: OAuth 2 authorization server, Gateway policies (throttling, faults) and M3 MI REST."""
