"""Versioned schema migrations of both engines, applied in order at start.

Each migration is a tuple of statements; its version is its position (1-based). A store
records the versions it applied (SQLite: ``PRAGMA user_version``; PostgreSQL: the
``schema_migrations`` table) and applies the missing ones in one transaction, under a lock
that serialises instances starting at once (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: an
advisory transaction lock). A database newer than this code is refused, not touched.
Migrations are only ever appended: a released one never changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from router.errors import StartupError

Migration = tuple[str, ...]

SQLITE: tuple[Migration, ...] = (
    (  # 1: the live store as 0.1 created it (IF NOT EXISTS: such files are at version 1)
        "CREATE TABLE IF NOT EXISTS comparisons (rowid INTEGER PRIMARY KEY, at REAL NOT NULL, "
        "primary_model TEXT NOT NULL, partner TEXT NOT NULL, role TEXT NOT NULL, "
        "domain TEXT NOT NULL, flagged INTEGER NOT NULL)",
        "CREATE INDEX IF NOT EXISTS comparisons_at ON comparisons(at)",
        "CREATE TABLE IF NOT EXISTS live_diffs (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
        "id TEXT NOT NULL UNIQUE, created_at REAL NOT NULL, request_id TEXT NOT NULL, "
        "primary_model TEXT NOT NULL, partner TEXT NOT NULL, role TEXT NOT NULL, "
        "answered_by TEXT NOT NULL, mode TEXT NOT NULL, domains TEXT NOT NULL, "
        "prompt_digest TEXT NOT NULL, prompt TEXT, primary_text TEXT, partner_text TEXT, "
        "agreement REAL NOT NULL, divergence REAL NOT NULL, threshold REAL NOT NULL, "
        "method TEXT NOT NULL, unified_diff TEXT, reason TEXT NOT NULL, "
        "redacted INTEGER NOT NULL)",
        "CREATE INDEX IF NOT EXISTS live_diffs_created ON live_diffs(created_at)",
        "CREATE TABLE IF NOT EXISTS drift_events (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
        "at REAL NOT NULL, primary_model TEXT NOT NULL, partner TEXT NOT NULL, "
        "domain TEXT NOT NULL, direction TEXT NOT NULL, expected REAL NOT NULL, "
        "observed REAL NOT NULL, comparisons INTEGER NOT NULL, statistic REAL NOT NULL)",
        "CREATE TABLE IF NOT EXISTS reprofile_requested (seq INTEGER PRIMARY KEY "
        "AUTOINCREMENT, at REAL NOT NULL, model TEXT NOT NULL, reason TEXT NOT NULL, "
        "done INTEGER NOT NULL DEFAULT 0)",
    ),
)

POSTGRES: tuple[Migration, ...] = (
    (  # 1: live diffs, counts, drift alarms, re-profile requests, pairings
        "CREATE TABLE comparisons (id BIGSERIAL PRIMARY KEY, at DOUBLE PRECISION NOT NULL, "
        "primary_model TEXT NOT NULL, partner TEXT NOT NULL, role TEXT NOT NULL, "
        "domain TEXT NOT NULL, flagged BOOLEAN NOT NULL)",
        "CREATE INDEX comparisons_at ON comparisons(at)",
        "CREATE TABLE live_diffs (seq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL UNIQUE, "
        "created_at DOUBLE PRECISION NOT NULL, request_id TEXT NOT NULL, "
        "primary_model TEXT NOT NULL, partner TEXT NOT NULL, role TEXT NOT NULL, "
        "answered_by TEXT NOT NULL, mode TEXT NOT NULL, domains JSONB NOT NULL, "
        "prompt_digest TEXT NOT NULL, prompt TEXT, primary_text TEXT, partner_text TEXT, "
        "agreement DOUBLE PRECISION NOT NULL, divergence DOUBLE PRECISION NOT NULL, "
        "threshold DOUBLE PRECISION NOT NULL, method TEXT NOT NULL, unified_diff TEXT, "
        "reason TEXT NOT NULL, redacted BOOLEAN NOT NULL)",
        "CREATE INDEX live_diffs_created ON live_diffs(created_at)",
        "CREATE TABLE drift_events (seq BIGSERIAL PRIMARY KEY, at DOUBLE PRECISION NOT NULL, "
        "primary_model TEXT NOT NULL, partner TEXT NOT NULL, domain TEXT NOT NULL, "
        "direction TEXT NOT NULL, expected DOUBLE PRECISION NOT NULL, "
        "observed DOUBLE PRECISION NOT NULL, comparisons INTEGER NOT NULL, "
        "statistic DOUBLE PRECISION NOT NULL)",
        "CREATE TABLE reprofile_requested (seq BIGSERIAL PRIMARY KEY, "
        "at DOUBLE PRECISION NOT NULL, model TEXT NOT NULL, reason TEXT NOT NULL, "
        "done BOOLEAN NOT NULL DEFAULT false)",
        "CREATE TABLE pairings (id INTEGER PRIMARY KEY CHECK (id = 1), document TEXT NOT NULL, "
        "updated_at DOUBLE PRECISION NOT NULL)",
    ),
    (  # 2: observations (profiles are built from them), as profiles.store keeps them in SQLite
        "CREATE TABLE observations (model_key TEXT NOT NULL, probe_hash TEXT NOT NULL, "
        "decoding_key TEXT NOT NULL, sample_index INTEGER NOT NULL, model TEXT NOT NULL, "
        "probe_id TEXT NOT NULL, text TEXT NOT NULL, finish_reason TEXT NOT NULL, "
        "logprobs TEXT, prompt_tokens INTEGER NOT NULL DEFAULT 0, "
        "completion_tokens INTEGER NOT NULL DEFAULT 0, "
        "latency_s DOUBLE PRECISION NOT NULL DEFAULT 0, created DOUBLE PRECISION NOT NULL, "
        "PRIMARY KEY (model_key, decoding_key, probe_hash, sample_index))",
        "CREATE TABLE observed_models (model_key TEXT PRIMARY KEY, name TEXT NOT NULL, "
        "identity TEXT NOT NULL, updated DOUBLE PRECISION NOT NULL)",
    ),
    (  # 3: the writer's batches, so a commit whose reply was lost is neither lost nor doubled
        "CREATE TABLE write_batches (token TEXT PRIMARY KEY, at DOUBLE PRECISION NOT NULL, "
        "seqs BIGINT[], fenced BOOLEAN NOT NULL DEFAULT false)",
        "CREATE INDEX write_batches_at ON write_batches(at)",
    ),
)


@dataclass(frozen=True, slots=True)
class SchemaState:
    """Where a store's schema stands (``diffroute store check``)."""

    where: str
    current: int
    latest: int

    @property
    def ok(self) -> bool:
        return self.current == self.latest

    def describe(self) -> str:
        if self.current == self.latest:
            return f"{self.where}: schema at version {self.current} (up to date)"
        if self.current < self.latest:
            return (f"{self.where}: schema at version {self.current}, {self.latest} expected "
                    "(run diffroute store migrate)")
        return (f"{self.where}: schema at version {self.current}, newer than this diffroute "
                f"({self.latest}): upgrade diffroute")


def pending(where: str, current: int, migrations: tuple[Migration, ...]
            ) -> list[tuple[int, Migration]]:
    """The migrations after ``current``; a schema newer than the code is a StartupError."""
    if current > len(migrations):
        raise StartupError(SchemaState(where, current, len(migrations)).describe())
    return [(v, m) for v, m in enumerate(migrations, start=1) if v > current]
