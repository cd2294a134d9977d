"""The one storage interface of diffroute: what the service and the CLI persist, engine-free.

Two engines implement :class:`Store` — :mod:`router.store.sqlite` (files in the data dir, the
embedded default) and :mod:`router.store.postgres` (one database shared by several instances).
Nothing outside this package writes SQL, and nothing outside it can tell which engine runs.

Writes are of two kinds. Counts (a comparison, a drift alarm, a re-profile request) are *fire
and forget*: queued, committed with the next group commit, never awaited on a request's path.
A live diff is *acknowledged*: :meth:`Store.add_diff` returns its ``seq`` only once its
transaction is committed, so an id a client sees is durable. :meth:`Store.flush` is a barrier
behind everything queued so far. A failed write raises
:class:`~router.errors.StorageError` and is remembered in :attr:`Store.failure`.

Changes. :meth:`Store.watch` calls back on the event loop when something was committed —
``"live"`` (comparisons or live diffs) or ``"pairings"`` — by this instance or, on PostgreSQL,
by any instance or command on the database (``LISTEN``/``NOTIFY``), ``"profiles"`` when a
profile build stored new observations. A callback says *that* something
changed; the database says *what* (readers catch up from their last id), so a notification
lost while a connection was down costs nothing but latency.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol

from router.store.records import (
    BucketedCounts,
    ComparisonRow,
    Counts,
    DiffQuery,
    DriftRow,
    Retention,
)

Clock = Callable[[], float]
"""Epoch seconds now (``time.time``; tests pass their own)."""
Channel = Literal["live", "pairings", "profiles"]
"""What changed: comparisons and live diffs, the pinned pairings, or observations (a profile
build finished)."""
Watcher = Callable[[Channel], None]


class Store(Protocol):
    """Live diffs, comparison counts, drift alarms and pairings of one service."""

    @property
    def failure(self) -> tuple[float, str] | None:
        """When the last write failed, and why (``None``: never)."""

    @property
    def written_at(self) -> float | None:
        """When a batch of writes last committed (``None``: never)."""

    def describe(self) -> str:
        """Where the store lives, for logs and errors (never a password)."""

    # -- writes ---------------------------------------------------------------------------

    def add_comparison(self, row: ComparisonRow) -> None:
        """Count a comparison (fire and forget)."""

    async def add_diff(self, values: dict[str, Any]) -> int:
        """Insert a live diff (keys: ``DIFF_COLUMNS``); its ``seq`` once committed."""

    async def add_drift_event(self, row: DriftRow, within_s: float) -> bool:
        """Persist a drift alarm unless one for the same pair, domain and direction was
        stored less than ``within_s`` before it (by any instance); whether it was new."""

    def request_reprofile(self, at: float, model: str, reason: str) -> None:
        """Note that ``model`` should be profiled again (fire and forget)."""

    async def flush(self) -> None:
        """Return once everything queued before the call is committed (or has failed)."""

    async def save_pairings(self, document: str) -> None:
        """Replace the pinned pairings (a JSON document the pairing package validates)."""

    async def enforce(self, retention: Retention, now: Clock) -> int:
        """Delete what retention allows; the number of live diffs deleted."""

    # -- reads ----------------------------------------------------------------------------

    async def diffs(self, query: DiffQuery) -> list[dict[str, Any]]:
        """A page of live diffs as the API shows them, in ``seq`` order."""

    async def comparisons_after(self, after: int, since: float, limit: int
                                ) -> list[tuple[int, ComparisonRow]]:
        """Up to ``limit`` comparisons with an id above ``after`` and a time from ``since``,
        with their ids, in commit order (ids are committed in order on both engines)."""

    async def last_ids(self) -> tuple[int, int]:
        """The newest comparison id and live-diff ``seq`` (0 when none)."""

    async def counts(self, since: float) -> Counts:
        """Comparisons and disagreements per pair and domain since a time."""

    async def bucketed_counts(self, since: float, bucket_s: float) -> BucketedCounts:
        """The same in buckets of ``bucket_s`` (bucket ``(at - since) // bucket_s``)."""

    async def drift_events(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest drift alarms, oldest first."""

    async def count_diffs(self) -> int:
        """How many live diffs are stored."""

    async def load_pairings(self) -> str | None:
        """The pinned pairings' JSON document, ``None`` when never saved."""

    def pairings_source(self) -> str:
        """Where that document is (its file, or table), for errors."""

    def watch(self, callback: Watcher) -> None:
        """Call ``callback(channel)`` on the event loop after each change (see above)."""

    async def close(self) -> None:
        """Commit what is queued and release the engine's connections."""
