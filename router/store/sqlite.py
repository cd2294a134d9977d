"""The SQLite engine: WAL files in the data dir, written by one group-commit thread.

Tables: ``comparisons`` (one row per comparison, agreements too, so rates are honest),
``live_diffs`` (the flagged ones, with a monotonic ``seq`` that orders the SSE stream and
paginates ``GET /v1/diffs``), ``drift_events`` and ``reprofile_requested``, in
``live.sqlite3``; the pinned pairings in ``pairings.json`` beside it.

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
from pathlib import Path
from typing import Any, Literal, TypeVar

from profiles.store import STORED_MARK
from router.errors import StartupError, StorageError
from router.store import files
from router.store.base import Channel, Clock, Watcher
from router.store.migrations import SQLITE, SchemaState, pending
from router.store.records import (
    DIFF_COLUMNS,
    BucketedCounts,
    ComparisonRow,
    Counts,
    DiffQuery,
    DriftRow,
    Retention,
    diff_json,
)

BUILD_POLL_S = 1.0
"""How often a watched store looks for a profile build's mark (the pairing follower's poll)."""
DB_NAME = "live.sqlite3"
PAIRINGS_NAME = "pairings.json"
Synchronous = Literal["FULL", "NORMAL"]
T = TypeVar("T")

_LoopWaiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[int]"]
"""An awaiting coroutine's future and its loop: settled with one wake-up per batch."""
_Write = tuple[str, Sequence[Any], "Future[int] | _LoopWaiter | None"]
_STOP = ("", (), None)
_LIVE = ("INSERT INTO comparisons", "INSERT INTO live_diffs")
"""Statements whose commit is a change on the ``live`` channel."""
_INSERT_COMPARISON = ("INSERT INTO comparisons (at, primary_model, partner, role, domain, "
                      "flagged) VALUES (?, ?, ?, ?, ?, ?)")
_INSERT_DIFF = (f"INSERT INTO live_diffs ({', '.join(DIFF_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in DIFF_COLUMNS)})")


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


def migrate(conn: sqlite3.Connection, where: str) -> SchemaState:
    """Apply the missing migrations in one ``BEGIN IMMEDIATE`` transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = int(conn.execute("PRAGMA user_version").fetchone()[0])
        todo = pending(where, current, SQLITE)
        for version, statements in todo:
            for statement in statements:
                conn.execute(statement)
            current = version
        conn.execute(f"PRAGMA user_version={current}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return SchemaState(where, current, len(SQLITE))


class SqliteStore:
    """The :class:`~router.store.base.Store` of one data dir (see the module docstring)."""

    def __init__(self, data_dir: Path, synchronous: Synchronous = "FULL",
                 max_bytes: int | None = None) -> None:
        """``max_bytes``: a cap on the database file; writes beyond it fail as on a full
        disk (and are reported as such, see :attr:`failure`)."""
        self.path = data_dir / DB_NAME
        self.pairings_path = data_dir / PAIRINGS_NAME
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
        self.written_at: float | None = None
        """When the last write failed, and why (``None``: never)."""
        self._watchers: list[tuple[asyncio.AbstractEventLoop, Watcher]] = []
        self._marks: asyncio.Task[None] | None = None

    def describe(self) -> str:
        return str(self.path)

    def open(self) -> SqliteStore:
        """Migrate the schema and start the writer thread; a data dir that cannot hold the
        store, or a file that is not one, is a :class:`StartupError` naming the file."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect()
            migrate(conn, str(self.path))
        except (OSError, sqlite3.Error) as exc:
            hint = files.open_hint(self.path, exc) if self.path.parent.is_dir() \
                else "the data dir must be a directory this process can write"
            raise StartupError(f"cannot open the live-diff store {self.path}: {exc} ({hint})"
                               ) from None
        self._reader = conn
        self._writer = threading.Thread(target=self._write_loop, name="live-store-writer",
                                        daemon=True)
        self._writer.start()
        return self

    def open_reader(self, *, require_current: bool = True) -> SqliteStore:
        """Open for reading only (the CLI on the data dir of a running or stopped service);
        with ``require_current``, a schema this code does not read — newer, or not yet
        migrated — is a :class:`StartupError`, as on PostgreSQL; so is a file that is not a
        store."""
        if not self.path.exists():
            raise StartupError(f"no live-diff store at {self.path}")
        try:
            self._reader = self._connect()
            state = self.schema() if require_current else None
        except sqlite3.Error as exc:
            self.close_now()
            raise StartupError(f"cannot read the live-diff store {self.path}: {exc}") from None
        if state is not None and not state.ok:
            self.close_now()
            raise StartupError(state.describe())
        return self

    def check_pages(self) -> None:
        """SQLite's ``quick_check`` of every page (``diffroute store check``: opening reads
        the header only, so a file damaged behind it opened fine and failed later, write by
        write); a damaged file is a :class:`StartupError` naming its first problem."""
        try:
            problems = [str(r[0]) for r in self.read("PRAGMA quick_check(5)")]
        except sqlite3.DatabaseError as exc:
            problems = [str(exc)]
        if problems != ["ok"]:
            first = next((line for line in "\n".join(problems).splitlines()
                          if line.strip() and not line.startswith("***")), problems[0])
            raise StartupError(f"the live-diff store {self.path} is damaged: {first.strip()} "
                               "(move the file aside to start with an empty one)")

    def schema(self) -> SchemaState:
        """The schema version of the file, against the latest this code knows."""
        current = int(self.read("PRAGMA user_version")[0][0])
        return SchemaState(str(self.path), current, len(SQLITE))

    async def close(self) -> None:
        if self._marks is not None:
            self._marks.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._marks
            self._marks = None
        await asyncio.to_thread(self.close_now)

    def close_now(self) -> None:
        """Flush pending writes, stop the writer, close the connections (blocking)."""
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

    # -- the writer thread ------------------------------------------------------------------

    def _submit(self, sql: str, params: Sequence[Any]) -> None:
        self._hand_comparisons()  # statements stay in the order they were made
        self._queue.put((sql, params, None))

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
                    continue
                cursor = conn.execute(sql, params)
                if sql.startswith("DELETE"):  # how many rows went
                    results.append(max(0, cursor.rowcount))
                    continue
                # an INSERT … SELECT that inserted nothing answers 0, not a stale rowid
                results.append(0 if cursor.rowcount == 0 else cursor.lastrowid or 0)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            results = [StorageError("storing in the live-diff store", exc)] * len(batch)
            self.failed_writes += _rows_in(batch)
            self.failure = (time.time(), str(exc))
        else:
            self.batches += 1
            self.written_at = time.time()
            if any(sql.startswith(_LIVE) for sql, _, _ in batch):
                self._changed("live")
        self._notify([waiter for _, _, waiter in batch], results)

    def watch(self, callback: Watcher) -> None:
        self._watchers.append((asyncio.get_running_loop(), callback))
        if self._marks is None:
            self._marks = asyncio.get_running_loop().create_task(self._follow_builds())

    async def _follow_builds(self) -> None:
        """``"profiles"`` after a profile build stored observations in this data dir (it
        touches :data:`~profiles.store.STORED_MARK` when it closes its store): what
        PostgreSQL's ``NOTIFY`` does for its instances. One ``stat`` a poll."""
        mark = self.path.parent / STORED_MARK
        seen = _stamp(mark)
        while True:
            await asyncio.sleep(BUILD_POLL_S)
            stamp = _stamp(mark)
            if stamp != seen:
                seen = stamp
                self._changed("profiles")

    def _changed(self, channel: Channel) -> None:
        """From any thread: call the watchers on their loops."""
        for loop, callback in self._watchers:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody watches any more
                loop.call_soon_threadsafe(callback, channel)

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

    async def _write(self, sql: str, params: Sequence[Any]) -> int:
        """Queue a statement and wait until it is committed; its rowid."""
        if self._writer is None:  # closed (or never opened): nobody would ever answer
            raise StorageError("storing in the live-diff store",
                               RuntimeError(f"{self.path} is closed"))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._hand_comparisons()  # statements stay in the order they were made
        self._queue.put((sql, params, (loop, future)))
        return await future

    # -- writes -----------------------------------------------------------------------------

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

    async def add_drift_event(self, row: DriftRow, within_s: float) -> bool:
        # one writer thread: the check and the insert cannot interleave with another's
        return bool(await self._write(
            "INSERT INTO drift_events (at, primary_model, partner, domain, direction, "
            "expected, observed, comparisons, statistic) "
            "SELECT ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM drift_events "
            "WHERE primary_model = ? AND partner = ? AND domain = ? AND direction = ? "
            "AND at > ?)",
            (row.at, row.primary, row.partner, row.domain, row.direction, row.expected,
             row.observed, row.comparisons, row.statistic, row.primary, row.partner,
             row.domain, row.direction, row.at - within_s)))

    def request_reprofile(self, at: float, model: str, reason: str) -> None:
        self._submit("INSERT INTO reprofile_requested (at, model, reason) VALUES (?, ?, ?)",
                     (at, model, reason))

    async def add_diff(self, values: dict[str, Any]) -> int:
        return await self._write(_INSERT_DIFF, [values[c] for c in DIFF_COLUMNS])

    async def flush(self) -> None:
        await self._write("SELECT 1", ())

    async def save_pairings(self, document: str) -> None:
        try:
            await asyncio.to_thread(files.write_atomically, self.pairings_path, document)
        except OSError as exc:
            raise StorageError(f"saving the pairings to {self.pairings_path}", exc) from None
        self._changed("pairings")

    async def load_pairings(self) -> str | None:
        # a pairings.json that is a directory, unreadable or not UTF-8 is a storage failure
        # naming the file — not an exception the pairing follower does not expect (it died)
        try:
            return await asyncio.to_thread(files.read_text, self.pairings_path)
        except (OSError, UnicodeDecodeError) as exc:
            raise StorageError(f"reading the pairings {self.pairings_path}", exc) from None

    def pairings_source(self) -> str:
        return str(self.pairings_path)

    async def enforce(self, retention: Retention, now: Clock = time.time) -> int:
        # the live diffs deleted, counted by the deletes (rows before less rows after counted
        # the inserts made meanwhile against them: once -3)
        deleted = 0
        if retention.max_age_s is not None:
            cutoff = now() - retention.max_age_s
            deleted += await self._write("DELETE FROM live_diffs WHERE created_at < ?",
                                         (cutoff,))
            await self._write("DELETE FROM comparisons WHERE at < ?", (cutoff,))
        if retention.max_records is not None:
            deleted += await self._write(
                "DELETE FROM live_diffs WHERE seq <= (SELECT seq FROM live_diffs ORDER BY seq "
                "DESC LIMIT 1 OFFSET ?)", (retention.max_records,))
        if retention.max_comparisons is not None:
            await self._write("DELETE FROM comparisons WHERE rowid <= (SELECT rowid FROM "
                              "comparisons ORDER BY rowid DESC LIMIT 1 OFFSET ?)",
                              (retention.max_comparisons,))
        return deleted

    # -- reads ------------------------------------------------------------------------------

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Run a query on the reader connection (call it from a worker thread)."""
        with self._reader_lock:
            if self._reader is None:
                raise StorageError(f"reading {self.path}",
                                   sqlite3.ProgrammingError("the store is closed"))
            self._reader.row_factory = sqlite3.Row
            return list(self._reader.execute(sql, params))

    async def _read(self, convert: Callable[[list[sqlite3.Row]], T], sql: str,
                    params: Sequence[Any] = ()) -> T:
        def run() -> T:
            try:
                return convert(self.read(sql, params))
            except sqlite3.Error as exc:
                raise StorageError(f"reading {self.path}", exc) from None

        return await asyncio.to_thread(run)

    async def diffs(self, query: DiffQuery) -> list[dict[str, Any]]:
        """Oldest first after the cursor, or newest first before it (``newest_first``: the
        primary key walked backwards, no sort)."""
        q = query
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
        return await self._read(
            lambda rows: [_diff(r) for r in rows],
            f"SELECT * FROM live_diffs WHERE {' AND '.join(where)} ORDER BY seq {order} LIMIT ?",
            [*params, q.limit])

    async def comparisons_after(self, after: int, since: float, limit: int
                                ) -> list[tuple[int, ComparisonRow]]:
        return await self._read(
            lambda rows: [(r[0], ComparisonRow(r[1], r[2], r[3], r[4], r[5], bool(r[6])))
                          for r in rows],
            "SELECT rowid, at, primary_model, partner, role, domain, flagged FROM comparisons "
            "WHERE rowid > ? AND at >= ? ORDER BY rowid LIMIT ?", (after, since, limit))

    async def last_ids(self) -> tuple[int, int]:
        return await self._read(
            lambda rows: (int(rows[0][0]), int(rows[0][1])),
            "SELECT (SELECT COALESCE(MAX(rowid), 0) FROM comparisons), "
            "(SELECT COALESCE(MAX(seq), 0) FROM live_diffs)")

    async def counts(self, since: float) -> Counts:
        return await self._read(
            lambda rows: [(r[0], r[1], r[2], int(r[3]), int(r[4] or 0)) for r in rows],
            "SELECT primary_model, partner, domain, COUNT(*), SUM(flagged) FROM comparisons "
            "WHERE at >= ? GROUP BY 1, 2, 3 ORDER BY 1, 2, 3", (since,))

    async def bucketed_counts(self, since: float, bucket_s: float) -> BucketedCounts:
        return await self._read(
            lambda rows: [(r[0], r[1], r[2], int(r[3]), int(r[4]), int(r[5] or 0))
                          for r in rows],
            "SELECT primary_model, partner, domain, CAST((at - ?) / ? AS INTEGER), COUNT(*), "
            "SUM(flagged) FROM comparisons WHERE at >= ? GROUP BY 1, 2, 3, 4 "
            "ORDER BY 1, 2, 3, 4", (since, bucket_s, since))

    async def drift_events(self, limit: int = 100) -> list[dict[str, Any]]:
        return await self._read(lambda rows: [dict(r) for r in reversed(rows)],
                                "SELECT * FROM drift_events ORDER BY seq DESC LIMIT ?", (limit,))

    async def count_diffs(self) -> int:
        return await self._read(lambda rows: int(rows[0][0]), "SELECT COUNT(*) FROM live_diffs")


def _diff(row: sqlite3.Row) -> dict[str, Any]:
    prompt = row["prompt"]
    return diff_json(dict(row), json.loads(row["domains"]),
                     None if prompt is None else json.loads(prompt))


def _stamp(path: Path) -> tuple[int, int] | None:
    """A file's modification time and size, ``None`` when it is not there."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size
