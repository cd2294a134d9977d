"""Upstream protection in the pool, against a fake upstream: every fault mode on every call
path ends with its error kind within the call's budget and gives its slot back; the queue
sheds, the circuit opens and probes, a cancelled call cancels its upstream request, and
fallbacks answer for a failing model.

No assertion reads a wall clock: a call that ignored ``timeouts.total`` would show up as more
upstream attempts than the budget allows, or as a wait that never ends (pytest's timeout).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from profiles.protocol import SampleRequest
from router.config import Settings, settings_from_mapping
from router.errors import (
    CircuitOpenError,
    DiffrouteError,
    ModelBusyError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRateLimitError,
    UpstreamTimeoutError,
)
from router.pool import Pool, PoolModel
from tests.fakes import FakeUpstream, Reply, until

ASK = SampleRequest(messages=({"role": "user", "content": "hi"},), max_tokens=8)
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
HUNG = 30.0
"""A delay no test waits for: only a deadline ends such a call."""


class Clock:
    """A monotonic clock the test moves (the circuit breakers')."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def settings_for(tmp_path: Path, base_url: str, *, max_retries: int = 2,
                 extra: list[dict[str, Any]] | None = None, **model: Any) -> Settings:
    model.setdefault("timeouts", {"connect": 1, "read": 5, "total": 0.4})
    return settings_from_mapping({"data_dir": str(tmp_path), "models": [
        {"name": "m", "family": "f", **model,
         "backend": {"kind": "openai", "base_url": base_url, "model": "up",
                     "max_retries": max_retries}},
        *(extra or [])]})


@asynccontextmanager
async def pool_of(settings: Settings, clock: Clock | None = None) -> AsyncIterator[Pool]:
    pool = Pool(settings, clock=clock or Clock())
    try:
        yield pool
    finally:
        await pool.aclose()


def assert_idle(model: PoolModel) -> None:
    """Every slot given back, nobody waiting."""
    assert model._limit.free == model.config.max_concurrency
    assert model._limit.waiting == 0


async def call_sample(model: PoolModel) -> object:
    return await model.sample(ASK)


async def call_forward(model: PoolModel) -> object:
    return await model.forward(BODY)


async def call_stream(model: PoolModel) -> object:
    return [d async for d in model.stream(ASK)]


async def call_forward_stream(model: PoolModel) -> object:
    return [c async for c in model.forward_stream({**BODY, "stream": True})]


PATHS: dict[str, Callable[[PoolModel], Awaitable[object]]] = {
    "sample": call_sample, "forward": call_forward, "stream": call_stream,
    "forward_stream": call_forward_stream}

# mode → (replies to queue, the error kind, upstream attempts with max_retries 2, total)
MODES: dict[str, tuple[list[Reply], type[DiffrouteError], int, float]] = {
    # hung: the first attempt takes the whole budget, no retry fits after it
    "hung": ([Reply(delay=HUNG)] * 3, UpstreamTimeoutError, 1, 0.4),
    # a 5xx is retried after a 0.5 s backoff, which does not fit in 0.4 s: the 503 itself
    "503": ([Reply.error(503, "overloaded")] * 3, UpstreamError, 1, 0.4),
    # the upstream's 429 with Retry-After: 0 fits: every retry is made, then the 429
    "429": ([Reply.error(429, "slow down", retry_after="0")] * 3, UpstreamRateLimitError, 3,
            5.0),
    "malformed": ([Reply.malformed()], UpstreamProtocolError, 1, 5.0),
    "truncated": ([Reply.truncated()], UpstreamProtocolError, 1, 5.0),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mode", MODES)
async def test_fault_matrix(tmp_path: Path, mode: str, path: str) -> None:
    replies, kind, attempts, total = MODES[mode]
    if path.endswith("stream") and mode in ("malformed", "truncated"):
        replies = [Reply(chunks=['{"choices": [{"delta": {"content": "a"}}]}', "{not json"])] \
            if mode == "malformed" else [Reply(chunks=[
                {"choices": [{"index": 0, "delta": {"content": "cut"}, "finish_reason": None}]}],
                done=False)]
    async with FakeUpstream() as fake, pool_of(settings_for(
            tmp_path, fake.base_url,
            timeouts={"connect": 1, "read": 5, "total": total})) as pool:
        fake.enqueue(*replies)
        model = pool.get("m")
        with pytest.raises(kind) as info:
            await PATHS[path](model)
        assert type(info.value) is kind
        assert fake.count() == attempts
        assert_idle(model)
        assert pool.circuit("m").failures == 1  # one failed call, whatever its attempts


async def test_a_refused_connection_is_a_connection_error_and_frees_the_slot(
        tmp_path: Path) -> None:
    async with FakeUpstream() as fake:
        url = fake.base_url
    async with pool_of(settings_for(tmp_path, url, max_retries=1)) as pool:
        for call in PATHS.values():
            with pytest.raises(UpstreamError) as info:
                await call(pool.get("m"))
            assert info.value.code == "upstream_unreachable"
        assert_idle(pool.get("m"))


async def test_a_stream_that_outlives_the_budget_ends_with_a_timeout(tmp_path: Path) -> None:
    async with FakeUpstream(answer="one two three four five six seven eight") as fake, \
            pool_of(settings_for(tmp_path, fake.base_url)) as pool:
        fake.enqueue(Reply(chunk_delay=0.1))
        model = pool.get("m")
        got: list[str] = []
        with pytest.raises(UpstreamTimeoutError, match=r"timeouts\.total"):
            async for delta in model.stream(ASK):
                got.append(delta.text)
        assert got and "eight" not in "".join(got)  # cut mid-stream, not before it
        assert_idle(model)


async def test_forty_calls_to_a_hung_model_all_end_within_the_budget(tmp_path: Path) -> None:
    """The reviewer's case: 40 calls, 4 slots, a hung upstream, retries configured. The 36
    that wait for a slot must not wait past their own deadline, nor reach the upstream."""
    async with FakeUpstream(latency=HUNG) as fake, pool_of(settings_for(
            tmp_path, fake.base_url, max_concurrency=4,
            timeouts={"connect": 1, "read": 5, "total": 0.5})) as pool:
        model = pool.get("m")
        results = await asyncio.gather(*(model.forward(BODY) for _ in range(40)),
                                       return_exceptions=True)
        assert all(isinstance(r, UpstreamTimeoutError) for r in results), [
            (type(r), str(r)) for r in results if not isinstance(r, UpstreamTimeoutError)]
        queued = [r for r in results if "queued" in str(r)]
        assert all("'m'" in str(r) and "timeouts.total" in str(r) for r in queued)
        # each slot served its first call; a few queued calls may get a slot just before
        # their own deadline (a few ms after the first ones'), most time out in line:
        # nothing like 40 calls × 3 attempts
        assert len(queued) >= 20 and fake.count() < 20
        assert_idle(model)


async def test_a_call_still_queued_at_its_deadline_is_a_504_that_says_so(
        tmp_path: Path) -> None:
    async with FakeUpstream() as fake, pool_of(settings_for(
            tmp_path, fake.base_url, max_concurrency=1,
            timeouts={"connect": 1, "read": 5, "total": 0.3})) as pool:
        model = pool.get("m")
        await model._limit.acquire()  # the one slot, held past the call's deadline
        for call in PATHS.values():
            with pytest.raises(UpstreamTimeoutError) as info:
                await call(model)
            assert "'m'" in str(info.value) and "queued for a slot for 0.3 s" in str(info.value)
        model._limit.release()
        assert fake.count() == 0 and pool.circuit("m").failures == 0
        assert_idle(model)


async def test_a_full_queue_sheds_at_once_with_retry_after(tmp_path: Path) -> None:
    async with FakeUpstream(latency=HUNG) as fake, pool_of(settings_for(
            tmp_path, fake.base_url, max_concurrency=1, max_queue=2,
            timeouts={"connect": 1, "read": 60, "total": 60})) as pool:
        model = pool.get("m")
        waiting = [asyncio.create_task(model.forward(BODY)) for _ in range(3)]
        await until(lambda: fake.count() == 1 and model._limit.waiting == 2)
        with pytest.raises(ModelBusyError) as info:
            await model.forward(BODY)
        assert info.value.status == 429 and info.value.retry_after > 0
        assert "max_queue" in str(info.value)
        assert not any(t.done() for t in waiting)
        assert pool.circuit("m").failures == 0  # shedding is not the model's failure
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        assert_idle(model)


async def test_max_queue_zero_never_waits(tmp_path: Path) -> None:
    async with FakeUpstream(latency=HUNG) as fake, pool_of(settings_for(
            tmp_path, fake.base_url, max_concurrency=1, max_queue=0,
            timeouts={"connect": 1, "read": 60, "total": 60})) as pool:
        model = pool.get("m")
        busy = asyncio.create_task(model.forward(BODY))
        await until(lambda: fake.count() == 1)
        with pytest.raises(ModelBusyError):
            await model.sample(ASK)
        busy.cancel()
        await asyncio.gather(busy, return_exceptions=True)
        assert_idle(model)


async def test_retries_and_their_waits_fit_in_the_budget(tmp_path: Path) -> None:
    """Retry-After 1 s, 5 retries, total 1.5 s: the first wait fits, the second would end past
    the deadline, so the second 429 is raised as it is (not a timeout, not six attempts)."""
    async with FakeUpstream() as fake, pool_of(settings_for(
            tmp_path, fake.base_url, max_retries=5,
            timeouts={"connect": 1, "read": 5, "total": 1.5})) as pool:
        fake.enqueue(*[Reply.error(429, "slow down", retry_after="1")] * 6)
        with pytest.raises(UpstreamRateLimitError):
            await pool.sample("m", ASK)
        assert fake.count() == 2


@pytest.mark.parametrize("path", PATHS)
async def test_a_cancelled_call_frees_its_slot_and_cancels_the_upstream_request(
        tmp_path: Path, path: str) -> None:
    async with FakeUpstream(latency=HUNG) as fake, pool_of(settings_for(
            tmp_path, fake.base_url, max_concurrency=1,
            timeouts={"connect": 1, "read": 60, "total": 60})) as pool:
        model = pool.get("m")
        call = asyncio.create_task(PATHS[path](model))
        queued = asyncio.create_task(PATHS[path](model))
        await until(lambda: fake.count() == 1 and model._limit.waiting == 1)
        queued.cancel()  # cancelled in line: leaves the line
        call.cancel()  # cancelled in flight: the upstream sees the disconnect
        await asyncio.gather(call, queued, return_exceptions=True)
        assert_idle(model)
        await until(lambda: fake.abandoned == 1)
        assert fake.count() == 1 and fake.abandoned == 1
        assert pool.circuit("m").failures == 0  # the client left: not the model's failure


async def test_the_circuit_opens_fails_fast_and_probes(tmp_path: Path) -> None:
    clock = Clock()
    async with FakeUpstream() as fake, pool_of(settings_for(
            tmp_path, fake.base_url, max_retries=0,
            circuit={"failures": 2, "window_s": 60, "open_s": 30}), clock) as pool:
        fake.enqueue(Reply.error(503, "down"), Reply.error(503, "down"))
        for _ in range(2):
            with pytest.raises(UpstreamError):
                await pool.sample("m", ASK)
        assert pool.blocked() == frozenset({"m"})
        for call in PATHS.values():  # fast, and the upstream is not asked
            with pytest.raises(CircuitOpenError) as info:
                await call(pool.get("m"))
            assert info.value.status == 503 and info.value.retry_after == 30
        assert fake.count() == 2
        snapshot = pool.circuit("m")
        assert (snapshot.state, snapshot.retry_after) == ("open", 30)
        [status] = await pool.status()
        assert status.status.state == "circuit open" and not status.status.ok
        assert status.circuit.state == "open"
        assert status.check is not None and status.check.state == "reachable"

        clock.now += 30  # half-open: the next call is the probe, and it succeeds
        assert pool.circuit("m").state == "half-open" and pool.blocked() == frozenset()
        assert (await pool.sample("m", ASK)).samples
        assert pool.circuit("m").state == "closed" and fake.count() == 3
        [checked] = await pool.status()
        assert checked.status.state == "reachable"
        # a status checked while the circuit was open shows the check again once it closed
        [cached] = pool.with_circuits([status])
        assert cached.status.state == "reachable" and cached.circuit.state == "closed"


async def test_a_model_without_a_breaker_keeps_calling(tmp_path: Path) -> None:
    async with FakeUpstream() as fake, pool_of(settings_for(
            tmp_path, fake.base_url, max_retries=0, circuit=None)) as pool:
        fake.enqueue(*[Reply.error(503, "down")] * 8)
        for _ in range(8):
            with pytest.raises(UpstreamError):
                await pool.sample("m", ASK)
        assert fake.count() == 8 and pool.circuit("m").state == "closed"


async def test_fallbacks_answer_when_the_model_fails_and_not_for_bad_requests(
        tmp_path: Path) -> None:
    async with FakeUpstream(answers={"up": "primary", "up-b": "backup"}) as fake:
        backup = {"name": "b", "family": "g",
                  "backend": {"kind": "openai", "base_url": fake.base_url, "model": "up-b"}}
        settings = settings_for(tmp_path, fake.base_url, max_retries=0, fallbacks=["b"],
                                circuit={"failures": 1, "window_s": 60, "open_s": 30},
                                extra=[backup])
        async with pool_of(settings) as pool:
            assert pool.chain("m") == ("m", "b")

            async def answer(name: str) -> tuple[str, str]:
                result = await pool.sample(name, ASK)
                return name, result.samples[0].text

            fake.enqueue(Reply.error(500, "broken"))
            assert await pool.with_fallbacks("m", answer) == ("b", "backup")
            # m's circuit is open now: b answers without m being asked
            assert await pool.with_fallbacks("m", answer) == ("b", "backup")
            assert [c.body["model"] for c in fake.calls] == ["up", "up-b", "up-b"]

            pool_b = await pool.with_fallbacks("b", answer)  # no fallbacks of its own
            assert pool_b == ("b", "backup")

    async with FakeUpstream() as fake, pool_of(settings_for(
            tmp_path, fake.base_url, max_retries=0, fallbacks=["b"], extra=[
                {"name": "b", "backend": {"kind": "scripted"}}])) as pool:
        fake.enqueue(Reply.error(400, "bad request"))
        with pytest.raises(UpstreamError) as info:
            await pool.with_fallbacks("m", lambda name: pool.sample(name, ASK))
        assert info.value.upstream_status == 400 and fake.count() == 1


async def test_every_kind_of_backend_ends_by_the_deadline(tmp_path: Path) -> None:
    """A scripted model keeps the deadline itself (its latency is cut to it); a backend
    that does not (a plugin's, llama.cpp) is cut by the pool's own timer."""

    class Hung:
        """A plugin backend that never answers and knows nothing of deadlines."""

        name = "hung"

        async def sample(self, request: SampleRequest) -> object:
            await asyncio.sleep(HUNG)
            raise AssertionError("unreachable")

    settings = settings_from_mapping({"data_dir": str(tmp_path), "models": [
        {"name": "slow", "timeouts": {"total": 0.3},
         "backend": {"kind": "scripted", "latency_ms": HUNG * 1000}}]})
    async with pool_of(settings) as pool:
        with pytest.raises(UpstreamTimeoutError, match="scripted latency"):
            await pool.sample("slow", ASK)
        with pytest.raises(UpstreamTimeoutError, match="scripted latency"):
            [d async for d in pool.stream("slow", ASK)]
        assert_idle(pool.get("slow"))
        plugin = PoolModel(settings.models[0], Hung())  # type: ignore[arg-type]
        with pytest.raises(UpstreamTimeoutError, match=r"no answer within timeouts\.total"):
            await plugin.sample(ASK)
        assert_idle(plugin)
