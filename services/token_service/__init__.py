"""token-service: Sole holder of the .ionapi credentials; shares tokens and rate permits with the other services."""
