"""The bridge's own product table in the QuoteWerks database (`M3BridgeProducts`): catalog-sync's products, written in
batches, read back for the catalog reconciliation. Never a QuoteWerks table."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import MetaData, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, NoSuchTableError

from shared.quotewerks import quotewerks_retries
from shared.quotewerks.errors import QuoteWerksError
from shared.quotewerks.schema import (
    BRIDGE_PRODUCTS,
    PRODUCTS_DDL_FILE,
    PRODUCTS_TABLE,
    ProductStatements,
    ProductValueError,
    product_values,
)
from shared.quotewerks.sql_base import SqlBase, _plain

log = logging.getLogger(__name__)

#: Part numbers per `IN (...)` look-up of a product batch (SQL Server takes at most 2,100 parameters a statement).
PRODUCT_BATCH_PARAMETERS = 500


class BridgeProductTable(SqlBase):
    """Products in the bridge's table: put one, put a batch, find one, list them all."""

    _products: ProductStatements | None = None

    async def _products_ready(self) -> ProductStatements:
        if self._products is None:
            async with self._lock:
                if self._products is None:
                    async with self._connect() as connection:
                        self._products = await connection.run_sync(self._check_products)
        return self._products

    def _check_products(self, connection: Connection) -> ProductStatements:
        try:
            found = {c["name"] for c in inspect(connection).get_columns(PRODUCTS_TABLE, schema=self.schema)}
        except NoSuchTableError:
            found = set()
        missing = [c.name for c in BRIDGE_PRODUCTS.columns if c.name not in found]
        if missing:
            what = f"has no table {PRODUCTS_TABLE}" if not found else f"{PRODUCTS_TABLE} lacks {', '.join(missing)}"
            raise QuoteWerksError(
                f"the QuoteWerks database {what} (or this login may not see it): have the DBA create it with "
                f"{PRODUCTS_DDL_FILE}",
                retryable=False,
            )
        table = BRIDGE_PRODUCTS if self.schema is None else BRIDGE_PRODUCTS.to_metadata(MetaData(), schema=self.schema)
        return ProductStatements(table)

    @quotewerks_retries
    async def put_product(self, part: str, fields: Mapping[str, object]) -> bool:
        """Create or replace the product's row in the bridge's table (the pushed fields only); True when created.
        Two writers inserting the same new part at once: the loser's INSERT fails on the key and it updates."""
        statements = await self._products_ready()
        try:
            values = {**product_values(part, fields), "LastModified": datetime.now(UTC).replace(tzinfo=None)}
        except ProductValueError as exc:
            raise QuoteWerksError(str(exc), retryable=False) from None
        new_row = {"Description": part, "UnitOfMeasure": "", "Price": Decimal(0), "Active": True, "Availability": 0}
        for _ in range(2):
            try:
                async with self._begin() as connection:
                    changed = (await connection.execute(statements.replace(part, values))).rowcount
                    if changed == 1:
                        return False
                    if changed != 0:
                        raise QuoteWerksError(
                            f"product {part}: the database reported {changed} rows changed (SET NOCOUNT ON for this "
                            "login?); the write cannot be confirmed",
                            retryable=False,
                        )
                    await connection.execute(statements.add(part, {**new_row, **values}))
                    return True
            except QuoteWerksError as exc:
                if not isinstance(exc.__cause__, IntegrityError):
                    raise
                log.info("product %s was created by another writer meanwhile: updating it", part)
        raise QuoteWerksError(f"product {part}: neither updated nor inserted (key conflicts)", retryable=True)

    async def put_products(self, products: Mapping[str, Mapping[str, object]]) -> set[str]:
        """Create or replace many products' rows in one transaction (all or none): the rows there are updated and
        the others inserted, each kind in one executemany; the parts that were created. A key conflict (another
        writer inserted one of them meanwhile) writes them one by one instead."""
        statements = await self._products_ready()
        stamp = datetime.now(UTC).replace(tzinfo=None)
        try:
            rows = {part: {**product_values(part, fields), "LastModified": stamp} for part, fields in products.items()}
        except ProductValueError as exc:
            raise QuoteWerksError(str(exc), retryable=False) from None
        new_row = {"Description": "", "UnitOfMeasure": "", "Price": Decimal(0), "Active": True, "Availability": 0}
        try:
            return await self._write_products(statements, rows, new_row)
        except QuoteWerksError as exc:
            if not isinstance(exc.__cause__, IntegrityError):
                raise
        log.info("%d products: another writer created some of them meanwhile: writing them one by one", len(rows))
        return {part for part, fields in products.items() if await self.put_product(part, fields)}

    @quotewerks_retries
    async def _write_products(
        self, statements: ProductStatements, rows: Mapping[str, Mapping[str, Any]], new_row: Mapping[str, Any]
    ) -> set[str]:
        parts = list(rows)
        async with self._begin() as connection:
            existing: set[str] = set()
            for start in range(0, len(parts), PRODUCT_BATCH_PARAMETERS):
                chunk = parts[start : start + PRODUCT_BATCH_PARAMETERS]
                existing.update(str(p) for p in (await connection.execute(statements.known_parts(chunk))).scalars())
            by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            for part in parts:
                if part in existing:
                    values = rows[part]
                    by_columns.setdefault(tuple(sorted(values)), []).append(
                        {"the_part": part, **{f"new_{name}": value for name, value in values.items()}}
                    )
            for columns, parameters in by_columns.items():
                await connection.execute(statements.replace_each(columns), parameters)
            created = [part for part in parts if part not in existing]
            if created:
                await connection.execute(
                    statements.add_each(),
                    [
                        {**new_row, "Description": part, **rows[part], "ManufacturerPartNumber": part}
                        for part in created
                    ],
                )
        return set(created)

    @quotewerks_retries
    async def find_product(self, part: str) -> dict[str, Any] | None:
        """The product's row in the bridge's table, or None."""
        statements = await self._products_ready()
        async with self._connect() as connection:
            row = (await connection.execute(statements.by_part(part))).mappings().first()
        if row is None:
            return None
        return self._product(row)

    @quotewerks_retries
    async def all_products(self) -> list[dict[str, Any]]:
        """Every row of the bridge's product table."""
        statements = await self._products_ready()
        async with self._connect() as connection:
            rows = (await connection.execute(statements.every())).mappings().all()
        return [self._product(row) for row in rows]

    def _product(self, row: Any) -> dict[str, Any]:
        product = {name: _plain(value) for name, value in row.items()}
        product["Active"] = bool(row["Active"])
        product["LastModified"] = self._stamp_out(row["LastModified"].replace(tzinfo=UTC))
        return product
