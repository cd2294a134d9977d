"""Both storage engines for tests: a fresh PostgreSQL database per test, or a fresh data dir.

The PostgreSQL server is found through ``DIFFROUTE_TEST_PG_DSN`` (a role that may create
databases; ``.ci/run`` starts a server and sets it). Without it the PostgreSQL half of every
storage test FAILS — a skipped storage test is not a passing one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from router.config import Settings, StoreSettings, settings_from_mapping
from router.store import Store, open_store

PG_ENV = "DIFFROUTE_TEST_PG_DSN"
ENGINES = ("sqlite", "postgres")


def admin_dsn() -> str:
    """The test server's DSN, or a failed test saying how to get one."""
    dsn = os.environ.get(PG_ENV)
    if not dsn:
        pytest.fail(f"{PG_ENV} is not set: the PostgreSQL storage tests need a server "
                    "(.ci/run installs and starts one and sets it)")
    return dsn


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """A new, empty database on the test server, dropped afterwards; its DSN."""
    admin = admin_dsn()
    name = f"diffroute_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield with_database(admin, name)
    finally:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


def on_postgres(settings: Settings, dsn: str, **store: object) -> Settings:
    """``settings`` with ``store: {kind: postgres, dsn: …}``."""
    section = StoreSettings.model_validate({"kind": "postgres", "dsn": dsn, **store})
    return settings.model_copy(update={"store": section})


def plain_settings(root: Path) -> Settings:
    return settings_from_mapping({
        "data_dir": str(root / "data"), "live": {"profiles": False},
        "models": [{"name": "alpha", "family": "a",
                    "backend": {"kind": "scripted", "answers": {"Paris.": 1.0}}}]})


@pytest.fixture(params=ENGINES)
async def engine_settings(request: pytest.FixtureRequest, tmp_path: Path
                          ) -> AsyncIterator[Settings]:
    """Settings on each engine in turn (a fresh data dir, or a fresh database)."""
    settings = plain_settings(tmp_path)
    if request.param == "sqlite":
        yield settings
        return
    async with fresh_database() as dsn:
        yield on_postgres(settings, dsn)


@pytest.fixture
async def store(engine_settings: Settings) -> AsyncIterator[Store]:
    """An open store on each engine in turn."""
    async with open_store(engine_settings) as opened:
        yield opened


@asynccontextmanager
async def outage(dsn: str) -> AsyncIterator[None]:
    """The database of ``dsn`` goes away for the ``with`` block, as in a restart: every
    connection to it is dropped and new ones are refused (other databases are untouched)."""
    name = urlsplit(dsn).path.lstrip("/")
    conn = await asyncpg.connect(admin_dsn())
    try:
        await conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
        yield
    finally:
        await conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await conn.close()
