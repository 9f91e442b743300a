"""The state store: the order ledger, customer links, sync fingerprints and delivery dedupe.

SQLite by default (zero set-up), PostgreSQL in deployment; the same models and Alembic migrations for both.
"""
