"""The live-diff store: SQLite in WAL mode under the data dir, written by one group-commit thread.

Tables: ``comparisons`` (one row per comparison, agreements too, so rates are honest),
``live_diffs`` (the flagged ones, with a monotonic ``seq`` that orders the SSE stream and
paginates ``GET /v1/diffs``), ``drift_events`` and ``reprofile_requested``.

Durability. A live diff id returned to a client must survive ``kill -9``. The writer thread
commits before it resolves a record's future, so an id is only returned once its transaction is
in the WAL. ``synchronous=FULL`` (the default here) also fsyncs the WAL on every commit, so an
acknowledged record survives a power loss too; ``NORMAL`` (``live.synchronous``)
would be enough for a process crash — the WAL is in the OS page cache once ``write`` returns —
but not for a machine crash. FULL's fsync is paid once per *batch*: the writer drains everything
queued since its last commit into one transaction (group commit), so under concurrent load many
records share one fsync and recording stays off the critical path beyond that commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from router.config import LiveSettings
from router.errors import BadRequestError, StartupError

DB_NAME = "live.sqlite3"
Synchronous = Literal["FULL", "NORMAL"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS comparisons (
    rowid INTEGER PRIMARY KEY, at REAL NOT NULL, primary_model TEXT NOT NULL,
    partner TEXT NOT NULL, role TEXT NOT NULL, domain TEXT NOT NULL, flagged INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS comparisons_at ON comparisons(at);
CREATE TABLE IF NOT EXISTS live_diffs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, created_at REAL NOT NULL,
    request_id TEXT NOT NULL, primary_model TEXT NOT NULL, partner TEXT NOT NULL,
    role TEXT NOT NULL, answered_by TEXT NOT NULL, mode TEXT NOT NULL, domains TEXT NOT NULL,
    prompt_digest TEXT NOT NULL, prompt TEXT, primary_text TEXT, partner_text TEXT,
    agreement REAL NOT NULL, divergence REAL NOT NULL, threshold REAL NOT NULL,
    method TEXT NOT NULL, unified_diff TEXT, reason TEXT NOT NULL, redacted INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS live_diffs_created ON live_diffs(created_at);
CREATE TABLE IF NOT EXISTS drift_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, primary_model TEXT NOT NULL,
    partner TEXT NOT NULL, domain TEXT NOT NULL, direction TEXT NOT NULL,
    expected REAL NOT NULL, observed REAL NOT NULL, comparisons INTEGER NOT NULL,
    statistic REAL NOT NULL);
CREATE TABLE IF NOT EXISTS reprofile_requested (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, model TEXT NOT NULL,
    reason TEXT NOT NULL, done INTEGER NOT NULL DEFAULT 0);
"""

_DIFF_COLUMNS = (
    "id", "created_at", "request_id", "primary_model", "partner", "role", "answered_by", "mode",
    "domains", "prompt_digest", "prompt", "primary_text", "partner_text", "agreement",
    "divergence", "threshold", "method", "unified_diff", "reason", "redacted")
_INSERT_DIFF = (f"INSERT INTO live_diffs ({', '.join(_DIFF_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in _DIFF_COLUMNS)})")


@dataclass(frozen=True, slots=True)
class ComparisonRow:
    """One comparison as counted in the rates."""

    at: float
    primary: str
    partner: str
    role: str
    domain: str
    flagged: bool


@dataclass(frozen=True, slots=True)
class Retention:
    """Live diffs older than ``max_age_s`` or beyond the newest ``max_records`` are deleted.

    Comparison rows follow the same age limit and keep at most ``max_comparisons``.
    """

    max_age_s: float | None = 30 * 86_400.0
    max_records: int | None = 100_000
    max_comparisons: int | None = 2_000_000

    @classmethod
    def of(cls, config: LiveSettings) -> Retention:
        """The retention the ``live`` settings ask for."""
        return cls(config.max_age_s, config.max_records, config.max_comparisons)


@dataclass(frozen=True, slots=True)
class DiffQuery:
    """Filters and a page of ``GET /v1/diffs`` (``after``: the cursor, a ``seq``)."""

    primary: str | None = None
    partner: str | None = None
    role: str | None = None
    domain: str | None = None
    since: float | None = None
    until: float | None = None
    after: int = 0
    """Oldest first: the page starts after this ``seq``; newest first: before it (0: the end)."""
    limit: int = 50
    newest_first: bool = False


_LoopWaiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[int]"]
"""An awaiting coroutine's future and its loop: settled with one wake-up per batch."""
_Write = tuple[str, Sequence[Any], "Future[int] | _LoopWaiter | None"]
_STOP = ("", (), None)
_INSERT_COMPARISON = ("INSERT INTO comparisons (at, primary_model, partner, role, domain, "
                      "flagged) VALUES (?, ?, ?, ?, ?, ?)")


class _Rows(list[tuple[Any, ...]]):
    """The parameters of one statement run for many rows (``executemany``), nobody waiting."""


def _rows_in(batch: Sequence[_Write]) -> int:
    """The rows a batch writes (a :class:`_Rows` write counts each of its rows)."""
    return sum(len(params) if isinstance(params, _Rows) else 1 for _, params, _ in batch)


def _settle(outcomes: list[tuple[asyncio.Future[int], int | BaseException]]) -> None:
    """On the event loop: resolve the futures of one committed (or failed) batch."""
    for future, outcome in outcomes:
        if future.done():  # the waiter was cancelled
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


class LiveStore:
    """Open with :meth:`open`; writes go through the writer thread, reads through ``read``."""

    def __init__(self, path: Path, synchronous: Synchronous = "FULL",
                 max_bytes: int | None = None) -> None:
        """``max_bytes``: a cap on the database file; writes beyond it fail as on a full
        disk (and are reported as such, see :attr:`failure`)."""
        self.path = path
        self.synchronous = synchronous
        self.max_bytes = max_bytes
        self._queue: queue.SimpleQueue[_Write] = queue.SimpleQueue()
        self._comparisons = _Rows()
        """Comparison rows of this event-loop turn, not yet handed to the writer."""
        self._reader_lock = threading.Lock()
        self._reader: sqlite3.Connection | None = None
        self._writer: threading.Thread | None = None
        self.batches = 0
        """Transactions committed by the writer (one per group commit)."""
        self.failed_writes = 0
        """Statements the writer could not commit (a full disk, a broken file)."""
        self.failure: tuple[float, str] | None = None
        """When the last write failed, and why (``None``: never)."""

    @classmethod
    def in_data_dir(cls, data_dir: Path, synchronous: Synchronous = "FULL",
                    max_bytes: int | None = None) -> LiveStore:
        return cls(data_dir / DB_NAME, synchronous, max_bytes)

    def open(self) -> LiveStore:
        """Create the schema and start the writer thread; a data dir that cannot hold the
        store, or a file that is not one, is a :class:`StartupError` naming the file."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect()
            conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StartupError(f"cannot open the live-diff store {self.path}: {exc} (move the "
                               "file aside to start with an empty store)") from None
        self._reader = conn
        self._writer = threading.Thread(target=self._write_loop, name="live-store-writer",
                                        daemon=True)
        self._writer.start()
        return self

    def open_reader(self) -> LiveStore:
        """Open for reading only (the CLI on the data dir of a running or stopped service)."""
        self._reader = self._connect()
        return self

    def close(self) -> None:
        """Flush pending writes, stop the writer, close the connections."""
        if self._writer is not None:
            self._hand_comparisons()
            self._queue.put(_STOP)
            self._writer.join()
            self._writer = None
        # under the reader's lock: a read still running in a worker thread (one whose awaiting
        # task was cancelled at shutdown) finishes before its connection goes away — closing a
        # connection during a query crashes SQLite
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA busy_timeout=5000")
        if self.max_bytes is not None:
            page = conn.execute("PRAGMA page_size").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count={max(1, self.max_bytes // page)}")
        return conn

    # -- writing ----------------------------------------------------------------------------

    def submit(self, sql: str, params: Sequence[Any], *, wait: bool = True) -> Future[int] | None:
        """Queue one statement; the future (if ``wait``) resolves to its rowid once committed."""
        future: Future[int] | None = Future() if wait else None
        self._hand_comparisons()  # statements stay in the order they were made
        self._queue.put((sql, params, future))
        return future

    def _write_loop(self) -> None:
        conn = self._connect()
        try:
            while True:
                batch = [self._queue.get()]
                while True:  # group commit: everything queued meanwhile joins this transaction
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stop = any(item is _STOP for item in batch)
                self._commit(conn, [item for item in batch if item is not _STOP])
                if stop:
                    return
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[_Write]) -> None:
        if not batch:
            return
        results: list[int | BaseException] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for sql, params, _ in batch:
                if isinstance(params, _Rows):
                    conn.executemany(sql, params)
                    results.append(0)
                else:
                    results.append(conn.execute(sql, params).lastrowid or 0)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            results = [exc] * len(batch)
            self.failed_writes += _rows_in(batch)
            self.failure = (time.time(), str(exc))
        else:
            self.batches += 1
        self._notify([waiter for _, _, waiter in batch], results)

    @staticmethod
    def _notify(waiters: list[Future[int] | _LoopWaiter | None],
                results: list[int | BaseException]) -> None:
        # one call_soon_threadsafe per loop and batch, not per record: each is a loop wake-up
        by_loop: dict[asyncio.AbstractEventLoop,
                      list[tuple[asyncio.Future[int], int | BaseException]]] = {}
        for waiter, result in zip(waiters, results, strict=True):
            if isinstance(waiter, Future):
                if isinstance(result, BaseException):
                    waiter.set_exception(result)
                else:
                    waiter.set_result(result)
            elif waiter is not None:
                by_loop.setdefault(waiter[0], []).append((waiter[1], result))
        for loop, outcomes in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_settle, outcomes)

    async def write(self, sql: str, params: Sequence[Any]) -> int:
        """Queue a statement and wait until it is committed; its rowid."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._hand_comparisons()  # statements stay in the order they were made
        self._queue.put((sql, params, (loop, future)))
        return await future

    def add_comparison(self, row: ComparisonRow) -> None:
        """Count a comparison (fire and forget: nothing is acknowledged for it).

        The rows of one event-loop turn go to the writer as one ``executemany`` at the end of
        the turn (or before the next statement): one hand-off and writer wake-up per turn,
        not per comparison. Call it on the event loop, or where none runs (then: at once).
        """
        self._comparisons.append((row.at, row.primary, row.partner, row.role, row.domain,
                                  int(row.flagged)))
        if len(self._comparisons) > 1:
            return  # the hand-off is scheduled already
        try:
            asyncio.get_running_loop().call_soon(self._hand_comparisons)
        except RuntimeError:  # no event loop in this thread
            self._hand_comparisons()

    def _hand_comparisons(self) -> None:
        """Queue the pending comparison rows for the writer."""
        if self._comparisons:
            rows, self._comparisons = self._comparisons, _Rows()
            self._queue.put((_INSERT_COMPARISON, rows, None))

    def add_drift_event(self, at: float, primary: str, partner: str, domain: str,
                        direction: str, expected: float, observed: float, comparisons: int,
                        statistic: float) -> None:
        """Persist a drift alarm (fire and forget)."""
        self.submit("INSERT INTO drift_events (at, primary_model, partner, domain, direction, "
                    "expected, observed, comparisons, statistic) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (at, primary, partner, domain, direction, expected, observed, comparisons,
                     statistic), wait=False)

    def request_reprofile(self, at: float, model: str, reason: str) -> None:
        """Note that ``model`` should be profiled again (fire and forget)."""
        self.submit("INSERT INTO reprofile_requested (at, model, reason) VALUES (?, ?, ?)",
                    (at, model, reason), wait=False)

    async def add_diff(self, values: dict[str, Any]) -> int:
        """Insert a live diff (keys: :data:`_DIFF_COLUMNS`); its ``seq`` once committed."""
        return await self.write(_INSERT_DIFF, [values[c] for c in _DIFF_COLUMNS])

    # -- reading ----------------------------------------------------------------------------

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Run a query on the reader connection (call it from a worker thread)."""
        with self._reader_lock:
            if self._reader is None:
                raise sqlite3.ProgrammingError(f"the live store {self.path} is closed")
            self._reader.row_factory = sqlite3.Row
            return list(self._reader.execute(sql, params))

    def diffs(self, q: DiffQuery) -> list[dict[str, Any]]:
        """A page of live diffs, oldest first after the cursor ``q.after``, or newest first
        before it (``q.newest_first``; the primary key walked backwards: no sort)."""
        where: list[str] = ["seq < ?" if q.newest_first and q.after else "seq > ?"]
        params: list[Any] = [q.after if q.after or not q.newest_first else 0]
        for column, value in (("primary_model", q.primary), ("partner", q.partner),
                              ("role", q.role)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if q.domain is not None:
            where.append("EXISTS (SELECT 1 FROM json_each(domains) WHERE value = ?)")
            params.append(q.domain)
        if q.since is not None:
            where.append("created_at >= ?")
            params.append(q.since)
        if q.until is not None:
            where.append("created_at < ?")
            params.append(q.until)
        order = "DESC" if q.newest_first else ""
        rows = self.read(f"SELECT * FROM live_diffs WHERE {' AND '.join(where)} "
                         f"ORDER BY seq {order} LIMIT ?", [*params, q.limit])
        return [diff_json(r) for r in rows]

    def ids(self) -> set[str]:
        return {r["id"] for r in self.read("SELECT id FROM live_diffs")}

    def comparisons(self, since: float, limit: int | None = None) -> list[ComparisonRow]:
        """Comparisons since a time, oldest first; with ``limit``, only the newest ones."""
        rows = self.read("SELECT at, primary_model, partner, role, domain, flagged FROM "
                         "comparisons WHERE at >= ? ORDER BY rowid DESC LIMIT ?",
                         (since, -1 if limit is None else limit))
        return [ComparisonRow(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in reversed(rows)]

    def counts(self, since: float) -> list[tuple[str, str, str, int, int]]:
        """``(primary, partner, domain, comparisons, disagreements)`` since a time."""
        rows = self.read("SELECT primary_model, partner, domain, COUNT(*), SUM(flagged) "
                         "FROM comparisons WHERE at >= ? GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
                         (since,))
        return [(r[0], r[1], r[2], int(r[3]), int(r[4] or 0)) for r in rows]

    def bucketed_counts(self, since: float, bucket_s: float
                        ) -> list[tuple[str, str, str, int, int, int]]:
        """``(primary, partner, domain, bucket, comparisons, disagreements)`` since a time,
        the bucket being ``(at - since) // bucket_s``: a rate's history in one scan."""
        rows = self.read("SELECT primary_model, partner, domain, CAST((at - ?) / ? AS INTEGER), "
                         "COUNT(*), SUM(flagged) FROM comparisons WHERE at >= ? "
                         "GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4", (since, bucket_s, since))
        return [(r[0], r[1], r[2], int(r[3]), int(r[4]), int(r[5] or 0)) for r in rows]

    def drift_events(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.read("SELECT * FROM drift_events ORDER BY seq DESC LIMIT ?", (limit,))
        return [dict(r) for r in reversed(rows)]

    # -- retention --------------------------------------------------------------------------

    async def enforce(self, retention: Retention, now: Callable[[], float] = time.time) -> int:
        """Delete what retention allows; the number of live diffs deleted."""
        before = await asyncio.to_thread(self.count_diffs)
        if retention.max_age_s is not None:
            cutoff = now() - retention.max_age_s
            await self.write("DELETE FROM live_diffs WHERE created_at < ?", (cutoff,))
            await self.write("DELETE FROM comparisons WHERE at < ?", (cutoff,))
        if retention.max_records is not None:
            await self.write("DELETE FROM live_diffs WHERE seq <= (SELECT seq FROM live_diffs "
                             "ORDER BY seq DESC LIMIT 1 OFFSET ?)", (retention.max_records,))
        if retention.max_comparisons is not None:
            await self.write("DELETE FROM comparisons WHERE rowid <= (SELECT rowid FROM "
                             "comparisons ORDER BY rowid DESC LIMIT 1 OFFSET ?)",
                             (retention.max_comparisons,))
        after = await asyncio.to_thread(self.count_diffs)
        return before - after

    def count_diffs(self) -> int:
        return int(self.read("SELECT COUNT(*) FROM live_diffs")[0][0])


def parse_time(value: str, param: str) -> float:
    """Epoch seconds or ISO 8601 (a naive time is UTC)."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequestError(f"{param} must be epoch seconds or ISO 8601, got '{value}'",
                              param=param) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def diff_json(row: sqlite3.Row) -> dict[str, Any]:
    """A stored live diff as the API shows it."""
    prompt = row["prompt"]
    return {
        "id": row["id"], "seq": row["seq"], "created_at": row["created_at"],
        "request_id": row["request_id"], "primary": row["primary_model"],
        "partner": row["partner"], "role": row["role"], "answered_by": row["answered_by"],
        "mode": row["mode"], "domains": json.loads(row["domains"]),
        "prompt_digest": row["prompt_digest"],
        "messages": None if prompt is None else json.loads(prompt),
        "primary_text": row["primary_text"], "partner_text": row["partner_text"],
        "agreement": row["agreement"], "divergence": row["divergence"],
        "threshold": row["threshold"], "method": row["method"],
        "unified_diff": row["unified_diff"], "reason": row["reason"],
        "redacted": bool(row["redacted"]),
    }
