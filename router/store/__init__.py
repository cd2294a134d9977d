"""Storage: one interface (:class:`Store`), two engines, chosen by the ``store`` settings.

* :mod:`router.store.base` — the :class:`Store` protocol everything else uses;
* :mod:`router.store.records` — the records and queries it takes and returns;
* :mod:`router.store.sqlite` — files in the data dir (the embedded default);
* :mod:`router.store.postgres` — one PostgreSQL database for several instances (asyncpg);
* :mod:`router.store.migrations` — the versioned schemas of both.

:func:`open_store` opens the configured engine; nothing outside this package writes SQL or
knows which engine runs.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING

from router.config import Settings
from router.errors import StartupError
from router.store import files
from router.store.base import Store
from router.store.migrations import SchemaState
from router.store.records import (
    ComparisonRow,
    DiffQuery,
    DriftRow,
    Retention,
    parse_time,
)

if TYPE_CHECKING:  # the observation stores load numpy: imported when one is opened
    from profiles.store import Observations

__all__ = [
    "ComparisonRow",
    "DiffQuery",
    "DriftRow",
    "Retention",
    "SchemaState",
    "Store",
    "open_observations",
    "open_store",
    "parse_time",
    "read_pairings_document",
    "schema_state",
]


def _dsn(settings: Settings) -> str:
    config = settings.store
    value = None if config.dsn is None else config.dsn.value()
    if value is None:
        ref = "none" if config.dsn is None else config.dsn.describe()
        raise StartupError(f"store.dsn {ref} is not set in the environment")
    return value


async def _open(settings: Settings, *, migrate: bool, write: bool) -> Store:
    config = settings.store
    if config.kind == "postgres":
        from router.store.postgres import PostgresStore

        return await PostgresStore(_dsn(settings), config.pool_size,
                                   config.connect_timeout_s).open(migrate_schema=migrate,
                                                                  write=write)
    import asyncio

    from router.store.sqlite import SqliteStore

    store = SqliteStore(settings.data_dir, settings.live.synchronous, settings.live.max_db_bytes)
    return await asyncio.to_thread(store.open if write else store.open_reader)


@asynccontextmanager
async def open_store(settings: Settings, *, write: bool = True) -> AsyncIterator[Store]:
    """The configured store, its schema migrated, for the time of the ``with`` block.

    ``write=False`` (the CLI's readers): no writer is started and nothing is created or
    migrated — a missing SQLite file or an out-of-date database is a :class:`StartupError`.
    """
    store = await _open(settings, migrate=write, write=write)
    try:
        yield store
    finally:
        await store.close()


async def schema_state(settings: Settings, *, migrate: bool) -> SchemaState:
    """Where the configured store's schema stands, after migrating it if ``migrate``
    (``diffroute store check`` / ``diffroute store migrate``)."""
    config = settings.store
    if config.kind == "postgres":
        from router.store.postgres import PostgresStore

        pg = await PostgresStore(_dsn(settings), 1, config.connect_timeout_s).open(
            migrate_schema=migrate, write=False, require_current=False)
        try:
            return await pg.schema()
        finally:
            await pg.close()
    import asyncio

    from router.store.sqlite import SqliteStore

    lite = SqliteStore(settings.data_dir, settings.live.synchronous)
    opened = await asyncio.to_thread(
        lite.open if migrate else functools.partial(lite.open_reader, require_current=False))
    try:
        if not migrate:
            await asyncio.to_thread(opened.check_pages)
        return await asyncio.to_thread(opened.schema)
    finally:
        await opened.close()


async def read_pairings_document(settings: Settings) -> str | None:
    """The pinned pairings' document of the configured store, read without opening it for
    writing (``diffroute pairs``); ``None`` when none was saved."""
    if settings.store.kind == "sqlite":
        from router.store.sqlite import PAIRINGS_NAME

        path = settings.data_dir / PAIRINGS_NAME
        try:  # (bytes that are not UTF-8: a ValueError, the caller's to say)
            return await asyncio.to_thread(files.read_text, path)
        except OSError as exc:  # the data dir is a file, or unreadable
            raise StartupError(f"cannot read the pairings {path}: {exc.strerror or exc} (the "
                               "data dir must be a directory this process can read)") from None
    async with open_store(settings, write=False) as store:
        return await store.load_pairings()


@contextmanager
def open_observations(settings: Settings) -> Iterator[Observations]:
    """The configured observation store, open for the ``with`` block (blocking: use it from a
    worker thread in the service): ``observations.sqlite3`` in the data dir, or the
    PostgreSQL database. One that cannot be opened, or whose file fails a read or a write
    (damaged pages, read-only), is a :class:`StartupError` naming it (503 in a request), not
    a traceback."""
    from profiles.store import ObservationStoreError

    with _opened_observations(settings) as store:
        try:
            yield store
        except ObservationStoreError as exc:
            raise StartupError(str(exc)) from None


def _opened_observations(settings: Settings) -> Observations:
    if settings.store.kind == "postgres":
        from router.store.observations import PostgresObservations

        return PostgresObservations(_dsn(settings), settings.store.connect_timeout_s).open()
    from profiles.store import ObservationStore

    try:
        return ObservationStore.in_data_dir(settings.data_dir)
    except (OSError, sqlite3.Error) as exc:
        path = settings.data_dir / "observations.sqlite3"
        raise StartupError(f"cannot open the observation store {path}: {exc} "
                           f"({files.open_hint(path, exc)}, or give another --data-dir)") from None

