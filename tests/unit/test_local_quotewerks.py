"""`make run QUOTEWERKS=db`'s database: the demo quotes in the schema subset, none approved, and an approval by the
banner's hand-made SQL is what the SQL connector lists, and can write back onto (its stamp compares equal)."""

import contextlib
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from pydantic import SecretStr

from m3bridge import local_quotewerks
from shared.quotewerks.connect import quotewerks_client
from shared.quotewerks.sql import QuoteWerksSqlClient

VIEW = local_quotewerks.IngestView(approved_status="Accepted", order_field="CustomText01", status_field="CustomText02")


async def test_demo_quotes_approved_by_hand_are_listed_and_written_back(tmp_path: Path) -> None:
    path = tmp_path / local_quotewerks.DATABASE_FILE
    doc_nos = await local_quotewerks.create(path, keep=False, approved={"accepted"})
    assert doc_nos[0] == "AAAQ1001"
    assert len(doc_nos) == len(set(doc_nos)) >= 3
    local = local_quotewerks.LocalQuoteWerks(path, VIEW)
    try:
        assert await local.first_open(doc_nos) == "AAAQ1001"
        header = await local.header("AAAQ1001")
        assert header is not None
        assert (header["SoldToCMAccountNo"], header["DocStatus"], header["CustomText01"]) == ("C000001", "Quoted", None)

        how = local_quotewerks.approve_by_hand(path, doc_nos[1], VIEW)
        sql = how.split('"')[1] if how.startswith("sqlite3 ") else how.split(";  (in ", 1)[0]
        with contextlib.closing(sqlite3.connect(path)) as connection, connection:
            connection.execute(sql)
        await local.approve("AAAQ1001")

        async with httpx.AsyncClient() as http:
            client = quotewerks_client(
                local_quotewerks.database_url(path),
                SecretStr(""),
                http=http,
                writable={"CustomText01": False, "CustomText02": True},
            )
            since = datetime.now(UTC) - timedelta(minutes=5)
            listed = await client.documents(doc_type="QUOTE", status="Accepted", modified_since=since)
            assert sorted(h["DocNo"] for h in listed) == sorted(["AAAQ1001", doc_nos[1]])
            for doc_no in ("AAAQ1001", doc_nos[1]):
                await client.update_document(doc_no, {"CustomText01": "1000000001", "CustomText02": "ordered"})
            assert isinstance(client, QuoteWerksSqlClient)
            await client.aclose()
        assert (await local.header(doc_nos[1]) or {})["CustomText01"] == "1000000001"
        assert await local.first_open(doc_nos) == doc_nos[2]
    finally:
        await local.aclose()

    # --keep-state: the file and what happened in it stay; no second set of quotes.
    assert await local_quotewerks.create(path, keep=True, approved={"accepted"}) == doc_nos
    with contextlib.closing(sqlite3.connect(path)) as connection:
        assert connection.execute("SELECT COUNT(*) FROM DocumentHeaders").fetchone()[0] == len(doc_nos)
