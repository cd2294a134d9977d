"""Diffs of ``GET /v1/profiles/diff``: computed once per profile version, one at a time."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from router.service.diff_cache import DiffCache


class Provider:
    """A slow diff provider that counts its calls and how many ran at once."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def __call__(self, a: str, b: str) -> dict[str, Any] | None:
        with self._lock:
            self.calls.append((a, b))
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(0.05)
        with self._lock:
            self.running -= 1
        if b == "unprofiled":
            return None
        if b == "unknown":
            raise LookupError("unknown")
        return {"a": a, "b": b, "n": len(self.calls)}


async def test_a_diff_is_computed_once_per_version_and_one_at_a_time() -> None:
    provider, cache = Provider(), DiffCache()
    first = await asyncio.gather(*(cache.get(provider, "x", "y", "v1") for _ in range(5)),
                                 cache.get(provider, "x", "z", "v1"))
    assert provider.calls == [("x", "y"), ("x", "z")] and provider.most_at_once == 1
    assert all(d == first[0] for d in first[:5]) and cache.computed == 2
    again = await cache.get(provider, "x", "y", "v2")  # profiles rebuilt: computed anew
    assert again is not None and again["n"] == 3 and cache.computed == 3


async def test_refusals_are_not_kept_and_the_oldest_diffs_go_first() -> None:
    provider, cache = Provider(), DiffCache(max_entries=2)
    assert await cache.get(provider, "x", "unprofiled", "v") is None
    assert await cache.get(provider, "x", "unprofiled", "v") is None
    with pytest.raises(LookupError):
        await cache.get(provider, "x", "unknown", "v")
    assert len(provider.calls) == 3 and cache.computed == 0
    for b in ("b1", "b2", "b1", "b3"):  # b1 used again: b2 is the oldest when b3 comes
        await cache.get(provider, "x", b, "v")
    await cache.get(provider, "x", "b1", "v")
    await cache.get(provider, "x", "b2", "v")
    assert [c[1] for c in provider.calls[3:]] == ["b1", "b2", "b3", "b2"]


async def test_an_async_provider_is_awaited() -> None:
    async def provider(a: str, b: str) -> dict[str, Any] | None:
        return {"a": a, "b": b}

    assert await DiffCache().get(provider, "x", "y", "v") == {"a": "x", "b": "y"}
