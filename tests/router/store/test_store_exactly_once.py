"""The PostgreSQL writer when a commit lands but its reply does not reach the service.

Between the service and the database sits a loopback TCP proxy that forwards everything and,
when armed, holds the server's reply to the next ``COMMIT`` (longer than the writer waits) or
drops every connection right after forwarding it and refuses new ones for a while: the
transaction is committed, the writer cannot know. The writes must then be stored once — not
lost, not counted twice — and an acknowledged live diff answered by what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from router.errors import StorageError
from router.store import ComparisonRow, DiffQuery, open_store, postgres
from router.store.records import Retention
from tests.stores import fresh_database, on_postgres, plain_settings


class CommitProxy:
    """A TCP proxy to PostgreSQL on loopback that can hold or cut a ``COMMIT``'s reply."""

    def __init__(self, dsn: str) -> None:
        parts = urlsplit(dsn)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._dsn = parts
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.hold_s = 0.0  # the next COMMIT's reply waits this long
        self.cut = False  # the next COMMIT: forwarded, then every connection dropped
        self.refusing = False
        self.commits_seen = 0

    @property
    def dsn(self) -> str:
        """The proxied DSN (without TLS, so the proxy can read the messages)."""
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        netloc = self._dsn.netloc.rsplit("@", 1)[0] + f"@127.0.0.1:{port}"
        return urlunsplit(self._dsn._replace(netloc=netloc, query="sslmode=disable"))

    async def __aenter__(self) -> CommitProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        self._drop_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _drop_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
                     ) -> None:
        if self.refusing:
            client_w.transport.abort()
            return
        server_r, server_w = await asyncio.open_connection(*self._target)
        self._writers |= {client_w, server_w}
        held: asyncio.Queue[float] = asyncio.Queue()
        self._spawn(self._upstream(client_r, server_w, held))
        self._spawn(self._downstream(server_r, client_w, held))

    async def _upstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        held: asyncio.Queue[float]) -> None:
        with contextlib.suppress(OSError):
            while chunk := await reader.read(65536):
                commit = b"COMMIT" in chunk
                self.commits_seen += commit
                if commit and self.hold_s:
                    held.put_nowait(self.hold_s)
                    self.hold_s = 0.0
                writer.write(chunk)
                await writer.drain()
                if commit and self.cut:
                    self.cut = False
                    await asyncio.sleep(0.3)  # the server commits; its reply is lost
                    self.refusing = True
                    self._drop_all()
                    return
        writer.transport.abort()

    async def _downstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          held: asyncio.Queue[float]) -> None:
        with contextlib.suppress(OSError):
            while chunk := await reader.read(65536):
                if not held.empty():
                    await asyncio.sleep(held.get_nowait())
                writer.write(chunk)
                await writer.drain()
        writer.transport.abort()


@contextlib.asynccontextmanager
async def proxied_store(tmp_path: Path) -> AsyncIterator[tuple[Any, CommitProxy]]:
    async with fresh_database() as dsn, CommitProxy(dsn) as proxy, \
            open_store(on_postgres(plain_settings(tmp_path), proxy.dsn)) as store:
        await store.flush()
        yield store, proxy


async def flushed(store: Any) -> None:
    """Wait (bounded) until a flush commits: the database is reachable again."""
    async with asyncio.timeout(20):
        while True:
            with contextlib.suppress(StorageError):
                await store.flush()
                return
            await asyncio.sleep(0.1)


def diff_values(diff_id: str) -> dict[str, Any]:
    return {"id": diff_id, "created_at": 5.0, "request_id": "r", "primary_model": "a",
            "partner": "b", "role": "audit", "answered_by": "a", "mode": "concurrent",
            "domains": '["d"]', "prompt_digest": "sha256:x", "prompt": None,
            "primary_text": "4", "partner_text": "5", "agreement": 0.0, "divergence": 1.0,
            "threshold": 0.5, "method": "typed:numeric", "unified_diff": None, "reason": "r",
            "redacted": 0}


def add_five(store: Any) -> None:
    for i in range(5):
        store.add_comparison(ComparisonRow(10.0 + i, "a", "b", "audit", "d", i < 2))


async def test_a_commit_answered_late_is_stored_once_and_acknowledged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres, "ATTEMPT_S", 0.5)
    async with proxied_store(tmp_path) as (store, proxy):
        proxy.hold_s = 1.5  # past ATTEMPT_S: the writer gives up on the reply
        add_five(store)
        seq = await store.add_diff(diff_values("ld_late"))  # same batch as the five
        assert proxy.hold_s == 0.0  # the hold was used
        await store.flush()
        assert await store.counts(0.0) == [("a", "b", "d", 5, 2)]  # not 10
        [diff] = await store.diffs(DiffQuery(limit=10))
        assert diff["id"] == "ld_late" and diff["seq"] == seq
        assert store.failure is not None  # the lost reply is on record
        # the batches' tokens are kept a day, then deleted with the rest of retention
        store.add_comparison(ComparisonRow(20.0, "a", "b", "audit", "d", False))
        await store.flush()
        tokens = "SELECT COUNT(*) FROM write_batches"
        assert (await store._fetch(tokens))[0][0] >= 2
        await store.enforce(Retention(None, None, None), time.time)
        assert (await store._fetch(tokens))[0][0] >= 2
        later = time.time() + postgres.TOKENS_KEPT_S + 1
        await store.enforce(Retention(None, None, None), lambda: later)
        assert (await store._fetch(tokens))[0][0] == 0


async def test_a_commit_cut_off_with_the_database_is_counted_once_when_it_is_back(
        tmp_path: Path) -> None:
    async with proxied_store(tmp_path) as (store, proxy):
        proxy.cut = True  # forward the COMMIT, then drop everything and refuse connections
        add_five(store)
        with pytest.raises(StorageError, match="may have been stored"):
            async with asyncio.timeout(20):  # (no task: the diff joins the five's batch)
                await store.add_diff(diff_values("ld_cut"))
        assert proxy.refusing
        await asyncio.sleep(2 * postgres.RETRY_S)  # the five are tried again, and refused
        proxy.refusing = False
        await flushed(store)
        assert await store.counts(0.0) == [("a", "b", "d", 5, 2)]  # once, not twice
        assert [d["id"] for d in await store.diffs(DiffQuery(limit=10))] == ["ld_cut"]


async def test_a_commit_that_did_not_land_is_tried_again(tmp_path: Path) -> None:
    """The fence says the batch is lost: the counts are written by the next commit."""
    async with proxied_store(tmp_path) as (store, proxy):
        proxy.refusing = True
        proxy._drop_all()  # the writer's connection goes before anything is sent
        add_five(store)
        with pytest.raises(StorageError):
            await asyncio.wait_for(store.flush(), 20)
        proxy.refusing = False
        await flushed(store)
        assert await store.counts(0.0) == [("a", "b", "d", 5, 2)]
