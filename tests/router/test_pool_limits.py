"""The pool's concurrency limit: ``Limiter`` alone, and a model's ``max_concurrency`` end to end."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from router.config import settings_from_mapping
from router.limiter import Limiter
from router.pool import Pool
from tests.fakes import FakeUpstream, Reply


async def test_limiter_holds_the_limit_and_serves_waiters_in_order() -> None:
    limiter = Limiter(2)
    inside, most, order = 0, 0, []

    async def work(i: int) -> None:
        nonlocal inside, most
        async with limiter:
            inside += 1
            most = max(most, inside)
            order.append(i)
            await asyncio.sleep(0.005)
            inside -= 1

    await asyncio.gather(*(work(i) for i in range(10)))
    assert most == 2 and order == list(range(10)) and limiter.free == 2


async def test_a_cancelled_waiter_neither_loses_nor_leaks_a_slot() -> None:
    limiter = Limiter(1)
    release = asyncio.Event()

    async def holder() -> None:
        async with limiter:
            await release.wait()

    async def waiter() -> str:
        async with limiter:
            return "got it"

    first = asyncio.create_task(holder())
    await asyncio.sleep(0)
    cancelled = asyncio.create_task(waiter())
    second = asyncio.create_task(waiter())
    await asyncio.sleep(0)
    cancelled.cancel()  # cancelled while waiting: removed from the queue
    release.set()
    await first
    assert await second == "got it"
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert limiter.free == 1

    # handed the slot, then cancelled before it could run: the slot goes on, not lost
    async with limiter:
        late = asyncio.create_task(waiter())
        await asyncio.sleep(0)
    late.cancel()
    with pytest.raises(asyncio.CancelledError):
        await late
    assert limiter.free == 1
    with pytest.raises(ValueError):
        Limiter(0)


async def test_max_concurrency_bounds_calls_to_an_upstream(tmp_path: Path) -> None:
    async with FakeUpstream(answers={"up": "B"}) as fake:
        settings = settings_from_mapping({"data_dir": str(tmp_path), "models": [{
            "name": "m", "family": "f", "max_concurrency": 3,
            "backend": {"kind": "openai", "base_url": fake.base_url, "model": "up"}}]})
        fake.enqueue(*[Reply(delay=0.05) for _ in range(12)])
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        async with Pool.open(settings) as pool:
            model = pool.get("m")
            peak = 0

            async def watch() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, 3 - model._limit.free)
                    await asyncio.sleep(0.002)

            watcher = asyncio.create_task(watch())
            answers = await asyncio.gather(*(model.forward(body) for _ in range(12)))
            watcher.cancel()
    assert len(answers) == 12 and peak == 3 and fake.count() == 12


async def test_a_waiter_cancelled_as_a_slot_is_released_leaves_cleanly() -> None:
    """The cancellation of a waiter (a call's deadline) and a release at the same moment: the
    release drops the cancelled waiter before its task runs, which must not fail."""
    limiter = Limiter(1)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    assert limiter.waiting == 1
    waiter.cancel()  # its future is cancelled at once; the task runs later
    limiter.release()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limiter.free == 1 and limiter.waiting == 0
