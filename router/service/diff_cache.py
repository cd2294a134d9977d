"""The diffs ``GET /v1/profiles/diff`` serves, computed once per profile version.

A diff of two profiles is seconds of CPU (a test per probe against each model's noise, then
their replication), and any client may ask for one. So :class:`DiffCache` computes one diff at
a time, in a worker thread when the provider is a plain function, and keeps the most recent
``max_entries`` until the profiles change: the key holds the policy's profile version, which
moves when profiles are rebuilt (:attr:`router.pairing.service.PairingService.version`).
Refusals (no profile, unknown model) are not kept: they are cheap, and a profile may appear.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import OrderedDict
from typing import Any

from router.service.state import DiffProvider

MAX_ENTRIES = 32
"""Diffs kept (a few KB of JSON each)."""


class DiffCache:
    """``await cache.get(provider, a, b, version)``: the provider's diff, computed once per
    version."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._max_entries = max_entries
        self._diffs: OrderedDict[tuple[str, str, str], dict[str, Any]] = OrderedDict()
        self._lock = asyncio.Lock()
        self.computed = 0
        """Diffs computed so far (the rest were served from the cache)."""

    async def get(self, provider: DiffProvider, a: str, b: str,
                  version: str) -> dict[str, Any] | None:
        """The diff of ``a`` and ``b`` (``None``: no profile); raises what ``provider``
        raises."""
        key = (a, b, version)
        async with self._lock:  # one diff at a time; the others wait and find it kept
            diff = self._diffs.get(key)
            if diff is None:
                diff = await _compute(provider, a, b)
                if diff is None:
                    return None
                self.computed += 1
                self._diffs[key] = diff
                while len(self._diffs) > self._max_entries:
                    self._diffs.popitem(last=False)
            self._diffs.move_to_end(key)
            return diff


async def _compute(provider: DiffProvider, a: str, b: str) -> dict[str, Any] | None:
    if inspect.iscoroutinefunction(provider):
        result: dict[str, Any] | None = await provider(a, b)
        return result
    # a diff is numeric work: keep it off the event loop
    produced = await asyncio.to_thread(provider, a, b)
    if inspect.isawaitable(produced):
        produced = await produced
    return produced
