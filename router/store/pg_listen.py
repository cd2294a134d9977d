"""Listening to the database's change notifications (``LISTEN``/``NOTIFY``), reconnecting.

One connection per instance listens on every channel and calls the store's watchers on the
event loop. After each (re)connection it tells them that anything may have changed — a
notification sent while it was away is lost, and the readers catch up from the database.
A connection that died without a word (a dropped network) is found by a query every few
seconds.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg

from router.store.base import Channel, Watcher

LIVE_CHANNEL = "diffroute_live"
PAIRINGS_CHANNEL = "diffroute_pairings"
PROFILES_CHANNEL = "diffroute_profiles"
CHANNELS: dict[str, Channel] = {LIVE_CHANNEL: "live", PAIRINGS_CHANNEL: "pairings",
                                PROFILES_CHANNEL: "profiles"}
RECONNECT_S = 1.0
"""The listening connection retries this often while the database is unreachable."""
CHECK_S = 5.0
"""How often a quiet listening connection is checked."""
LISTEN_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError,
                 OSError)


class Listener:
    """The listening connection of one store, started by the first :meth:`watch`."""

    def __init__(self, dsn: str, connect_timeout_s: float) -> None:
        self._dsn = dsn
        self._timeout = connect_timeout_s
        self._watchers: list[Watcher] = []
        self._task: asyncio.Task[None] | None = None

    def watch(self, callback: Watcher) -> None:
        self._watchers.append(callback)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="store-listener")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _changed(self, channel: Channel) -> None:
        for callback in self._watchers:
            callback(channel)

    async def _run(self) -> None:
        while True:
            try:
                conn = await asyncpg.connect(self._dsn, timeout=self._timeout)
            except LISTEN_ERRORS:
                await asyncio.sleep(RECONNECT_S)
                continue
            try:
                await self._listen_on(conn)
            except LISTEN_ERRORS:
                pass
            finally:
                with contextlib.suppress(*LISTEN_ERRORS):
                    await asyncio.wait_for(conn.close(), 2.0)
            await asyncio.sleep(RECONNECT_S)

    async def _listen_on(self, conn: asyncpg.Connection) -> None:
        """Listen on ``conn`` until it is lost."""
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        for name in CHANNELS:
            await conn.add_listener(name, self._notified)
        for channel in CHANNELS.values():
            self._changed(channel)
        await _until_lost(conn, lost)

    def _notified(self, _conn: object, _pid: int, name: str, _payload: object) -> None:
        self._changed(CHANNELS[name])


async def _until_lost(conn: asyncpg.Connection, lost: asyncio.Event,
                      check_s: float = CHECK_S) -> None:
    """Return when the listening connection is gone: closed by the server, or found dead by
    a periodic query (a dropped network sends no close)."""
    while True:
        try:
            await asyncio.wait_for(lost.wait(), check_s)
            return
        except TimeoutError:
            await asyncio.wait_for(conn.execute("SELECT 1"), check_s)
