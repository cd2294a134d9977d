"""Observations on PostgreSQL, behind the synchronous :class:`profiles.store.Observations`.

The profiles library calls its observation store synchronously (from collection on the event
loop, from profile building in worker threads); asyncpg is asynchronous. This store runs its
one connection on a private event loop in a thread of its own, and each call waits for its
statement there, one at a time. Closing it after something was stored sends a ``NOTIFY`` on
:data:`PROFILES_CHANNEL`: running instances on the database rebuild their policy from the new
observations (``diffroute profile build`` reaches them without a restart).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import asyncpg

from profiles.protocol import Sample
from profiles.store import StoredSample, observation_rows, stored_sample
from router.errors import StartupError, StorageError
from router.store.pg_listen import PROFILES_CHANNEL
from router.store.postgres import DB_ERRORS, DSN_ERRORS, dsn_problem, migrate, where

T = TypeVar("T")


class PostgresObservations:
    """The observation store of a PostgreSQL database (see the module docstring)."""

    def __init__(self, dsn: str, connect_timeout_s: float = 10.0) -> None:
        self._dsn = dsn
        self._timeout = connect_timeout_s
        self._where = where(dsn)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="observations-loop", daemon=True)
        self._lock = threading.Lock()
        self._conn: asyncpg.Connection | None = None
        self._stored = False

    def open(self) -> PostgresObservations:
        """Connect and migrate; an unreachable database is a :class:`StartupError`."""
        self._thread.start()
        try:
            self._conn = self._run(asyncpg.connect(self._dsn, timeout=self._timeout))
            self._run(migrate(self._conn, self._where))
        except (*DB_ERRORS, *DSN_ERRORS, TimeoutError) as exc:
            self.close()
            raise StartupError(f"cannot open the observation store {self._where}: "
                               f"{dsn_problem(exc)}") from None
        return self

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _call(self, what: str, method: str, sql: str, *args: Any) -> Any:
        """One statement on the connection, its errors as :class:`StorageError`."""
        if self._conn is None:
            raise StorageError(f"{what} {self._where}", RuntimeError("the store is closed"))
        with self._lock:
            try:
                return self._run(getattr(self._conn, method)(sql, *args))
            except DB_ERRORS as exc:
                raise StorageError(f"{what} {self._where}", exc) from None

    def close(self) -> None:
        if self._conn is not None:
            if self._stored:
                self._call("notifying", "execute", "SELECT pg_notify($1, '')", PROFILES_CHANNEL)
            self._run(self._conn.close())
            self._conn = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop.close()

    def __enter__(self) -> PostgresObservations:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def remember_model(self, key: str, name: str, identity: Mapping[str, object]) -> None:
        self._call("writing to", "execute",
                   "INSERT INTO observed_models VALUES ($1, $2, $3, $4) ON CONFLICT (model_key) "
                   "DO UPDATE SET name = excluded.name, updated = excluded.updated",
                   key, name, json.dumps(dict(identity), sort_keys=True, default=str),
                   time.time())

    def present(self, key: str, decoding_key: str) -> set[tuple[str, int]]:
        rows = self._call("reading", "fetch", "SELECT probe_hash, sample_index FROM "
                          "observations WHERE model_key = $1 AND decoding_key = $2",
                          key, decoding_key)
        return {(r[0], int(r[1])) for r in rows}

    def put(self, key: str, decoding_key: str, model: str, probe_id: str, probe_hash: str,
            indexed: Sequence[tuple[int, Sample]], prompt_tokens: int, completion_tokens: int,
            latency_s: float) -> None:
        rows = observation_rows(key, decoding_key, model, probe_id, probe_hash, indexed,
                                prompt_tokens, completion_tokens, latency_s)
        marks = ", ".join(f"${i}" for i in range(1, 14))
        self._call("writing to", "executemany",
                   f"INSERT INTO observations VALUES ({marks}) ON CONFLICT (model_key, "
                   "decoding_key, probe_hash, sample_index) DO UPDATE SET text = excluded.text, "
                   "finish_reason = excluded.finish_reason, logprobs = excluded.logprobs, "
                   "created = excluded.created", rows)
        self._stored = True

    def samples(self, key: str, decoding_key: str,
                probe_hashes: Iterable[str] | None = None) -> list[StoredSample]:
        rows = self._call("reading", "fetch",
                          "SELECT probe_id, probe_hash, sample_index, text, finish_reason, "
                          "logprobs, latency_s FROM observations WHERE model_key = $1 AND "
                          "decoding_key = $2 ORDER BY probe_hash, sample_index",
                          key, decoding_key)
        wanted = set(probe_hashes) if probe_hashes is not None else None
        return [stored_sample(tuple(r)) for r in rows if wanted is None or r[1] in wanted]

    def other_identities(self, name: str, key: str, decoding_key: str
                         ) -> list[tuple[dict[str, Any], int]]:
        rows = self._call("reading", "fetch",
                          "SELECT m.identity, COUNT(*) FROM observed_models m JOIN observations o "
                          "ON o.model_key = m.model_key AND o.decoding_key = $1 WHERE m.name = $2 "
                          "AND m.model_key <> $3 GROUP BY m.model_key, m.identity "
                          "ORDER BY MAX(m.updated) DESC", decoding_key, name, key)
        return [(json.loads(r[0]), int(r[1])) for r in rows]

    def last_observed(self, key: str, decoding_key: str) -> float | None:
        at = self._call("reading", "fetchval", "SELECT MAX(created) FROM observations WHERE "
                        "model_key = $1 AND decoding_key = $2", key, decoding_key)
        return None if at is None else float(at)
