"""Observations: the cache that makes collection resumable — its protocol, and SQLite (WAL).

:class:`Observations` is what collection and profiles need from a store;
:class:`ObservationStore` is the embedded implementation, a SQLite file (an application may
give another, on a shared database). A sample is keyed by (model key, probe content hash,
decoding key, sample index). The model key (:func:`observation_key`) hashes the model's pool
name and its *identity* (the parameters that change behaviour): two pool names never share
samples, and changing a system prompt re-collects. Each probe's samples are committed in one
transaction as soon as they arrive: an interrupted run loses nothing that was stored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from profiles.protocol import Sample, TokenLogprob

STORED_MARK = "observations.stored"
"""Touched in the data dir when an :class:`ObservationStore` that stored samples closes."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS observations (
    model_key TEXT NOT NULL,
    probe_hash TEXT NOT NULL,
    decoding_key TEXT NOT NULL,
    sample_index INTEGER NOT NULL,
    model TEXT NOT NULL,
    probe_id TEXT NOT NULL,
    text TEXT NOT NULL,
    finish_reason TEXT NOT NULL,
    logprobs TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    latency_s REAL NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    PRIMARY KEY (model_key, probe_hash, decoding_key, sample_index)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS models (
    model_key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    identity TEXT NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS embeddings (
    text_hash TEXT NOT NULL,
    embedder TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (text_hash, embedder)
) WITHOUT ROWID;
"""


def stable_hash(value: object, length: int = 16) -> str:
    """A hash of a JSON-able value that does not depend on dict order or the process."""
    blob = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def model_key(identity: Mapping[str, object]) -> str:
    """A hash of a model's identity: what a shipped profile is matched against."""
    return stable_hash(dict(identity))


def observation_key(name: str, identity: Mapping[str, object]) -> str:
    """The cache key of a model's observations: its pool name *and* its identity.

    Two pool names are two models with independent samples, even with identical backend
    settings (a copy of a model under another name is how one measures the noise floor), so
    the name is part of the key; changing the system prompt re-collects too.
    """
    return stable_hash({"name": name, "identity": dict(identity)})


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class StoredSample:
    """One stored observation sample."""

    probe_id: str
    probe_hash: str
    index: int
    sample: Sample
    latency_s: float


ObservationRow = tuple[Any, ...]
"""One stored sample as the ``observations`` table holds it (column order of :data:`SCHEMA`)."""


def observation_rows(key: str, decoding_key: str, model: str, probe_id: str, probe_hash: str,
                     indexed: Sequence[tuple[int, Sample]], prompt_tokens: int,
                     completion_tokens: int, latency_s: float) -> list[ObservationRow]:
    """The rows that store one probe's new samples."""
    now = time.time()
    return [
        (key, probe_hash, decoding_key, idx, model, probe_id, s.text, s.finish_reason,
         json.dumps([[t.token, t.logprob] for t in s.first_token_logprobs])
         if s.first_token_logprobs else None,
         prompt_tokens, completion_tokens, latency_s, now)
        for idx, s in indexed
    ]


def stored_sample(row: Sequence[Any]) -> StoredSample:
    """A sample from ``(probe_id, probe_hash, sample_index, text, finish_reason, logprobs,
    latency_s)``."""
    pid, phash, idx, text, finish, logprobs, latency = row
    lps = tuple(TokenLogprob(t, float(lp)) for t, lp in json.loads(logprobs)) \
        if logprobs else ()
    return StoredSample(pid, phash, int(idx), Sample(text, finish, lps), float(latency))


class Observations(Protocol):
    """What collection and profiles need from an observation store (thread-safe)."""

    def remember_model(self, key: str, name: str, identity: Mapping[str, object]) -> None:
        """Note which pool name and identity a model key stands for."""

    def present(self, key: str, decoding_key: str) -> set[tuple[str, int]]:
        """(probe hash, sample index) pairs already stored for a model and decoding."""

    def put(self, key: str, decoding_key: str, model: str, probe_id: str, probe_hash: str,
            indexed: Sequence[tuple[int, Sample]], prompt_tokens: int, completion_tokens: int,
            latency_s: float) -> None:
        """Store one probe's new samples in one transaction."""

    def samples(self, key: str, decoding_key: str,
                probe_hashes: Iterable[str] | None = None) -> list[StoredSample]:
        """Stored samples of a model, optionally limited to some probe hashes."""

    def last_observed(self, key: str, decoding_key: str) -> float | None:
        """When a model's newest stored sample was taken (epoch seconds), ``None`` if never."""

    def other_identities(self, name: str, key: str, decoding_key: str
                         ) -> list[tuple[dict[str, Any], int]]:
        """The identities other than ``key``'s that pool name ``name`` had when observations
        were stored for it under ``decoding_key``, newest first, each with its sample count."""

    def close(self) -> None:
        """Release the store."""

    def __enter__(self) -> Observations:
        """The store itself."""

    def __exit__(self, *exc: object) -> None:
        """Close it."""


class ObservationStoreError(OSError):
    """A read or write of ``observations.sqlite3`` failed (damaged pages, a read-only file,
    a full disk): one line naming the file, not SQLite's bare message."""

    def __init__(self, path: Path, exc: sqlite3.Error) -> None:
        hint = ("give a --data-dir this process can write" if "readonly" in str(exc)
                else "if it is damaged, move it aside and profile again")
        super().__init__(f"the observation store {path}: {exc} ({hint})")


class ObservationStore:
    """Thread-safe access to ``observations.sqlite3`` under a data dir."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._stored = False
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> ObservationStore:
        return cls(data_dir / "observations.sqlite3")

    def close(self) -> None:
        """Close it; after something was stored, touch :data:`STORED_MARK` beside it (what
        PostgreSQL's ``NOTIFY`` is to its instances: a running ``serve`` on this data dir
        rebuilds its policy from the new observations)."""
        with self._lock:
            self._db.close()
        if self._stored:
            with contextlib.suppress(OSError):  # a mark that cannot be written costs a restart
                (self.path.parent / STORED_MARK).write_text(f"{time.time()}\n")

    def __enter__(self) -> ObservationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _using(self) -> Iterator[None]:
        """The connection, one thread at a time; its failures named by the file."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                raise ObservationStoreError(self.path, exc) from None

    def remember_model(self, key: str, name: str, identity: Mapping[str, object]) -> None:
        with self._using():
            self._db.execute(
                "INSERT INTO models VALUES (?,?,?,?) ON CONFLICT(model_key) DO UPDATE SET "
                "name=excluded.name, updated=excluded.updated",
                (key, name, json.dumps(dict(identity), sort_keys=True, default=str), time.time()),
            )

    def present(self, key: str, decoding_key: str) -> set[tuple[str, int]]:
        """(probe hash, sample index) pairs already stored for a model and decoding."""
        with self._using():
            rows = self._db.execute(
                "SELECT probe_hash, sample_index FROM observations "
                "WHERE model_key=? AND decoding_key=?", (key, decoding_key)).fetchall()
        return {(h, int(i)) for h, i in rows}

    def put(self, key: str, decoding_key: str, model: str, probe_id: str, probe_hash: str,
            indexed: Sequence[tuple[int, Sample]], prompt_tokens: int, completion_tokens: int,
            latency_s: float) -> None:
        """Store one probe's new samples in one transaction."""
        rows = observation_rows(key, decoding_key, model, probe_id, probe_hash, indexed,
                                prompt_tokens, completion_tokens, latency_s)
        with self._using():
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO observations VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
                self._db.execute("COMMIT")
                self._stored = True
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def samples(self, key: str, decoding_key: str,
                probe_hashes: Iterable[str] | None = None) -> list[StoredSample]:
        """Stored samples of a model, optionally limited to some probe hashes."""
        query = ("SELECT probe_id, probe_hash, sample_index, text, finish_reason, logprobs, "
                 "latency_s FROM observations WHERE model_key=? AND decoding_key=?")
        with self._using():
            rows = self._db.execute(query + " ORDER BY probe_hash, sample_index",
                                    (key, decoding_key)).fetchall()
        wanted = set(probe_hashes) if probe_hashes is not None else None
        return [stored_sample(row) for row in rows if wanted is None or row[1] in wanted]

    def last_observed(self, key: str, decoding_key: str) -> float | None:
        """When a model's newest stored sample was taken (epoch seconds), ``None`` if never."""
        with self._using():
            row = self._db.execute(
                "SELECT MAX(created) FROM observations WHERE model_key=? AND decoding_key=?",
                (key, decoding_key)).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def other_identities(self, name: str, key: str, decoding_key: str
                         ) -> list[tuple[dict[str, Any], int]]:
        with self._using():
            rows = self._db.execute(
                "SELECT m.identity, COUNT(*) FROM models m JOIN observations o ON "
                "o.model_key = m.model_key AND o.decoding_key = ? WHERE m.name = ? AND "
                "m.model_key != ? GROUP BY m.model_key, m.identity ORDER BY MAX(m.updated) DESC",
                (decoding_key, name, key)).fetchall()
        return [(json.loads(identity), int(n)) for identity, n in rows]

    def count(self) -> int:
        with self._using():
            return int(self._db.execute("SELECT COUNT(*) FROM observations").fetchone()[0])

    def get_embeddings(self, embedder: str, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Cached vectors by text hash, for the texts that have one."""
        hashes = [text_hash(t) for t in texts]
        found: dict[str, np.ndarray] = {}
        with self._using():
            for start in range(0, len(hashes), 500):
                chunk = hashes[start:start + 500]
                marks = ",".join("?" * len(chunk))
                for h, blob in self._db.execute(
                        f"SELECT text_hash, vector FROM embeddings WHERE embedder=? "
                        f"AND text_hash IN ({marks})", (embedder, *chunk)):
                    found[h] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_embeddings(self, embedder: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        rows = [(text_hash(t), embedder, np.asarray(v, dtype=np.float32).tobytes())
                for t, v in zip(texts, vectors, strict=True)]
        with self._using():
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?,?,?)", rows)
            self._db.execute("COMMIT")
