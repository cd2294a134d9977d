"""The PostgreSQL engine (asyncpg): one database shared by every instance of the service.

The same tables as the SQLite engine (:mod:`router.store.migrations`), plus ``pairings`` and
``schema_migrations``. Writes go through one writer task per instance, which drains what is
queued into one transaction (group commit) — comparisons with ``executemany`` — and resolves a
live diff's future only once that transaction is committed, so an id returned to a client is
in the database first.

Order across instances. Comparisons and live diffs are inserted under a transaction-scoped
advisory lock (:data:`LIVE_LOCK`): ids and ``seq`` values are drawn and committed in one order
by all instances, so a reader that has seen id n never later finds a smaller one committed —
what makes the stream resumable from the database and lets every instance feed its drift
monitor with the same comparisons in the same order. Each such batch sends a ``NOTIFY`` on
:data:`LIVE_CHANNEL`; saved pairings one on :data:`PAIRINGS_CHANNEL`. One connection per
instance listens (:mod:`router.store.pg_listen`), and reconnects by itself.

Faults. Fire-and-forget writes (comparisons, re-profile requests) wait in a bounded queue
(:data:`MAX_QUEUED`); beyond it they are dropped and counted as a failure, never blocking a
request. While the database is unreachable (restarting, a dropped connection) they stay
queued and are tried again every :data:`RETRY_S`, so recording resumes by itself; an
acknowledged write (a live diff) fails at once with a ``StorageError``, which the caller
shows (``live_diff_error``) — plain and paired completions go on being served.

Exactly once. A commit whose reply never arrives (the connection dropped, or the reply took
longer than :data:`ATTEMPT_S`) may have landed or not. Every batch that writes commits a row
of ``write_batches`` under a token of its own (with its live diffs' ``seq`` values); after
such a failure the writer *fences* the token — inserts it marked ``fenced`` unless it is there
— which settles the question for good (a transaction still on its way then fails on the
token's key). A batch that landed settles its futures as committed; one that did not is tried
again (fire-and-forget writes) or fails (acknowledged ones). When even the fence cannot reach
the database, the writes to try again remember the token, and the next transaction fences it
and leaves out those that had landed: a comparison is counted once, never twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

from router.errors import StartupError, StorageError
from router.store.base import Clock, Watcher
from router.store.migrations import POSTGRES, SchemaState, pending
from router.store.pg_listen import LIVE_CHANNEL, PAIRINGS_CHANNEL, Listener
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

MIGRATION_LOCK = 0x6469_6666_0001
"""The advisory lock that serialises instances migrating at once."""
LIVE_LOCK = 0x6469_6666_0002
"""The advisory lock under which comparisons and live diffs are inserted (one order)."""
DRIFT_LOCK = 0x6469_6666_0003
"""The advisory lock under which a drift alarm is checked for a twin and inserted."""
RETRY_S = 0.5
"""Queued writes are tried again this often while the database is unreachable."""
ACQUIRE_S = 2.0
"""How long a call waits for a connection of the pool: while the database refuses
connections the pool keeps trying to reconnect, and a call must fail rather than wait."""
ATTEMPT_S = 5.0
"""How long one commit of the writer may take before it counts as failed (a connection that
died without a word)."""
TRANSIENT = (OSError, asyncpg.InterfaceError, asyncpg.InternalClientError,
             asyncpg.PostgresConnectionError,
             asyncpg.exceptions.OperatorInterventionError,
             asyncpg.exceptions.ObjectNotInPrerequisiteStateError)
"""Failures of reaching the database (down, restarting, refusing connections, a dropped
connection — asyncpg reports one dropped between two statements as an internal client error),
as opposed to a statement that failed."""
TOKENS_KEPT_S = 86_400.0
"""``write_batches`` rows are deleted by retention once this old (a write waiting longer than
this in an outage could be counted twice)."""
MAX_QUEUED = 100_000
"""Fire-and-forget writes waiting for the writer at most (beyond: dropped, counted)."""
MAX_BATCH = 5_000
DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError,
             OSError)
"""What a database call raises when the server, the network or a statement fails."""

Connection = asyncpg.Connection | PoolConnectionProxy
"""A connection of its own, or one borrowed from the pool."""
_log = structlog.get_logger("diffroute.store")
_Kind = Literal["comparison", "reprofile", "diff", "barrier", "stop"]


@dataclass(slots=True)
class _Op:
    kind: _Kind
    args: tuple[Any, ...] = ()
    future: asyncio.Future[int] | None = field(default=None)
    tried: list[str] = field(default_factory=list)
    """Tokens of earlier commits of this write whose outcome is not known."""


DSN_ERRORS = (ValueError, OverflowError, TypeError)
"""What asyncpg raises for a DSN it cannot parse; their messages may quote the password."""


def dsn_problem(exc: BaseException) -> str:
    """Why a DSN did not open, without quoting it (``exc`` may hold a piece of a password)."""
    if isinstance(exc, DSN_ERRORS):
        return ("the DSN cannot be read: postgresql://user:password@host:port/database, a "
                "port between 1 and 65535, and '/', '?', '#' or '@' in a password "
                "percent-encoded (%2F, %3F, %23, %40)")
    return " ".join(str(exc).split()) or type(exc).__name__  # a timeout says nothing


def _storable(value: Any, json: bool = False) -> Any:
    """A text PostgreSQL accepts: U+0000 (which SQLite stores, and a model or a client may
    send) is refused in ``text`` and, escaped, in ``jsonb`` (``json``) — and it failed the
    whole group commit, other requests' records with it. It is stored as U+FFFD."""
    if isinstance(value, str) and "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    if json and isinstance(value, str) and "\\u0000" in value:
        value = value.replace("\\u0000", "\\ufffd")
    return value


def where(dsn: str) -> str:
    """``host:port/database`` of a DSN (never its password); a key/value DSN (``host=… ``)
    by its host and database only."""
    if "://" not in dsn:
        pairs = dict(p.partition("=")[::2] for p in dsn.split())
        return (f"a key/value DSN (host {pairs.get('host') or 'localhost'}, database "
                f"{pairs.get('dbname') or '?'})")
    try:
        parts = urlsplit(dsn)
    except ValueError:  # "Invalid IPv6 URL"
        return "a DSN that cannot be read"
    try:
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a port that is not a number, a broken [IPv6]: not quoted (a password?)
        host, port = "(a host that cannot be read)", ""
    path = parts.path if "@" not in parts.path else "/(a database name that cannot be read)"
    return f"{parts.scheme or 'postgresql'}://{host}{port}{path or '/'}"


async def migrate(conn: Connection, name: str) -> SchemaState:
    """Apply the missing migrations in one transaction, under :data:`MIGRATION_LOCK`."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER "
                           "PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")
        current = int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM "
                                          "schema_migrations"))
        for version, statements in pending(name, current, POSTGRES):
            for statement in statements:
                await conn.execute(statement)
            await conn.execute("INSERT INTO schema_migrations VALUES ($1, $2)", version,
                               time.time())
            current = version
    return SchemaState(name, current, len(POSTGRES))


async def schema_state(conn: Connection, name: str) -> SchemaState:
    """Where the database's schema stands, without changing it."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    current = int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM "
                                      "schema_migrations")) if exists else 0
    return SchemaState(name, current, len(POSTGRES))


class PostgresStore:
    """The :class:`~router.store.base.Store` on a PostgreSQL database."""

    def __init__(self, dsn: str, pool_size: int = 10, connect_timeout_s: float = 10.0) -> None:
        self.dsn = dsn
        self.pool_size = pool_size
        self.connect_timeout_s = connect_timeout_s
        self._where = where(dsn)
        self._pool: asyncpg.Pool | None = None
        self._queue: asyncio.Queue[_Op] = asyncio.Queue()
        self._queued = 0
        self._writer: asyncio.Task[None] | None = None
        self.failure: tuple[float, str] | None = None
        self.written_at: float | None = None
        self.batches = 0
        self.failed_writes = 0
        self._listener: Listener | None = None
        self._sent: str | None = None  # the token of the batch last sent to the database
        self._closing = False

    def describe(self) -> str:
        return self._where

    async def open(self, *, migrate_schema: bool = True, write: bool = True,
                   require_current: bool = True) -> PostgresStore:
        """Connect; migrate the schema (or, with ``require_current``, refuse one that is not
        up to date); start the writer if ``write``."""
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=self.pool_size, timeout=self.connect_timeout_s)
            async with self._pool.acquire() as conn:
                state = await (migrate(conn, self._where) if migrate_schema
                               else schema_state(conn, self._where))
        except (*DB_ERRORS, *DSN_ERRORS) as exc:
            await self._close_pool()
            raise StartupError(f"cannot open the store {self._where}: {dsn_problem(exc)}"
                               ) from None
        if require_current and not state.ok:
            await self._close_pool()
            raise StartupError(state.describe())
        if write:
            self._writer = asyncio.create_task(self._write_loop(), name="store-writer")
        return self

    async def schema(self) -> SchemaState:
        async with self._acquire() as conn:
            return await schema_state(conn, self._where)

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        if self._writer is not None:
            self._closing = True  # a batch that fails now is not tried again (see the writer)
            self._queue.put_nowait(_Op("stop"))
            await self._writer
            self._writer = None
        await self._close_pool()

    async def _close_pool(self) -> None:
        if self._pool is not None:
            with contextlib.suppress(*DB_ERRORS):
                await asyncio.wait_for(self._pool.close(), 10.0)
            self._pool = None

    @contextlib.asynccontextmanager
    async def _acquire(self) -> Any:
        if self._pool is None:
            raise StorageError(f"using {self._where}", RuntimeError("the store is closed"))
        async with self._pool.acquire(timeout=ACQUIRE_S) as conn:
            yield conn

    def watch(self, callback: Watcher) -> None:
        if self._listener is None:
            self._listener = Listener(self.dsn, self.connect_timeout_s)
        self._listener.watch(callback)

    # -- the writer task --------------------------------------------------------------------

    def _enqueue(self, op: _Op) -> None:
        if op.future is None and self._queued >= MAX_QUEUED:
            self.failed_writes += 1
            self.failure = (time.time(), f"{MAX_QUEUED} writes already waiting for "
                            f"{self._where}: one dropped")
            return
        self._queued += op.future is None
        self._queue.put_nowait(op)

    async def _write_loop(self) -> None:
        retry: list[_Op] = []
        while True:
            batch = retry or [await self._queue.get()]
            while not self._queue.empty() and len(batch) < MAX_BATCH:
                batch.append(self._queue.get_nowait())
            stop = any(op.kind == "stop" for op in batch)
            ops = [op for op in batch if op.kind != "stop"]
            self._queued -= sum(op.future is None for op in ops)
            retry = await self._commit(ops)
            self._queued += len(retry)
            if retry and self._closing and not stop:
                # the database is away and the store closes: the stop may be a whole batch
                # or more behind the writes retried first, and would be read only once the
                # database is back — the close (the service's shutdown) waited for that
                stop = True
                retry += self._drain()
            if stop:
                if retry:  # closing while the database is away: lost, and said so
                    self.failed_writes += len(retry)
                    _log.warning("store.writes_dropped_at_close", store=self._where,
                                 writes=len(retry), error=self.failure[1] if self.failure
                                 else None)
                return
            if retry:  # the database is away: wait a little, then try them again
                await asyncio.sleep(RETRY_S)

    def _drain(self) -> list[_Op]:
        """Everything still queued, taken out: acknowledged writes fail, the fire-and-forget
        ones are returned (to be counted as dropped)."""
        left: list[_Op] = []
        error = StorageError(f"writing to {self._where}",
                             RuntimeError("the store closed while the database was away"))
        while not self._queue.empty():
            op = self._queue.get_nowait()
            if op.kind == "stop":
                continue
            if op.future is None:
                left.append(op)
            elif not op.future.done():
                op.future.set_exception(error)
        return left

    async def _commit(self, batch: list[_Op]) -> list[_Op]:
        """Commit one batch and settle its futures; the fire-and-forget writes to try
        again (the database was unreachable: they stay queued, an acknowledged one fails)."""
        if not batch:
            return []
        token = uuid.uuid4().hex
        try:
            results = await asyncio.wait_for(self._attempt(batch, token), ATTEMPT_S)
        except Exception as exc:  # whatever it is, the writer lives on and says so
            if not isinstance(exc, (*DB_ERRORS, StorageError)):
                _log.exception("store.write_failed", store=self._where)
            self.failure = (time.time(), str(exc) or type(exc).__name__)
            unknown = _transient(exc) and self._sent == token
            landed = await self._settle(token, exc) if unknown else "lost"
            if landed == "lost" or landed is None:
                return self._failed(batch, exc, token if landed is None else None)
            results = _results(batch, landed)
        self.batches += 1
        self.written_at = time.time()
        for op, result in zip(batch, results, strict=True):
            if op.future is not None and not op.future.done():
                op.future.set_result(result)
        return []

    def _failed(self, batch: list[_Op], exc: BaseException, maybe: str | None) -> list[_Op]:
        """Fail a batch that did not commit — or, with ``maybe`` (its token), one whose
        outcome is unknown; the fire-and-forget writes to try again."""
        retry = [op for op in batch if op.future is None] if _transient(exc) else []
        if maybe is not None:
            for op in retry:
                op.tried.append(maybe)
        self.failed_writes += len(batch) - len(retry)
        what = f"writing to {self._where}" + (" (the commit's outcome is unknown: it may "
                                               "have been stored)" if maybe else "")
        error = StorageError(what, exc)
        for op in batch:
            if op.future is not None and not op.future.done():
                op.future.set_exception(error)
        return retry

    async def _settle(self, token: str, exc: BaseException
                      ) -> list[int] | Literal["lost"] | None:
        """Whether the batch of ``token``, whose commit got no reply, landed: its live diffs'
        ``seq`` values if it did, ``"lost"`` if it did not (and now never will), None if the
        database cannot tell now."""
        try:
            seqs = await asyncio.wait_for(self._fence(token), ATTEMPT_S)
        except (*DB_ERRORS, StorageError):
            return None
        _log.warning("store.commit_unanswered", store=self._where, error=str(exc) or
                     type(exc).__name__, landed=seqs is not None)
        return "lost" if seqs is None else seqs

    async def _fence(self, token: str) -> list[int] | None:
        async with self._acquire() as conn:
            await conn.execute("INSERT INTO write_batches (token, at, fenced) VALUES "
                               "($1, $2, true) ON CONFLICT (token) DO NOTHING",
                               token, time.time())
            row = await conn.fetchrow("SELECT seqs, fenced FROM write_batches WHERE token = $1",
                                      token)
        return None if row is None or row["fenced"] else [int(s) for s in row["seqs"] or ()]

    async def _attempt(self, batch: list[_Op], token: str) -> list[int]:
        async with self._acquire() as conn, conn.transaction():
            self._sent = token
            todo = await self._unlanded(conn, batch)
            results = await self._apply(conn, todo)
            if any(op.kind != "barrier" for op in todo):
                seqs = [r for op, r in zip(todo, results, strict=True) if op.kind == "diff"]
                await conn.execute("INSERT INTO write_batches (token, at, seqs) VALUES "
                                   "($1, $2, $3)", token, time.time(), seqs)
        return _results(batch, [r for op, r in zip(todo, results, strict=True)
                                if op.kind == "diff"])

    async def _unlanded(self, conn: Connection, batch: list[_Op]) -> list[_Op]:
        """The writes of ``batch`` that no earlier commit of unknown outcome stored: their
        tokens are fenced first, so none of them can land after this."""
        tried = sorted({token for op in batch for token in op.tried})
        if not tried:
            return batch
        await conn.execute("INSERT INTO write_batches (token, at, fenced) SELECT t, $2, true "
                           "FROM unnest($1::text[]) AS t ON CONFLICT (token) DO NOTHING",
                           tried, time.time())
        landed = {r[0] for r in await conn.fetch(
            "SELECT token FROM write_batches WHERE token = ANY($1::text[]) AND NOT fenced",
            tried)}
        return [op for op in batch if landed.isdisjoint(op.tried)]

    async def _apply(self, conn: Connection, batch: list[_Op]) -> list[int]:
        """Run one batch's statements in the open transaction; each op's result."""
        rows = {kind: [op.args for op in batch if op.kind == kind]
                for kind in ("comparison", "reprofile")}
        live = bool(rows["comparison"]) or any(op.kind == "diff" for op in batch)
        if live:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", LIVE_LOCK)
            await conn.execute("SELECT pg_notify($1, '')", LIVE_CHANNEL)
        if rows["comparison"]:
            await conn.executemany(
                "INSERT INTO comparisons (at, primary_model, partner, role, domain, flagged) "
                "VALUES ($1, $2, $3, $4, $5, $6)", rows["comparison"])
        if rows["reprofile"]:
            await conn.executemany("INSERT INTO reprofile_requested (at, model, reason) "
                                   "VALUES ($1, $2, $3)", rows["reprofile"])
        return await self._insert_diffs(conn, batch)

    async def _insert_diffs(self, conn: Connection, batch: list[_Op]) -> list[int]:
        """Insert the batch's live diffs (under :data:`LIVE_LOCK`, taken by the caller); a
        ``seq`` per op (0 for the others)."""
        if not any(op.kind == "diff" for op in batch):
            return [0] * len(batch)
        marks = ", ".join(f"${i}" for i in range(1, len(DIFF_COLUMNS) + 1))
        sql = f"INSERT INTO live_diffs ({', '.join(DIFF_COLUMNS)}) VALUES ({marks}) RETURNING seq"
        results = []
        for op in batch:
            results.append(int(await conn.fetchval(sql, *op.args)) if op.kind == "diff" else 0)
        return results

    # -- writes -----------------------------------------------------------------------------

    def add_comparison(self, row: ComparisonRow) -> None:
        self._enqueue(_Op("comparison", (row.at, _storable(row.primary),
                                         _storable(row.partner), row.role,
                                         _storable(row.domain), row.flagged)))

    async def add_drift_event(self, row: DriftRow, within_s: float) -> bool:
        try:
            async with self._acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", DRIFT_LOCK)
                status = await conn.execute(
                    "INSERT INTO drift_events (at, primary_model, partner, domain, direction, "
                    "expected, observed, comparisons, statistic) "
                    "SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 WHERE NOT EXISTS (SELECT 1 FROM "
                    "drift_events WHERE primary_model = $2 AND partner = $3 AND domain = $4 "
                    "AND direction = $5 AND at > $10)",
                    row.at, row.primary, row.partner, row.domain, row.direction, row.expected,
                    row.observed, row.comparisons, row.statistic, row.at - within_s)
        except DB_ERRORS as exc:
            self.failure = (time.time(), str(exc))
            raise StorageError(f"writing to {self._where}", exc) from None
        return _count(str(status)) == 1

    def request_reprofile(self, at: float, model: str, reason: str) -> None:
        self._enqueue(_Op("reprofile", (at, model, reason)))

    async def add_diff(self, values: dict[str, Any]) -> int:
        args = tuple(bool(values[c]) if c == "redacted" else _storable(values[c], c == "domains")
                     for c in DIFF_COLUMNS)
        return await self._acknowledged("diff", args)

    async def flush(self) -> None:
        await self._acknowledged("barrier", ())

    async def _acknowledged(self, kind: _Kind, args: tuple[Any, ...]) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._enqueue(_Op(kind, args, future))
        return await future

    async def save_pairings(self, document: str) -> None:
        await self._execute(
            "INSERT INTO pairings (id, document, updated_at) VALUES (1, $1, $2) "
            "ON CONFLICT (id) DO UPDATE SET document = $1, updated_at = $2",
            document, time.time())
        await self._execute("SELECT pg_notify($1, '')", PAIRINGS_CHANNEL)

    async def enforce(self, retention: Retention, now: Clock = time.time) -> int:
        deleted = 0
        if retention.max_age_s is not None:
            cutoff = now() - retention.max_age_s
            deleted += _count(await self._execute(
                "DELETE FROM live_diffs WHERE created_at < $1", cutoff))
            await self._execute("DELETE FROM comparisons WHERE at < $1", cutoff)
        if retention.max_records is not None:
            deleted += _count(await self._execute(
                "DELETE FROM live_diffs WHERE seq <= (SELECT seq FROM live_diffs "
                "ORDER BY seq DESC OFFSET $1 LIMIT 1)", retention.max_records))
        if retention.max_comparisons is not None:
            await self._execute("DELETE FROM comparisons WHERE id <= (SELECT id FROM "
                                "comparisons ORDER BY id DESC OFFSET $1 LIMIT 1)",
                                retention.max_comparisons)
        await self._execute("DELETE FROM write_batches WHERE at < $1", now() - TOKENS_KEPT_S)
        return deleted

    async def _execute(self, sql: str, *args: Any) -> str:
        try:
            async with self._acquire() as conn:
                return str(await conn.execute(sql, *args))
        except DB_ERRORS as exc:
            self.failure = (time.time(), str(exc))
            raise StorageError(f"writing to {self._where}", exc) from None

    # -- reads ------------------------------------------------------------------------------

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        try:
            async with self._acquire() as conn:
                return list(await conn.fetch(sql, *args))
        except DB_ERRORS as exc:
            raise StorageError(f"reading {self._where}", exc) from None

    async def diffs(self, query: DiffQuery) -> list[dict[str, Any]]:
        q = query
        params: list[Any] = [q.after if q.after or not q.newest_first else 0]
        where_ = ["seq < $1" if q.newest_first and q.after else "seq > $1"]
        for column, value in (("primary_model", q.primary), ("partner", q.partner),
                              ("role", q.role), ("created_at >=", q.since),
                              ("created_at <", q.until), ("domains ?", q.domain)):
            if value is not None:
                params.append(value)
                op = "" if " " in column else " ="
                where_.append(f"{column}{op} ${len(params)}")
        params.append(q.limit)
        order = "DESC" if q.newest_first else ""
        rows = await self._fetch(f"SELECT * FROM live_diffs WHERE {' AND '.join(where_)} "
                                 f"ORDER BY seq {order} LIMIT ${len(params)}", *params)
        return [_diff(r) for r in rows]

    async def comparisons_after(self, after: int, since: float, limit: int
                                ) -> list[tuple[int, ComparisonRow]]:
        rows = await self._fetch("SELECT id, at, primary_model, partner, role, domain, flagged "
                                 "FROM comparisons WHERE id > $1 AND at >= $2 ORDER BY id "
                                 "LIMIT $3", after, since, limit)
        return [(int(r[0]), ComparisonRow(r[1], r[2], r[3], r[4], r[5], r[6])) for r in rows]

    async def last_ids(self) -> tuple[int, int]:
        rows = await self._fetch("SELECT (SELECT COALESCE(MAX(id), 0) FROM comparisons), "
                                 "(SELECT COALESCE(MAX(seq), 0) FROM live_diffs)")
        return int(rows[0][0]), int(rows[0][1])

    async def counts(self, since: float) -> Counts:
        rows = await self._fetch("SELECT primary_model, partner, domain, COUNT(*), "
                                 "SUM(flagged::int) FROM comparisons WHERE at >= $1 "
                                 "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3", since)
        return [(r[0], r[1], r[2], int(r[3]), int(r[4] or 0)) for r in rows]

    async def bucketed_counts(self, since: float, bucket_s: float) -> BucketedCounts:
        rows = await self._fetch("SELECT primary_model, partner, domain, "
                                 "FLOOR((at - $1) / $2)::bigint, COUNT(*), SUM(flagged::int) "
                                 "FROM comparisons WHERE at >= $1 GROUP BY 1, 2, 3, 4 "
                                 "ORDER BY 1, 2, 3, 4", since, bucket_s)
        return [(r[0], r[1], r[2], int(r[3]), int(r[4]), int(r[5] or 0)) for r in rows]

    async def drift_events(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self._fetch("SELECT * FROM drift_events ORDER BY seq DESC LIMIT $1", limit)
        return [dict(r) for r in reversed(rows)]

    async def count_diffs(self) -> int:
        rows = await self._fetch("SELECT COUNT(*) FROM live_diffs")
        return int(rows[0][0])

    def pairings_source(self) -> str:
        return f"{self._where} (table pairings)"

    async def load_pairings(self) -> str | None:
        rows = await self._fetch("SELECT document FROM pairings WHERE id = 1")
        return str(rows[0][0]) if rows else None


def _results(batch: list[_Op], seqs: list[int]) -> list[int]:
    """Each op's result: its ``seq`` for a live diff (in order), 0 for the others."""
    left = iter(seqs)
    return [next(left) if op.kind == "diff" else 0 for op in batch]


def _transient(exc: BaseException) -> bool:
    """Whether a write failed for want of the database (worth trying again)."""
    return isinstance(exc, TRANSIENT)


def _count(status: str) -> int:
    """The row count of a command status (``DELETE 3`` → 3)."""
    return int(status.rsplit(" ", 1)[-1])


def _diff(row: asyncpg.Record) -> dict[str, Any]:
    prompt = row["prompt"]
    return diff_json(dict(row), json.loads(row["domains"]),
                     None if prompt is None else json.loads(prompt))
