"""The pool's slot limiter: at most ``max_concurrency`` calls to a model at once, the others
waiting in line, first come first served."""

from __future__ import annotations

import asyncio
import collections
import contextlib


class Limiter:
    """At most ``limit`` holders at once, first come first served (``async with limiter:``).

    What ``asyncio.Semaphore`` does, for the path every call takes: in Python 3.11 its
    ``acquire`` scans the waiters through a generator even when nobody waits. Here a free slot
    is one comparison, and a released slot is handed straight to the oldest waiter.
    """

    __slots__ = ("_free", "_waiters")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a limit must be at least 1")
        self._free = limit
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def free(self) -> int:
        """Slots nobody holds."""
        return self._free

    @property
    def waiting(self) -> int:
        """Callers queued for a slot."""
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """Take a free slot if nobody waits for one; ``False`` when the caller must wait."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def acquire(self) -> None:
        """Take a slot, waiting in line for one; a waiter cancelled in line leaves the line
        (or passes on the slot it was handed as it was cancelled)."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # the slot was handed over as the task was cancelled
            else:  # a release in between may have dropped the cancelled waiter already
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give a slot back (to the oldest waiter, if any)."""
        self._release()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self._release()

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to it: _free does not change
                return
        self._free += 1
