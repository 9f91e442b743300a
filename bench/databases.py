"""Scratch PostgreSQL databases for the benchmarks, on the machine's server (M3B_TEST_PG_DSN, trust auth): a
state store per run, as deployed, dropped afterwards."""

from __future__ import annotations

import os

import asyncpg

ADMIN_DSN = os.environ.get("M3B_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


async def create_database(name: str) -> str:
    """A new, empty database; its SQLAlchemy URL (asyncpg)."""
    connection = await asyncpg.connect(ADMIN_DSN, timeout=5)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + f"/{name}"


async def drop_database(name: str) -> None:
    connection = await asyncpg.connect(ADMIN_DSN, timeout=5)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()
