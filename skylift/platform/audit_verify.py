"""Verify a database's whole audit chain (used by ``skylift platform audit verify``)."""

from __future__ import annotations

import psycopg
from psycopg.rows import dict_row

from skylift.platform.audit import ChainVerifier, Verification, stream_all
from skylift.platform.db import libpq_url


async def verify_database(database_url: str, expect_head: str | None = None) -> Verification:
    """Verify every record; with ``expect_head``, that hash must also be in the chain."""
    verifier = ChainVerifier()
    found = expect_head is None
    async with await psycopg.AsyncConnection.connect(
        libpq_url(database_url), autocommit=True, row_factory=dict_row
    ) as conn:
        async for record in stream_all(conn):
            verifier.add(record)
            found = found or record.hash == expect_head
    if not found:
        verifier.result.problems.append(
            f"head {expect_head} is not in the chain (records cut off the end, or another log)"
        )
    return verifier.result
