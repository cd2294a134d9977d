"""Closing the PostgreSQL store while its database is away, with more queued than a batch."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from structlog.testing import capture_logs

from router.store import ComparisonRow, open_store
from router.store.postgres import MAX_BATCH
from tests.stores import fresh_database, on_postgres, outage, plain_settings


async def test_a_close_in_an_outage_with_a_full_batch_queued_does_not_wait_for_the_database(
        tmp_path: Path) -> None:
    """A batch that failed is retried before anything else is read from the queue: with a
    whole batch (MAX_BATCH) of counts waiting, the close's stop was never read, and the
    service's shutdown waited for the database to come back."""
    async with fresh_database() as dsn:
        with capture_logs() as logs:
            async with contextlib.AsyncExitStack() as later:
                store = await later.enter_async_context(
                    open_store(on_postgres(plain_settings(tmp_path), dsn)))
                await later.enter_async_context(outage(dsn))  # outlasts the store
                for i in range(MAX_BATCH + 10):
                    store.add_comparison(ComparisonRow(1.0 + i, "a", "b", "audit", "d", False))
                async with asyncio.timeout(10):
                    while store.failure is None:  # noqa: ASYNC110  # the writer's first try
                        await asyncio.sleep(0.05)
                async with asyncio.timeout(10):  # it waited for as long as the outage
                    await store.close()
        dropped = [e for e in logs if e["event"] == "store.writes_dropped_at_close"]
        assert len(dropped) == 1 and dropped[0]["writes"] == MAX_BATCH + 10
