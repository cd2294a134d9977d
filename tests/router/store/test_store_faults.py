"""The PostgreSQL store when its database goes away while serving, and comes back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from router.errors import StorageError
from router.store import ComparisonRow, open_store
from tests.stores import fresh_database, on_postgres, outage, plain_settings


async def test_counts_wait_out_an_outage_and_acknowledged_writes_fail_visibly(
        tmp_path: Path) -> None:
    async with fresh_database() as dsn, \
            open_store(on_postgres(plain_settings(tmp_path), dsn)) as store:
        store.add_comparison(ComparisonRow(1.0, "a", "b", "audit", "d", True))
        await store.flush()
        async with outage(dsn):
            for i in range(50):
                store.add_comparison(ComparisonRow(2.0 + i, "a", "b", "audit", "d", False))
            with pytest.raises(StorageError):
                await asyncio.wait_for(store.flush(), 10)
            assert store.failure is not None
            with pytest.raises(StorageError):
                await store.counts(0.0)
        # back: the queued counts are committed by themselves, nothing was lost
        async with asyncio.timeout(10):
            while True:
                try:
                    if await store.counts(0.0) == [("a", "b", "d", 51, 1)]:
                        break
                except StorageError:
                    pass
                await asyncio.sleep(0.1)
        await store.flush()
