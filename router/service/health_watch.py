"""The pool's health, checked in the background so that probes never call upstreams."""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from router.pool import ModelStatus, Pool

_log = structlog.get_logger("diffroute.health")


class HealthWatch:
    """The pool's latest health: checked when first asked for, then refreshed in the
    background whenever it is older than ``interval_s`` — however often it is asked for, the
    pool's backends are checked at most once per interval (``async with`` ends a refresh)."""

    def __init__(self, pool: Pool, interval_s: float) -> None:
        self._pool = pool
        self._interval_s = interval_s
        self.statuses: list[ModelStatus] = []
        self.checked_at = 0.0
        self._first = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def current(self) -> list[ModelStatus]:
        """The cached statuses (the first call waits for the first check), with the circuit
        breakers' state as it is now."""
        if not self.checked_at:
            async with self._first:
                if not self.checked_at:
                    await self._refresh()
        elif time.time() - self.checked_at > self._interval_s and \
                (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._refresh())
        return self._pool.with_circuits(self.statuses)  # circuits change between checks

    async def _refresh(self) -> None:
        try:
            self.statuses = await self._pool.status()
        except Exception as exc:  # a failed check keeps the last statuses
            # type and message, not repr: the repr of a UnicodeEncodeError holds the whole
            # text it could not encode (an Authorization header, key included)
            _log.warning("health.check_failed", error=f"{type(exc).__name__}: {exc}")
        self.checked_at = time.time()

    async def __aenter__(self) -> HealthWatch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
