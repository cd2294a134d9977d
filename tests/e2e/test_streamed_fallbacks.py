"""Fallbacks of streamed paired calls (#15), through the official ``openai`` client against
the real service and the fault matrix's fake upstream: a streamed assist call whose assistant
fails before its first token is answered by the primary, completely, and says so; a streamed
audit whose first auditor fails names the replacement in its headers, its final chunk and its
live diff; every model's slots are given back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from router.paired.record import InMemoryLiveDiffSink
from router.service.state import STATE
from tests.e2e.harness import Running, call, make_settings, remote, scripted, serve
from tests.e2e.test_openai_client import async_client, eventually, extra
from tests.fakes import FakeUpstream, Reply, until
from tests.router.test_pool_protection import MODES, assert_idle

ASK = [{"role": "user", "content": "What is 2 + 2?"}]
PRIMARY = "The primary answers four."
FAULTS = ("503", "429", "hung", "refused", "circuit")
"""How the partner fails before its first token: the fault matrix's modes that do so, a
refused connection, and an open circuit."""
HUNG = 30.0
SLOW = {"connect": 1, "read": 60, "total": 60}
OPEN_ON_FIRST = {"failures": 1, "window_s": 60, "open_s": 120}


@asynccontextmanager
async def service(tmp_path: Path, models: list[dict[str, Any]]
                  ) -> AsyncIterator[tuple[Running, InMemoryLiveDiffSink]]:
    """The real service on a socket, recording live diffs into an in-memory sink."""
    sink = InMemoryLiveDiffSink()

    @asynccontextmanager
    async def sink_factory(_settings: object) -> AsyncIterator[InMemoryLiveDiffSink]:
        yield sink

    async with serve(make_settings(tmp_path, models), sink_factory=sink_factory) as running:
        yield running, sink


@asynccontextmanager
async def failing(fault: str, name: str, family: str) -> AsyncIterator[dict[str, Any]]:
    """A remote pool model that fails as ``fault`` says (``circuit``: its first call fails
    and opens the circuit; the test makes that call)."""
    async with FakeUpstream() as down:
        if fault == "refused":
            await down.close()  # nobody listens on its port any more
            model = remote(name, family, down.base_url, "up")
            model["backend"]["max_retries"] = 0
            yield model
            return
        if fault == "circuit":
            down.enqueue(Reply.error(503, "overloaded"))
            yield remote(name, family, down.base_url, "up", circuit=OPEN_ON_FIRST)
            return
        replies, _kind, _attempts, total = MODES[fault]
        down.enqueue(*replies)
        yield remote(name, family, down.base_url, "up",
                     timeouts={"connect": 1, "read": 5, "total": total})


async def open_circuit_if(fault: str, running: Running, name: str) -> None:
    if fault == "circuit":
        status, _ = await call(running, "POST", "/v1/chat/completions",
                               {"model": name, "messages": ASK})
        assert status == 502 and running.app[STATE].pool.circuit(name).state == "open"


def text_of(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def assert_all_idle(running: Running) -> None:
    pool = running.app[STATE].pool
    for name in pool.names:
        assert_idle(pool.get(name))


async def streamed(running: Running, model: str, **diffroute: Any
                   ) -> tuple[dict[str, str], list[Any]]:
    """The headers and chunks of one streamed call through the openai client."""
    raw = await async_client(running).chat.completions.with_raw_response.create(
        model=model, messages=ASK, stream=True,  # type: ignore[arg-type]
        extra_body={"diffroute": diffroute})
    stream: openai.AsyncStream[Any] = raw.parse()
    return dict(raw.headers), [chunk async for chunk in stream]


@pytest.mark.parametrize("primary_kind", ["remote", "scripted"])
@pytest.mark.parametrize("fault", FAULTS)
async def test_a_streamed_assist_whose_assistant_fails_streams_the_primarys_answer(
        tmp_path: Path, fault: str, primary_kind: str) -> None:
    async with FakeUpstream(answer=PRIMARY) as up, failing(fault, "asst", "a") as assistant:
        primary = remote("m", "a", up.base_url, "up-m") if primary_kind == "remote" \
            else scripted("m", "a", PRIMARY)
        async with service(tmp_path, [primary, assistant]) as (running, sink):
            await open_circuit_if(fault, running, "asst")
            headers, chunks = await streamed(running, "assist:m", shadow_rate=1.0)
            assert headers["x-diffroute-answered-by"] == "m"
            assert headers["x-diffroute-partner"] == "asst"
            assert text_of(chunks) == PRIMARY  # the whole answer, not a broken stream
            assert chunks[0].choices[0].delta.role == "assistant"
            assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
            assert {c.model for c in chunks} == {"m"}
            info = extra(chunks[-1])
            assert (info["partner"], info["answered_by"]) == ("asst", "m")
            assert info["fallback"]["failed"] == "asst" and info["fallback"]["error"]
            assert info["shadow"] is False  # it said true: no shadow runs for a fallback
            assert all("diffroute" not in (c.model_extra or {}) for c in chunks[:-1])
            assert up.count() == (1 if primary_kind == "remote" else 0)  # no shadow either
            assert sink.comparisons == 0
            assert_all_idle(running)


async def test_a_streamed_assist_whose_assistant_answers_is_unchanged(tmp_path: Path) -> None:
    async with FakeUpstream(answer="from the assistant") as up, service(tmp_path, [
            scripted("m", "a", PRIMARY),
            remote("asst", "a", up.base_url, "up")]) as (running, _sink):
        headers, chunks = await streamed(running, "assist:m", shadow_rate=0.0)
        assert headers["x-diffroute-answered-by"] == "asst"
        assert text_of(chunks) == "from the assistant" and {c.model for c in chunks} == {"asst"}
        assert "fallback" not in extra(chunks[-1])
        assert_all_idle(running)


@pytest.mark.parametrize("mode", ["concurrent", "review"])
@pytest.mark.parametrize("fault", ["503", "refused"])
async def test_a_streamed_audit_names_the_auditor_that_replaced_a_failing_one(
        tmp_path: Path, fault: str, mode: str) -> None:
    # the primary's first token comes after the first auditor failed: the headers can wait
    async with FakeUpstream(answer="4", latency=0.5) as up, \
            failing(fault, "aud1", "b") as first, \
            service(tmp_path, [remote("m", "a", up.base_url, "up-m"), first,
                               scripted("aud2", "c", "5", rules=[
                                   {"contains": "Answer to review",
                                    "answers": {"DISAGREE\n5": 1.0}}])]) as (running, sink):
        headers, chunks = await streamed(running, "audit:m", audit_mode=mode)
        # a review starts once the answer is complete, after the headers: they name the
        # auditor asked first, and the final chunk the one that answered
        assert headers["x-diffroute-partner"] == ("aud2" if mode == "concurrent" else "aud1")
        assert headers["x-diffroute-answered-by"] == "m"
        assert text_of(chunks) == "4"
        info = extra(chunks[-1])
        assert info["partner"] == "aud2" and info["fallback"]["failed"] == "aud1"
        assert info["flagged"] is True and "partner_error" not in info
        await eventually(lambda: sink.get(info["live_diff_id"]) is not None)
        record = sink.get(info["live_diff_id"])
        assert record is not None and record.mode == mode
        assert (record.primary, record.partner, record.answered_by) == ("m", "aud2", "m")
        assert record.primary_text == "4" and "5" in record.partner_text
        assert_all_idle(running)


async def test_a_client_that_leaves_a_streamed_assist_fallback_frees_every_slot(
        tmp_path: Path) -> None:
    async with FakeUpstream(latency=HUNG) as hung, failing("503", "asst", "a") as assistant, \
            service(tmp_path, [remote("m", "a", hung.base_url, "up-m", timeouts=SLOW),
                               assistant]) as (running, _sink):
        client = async_client(running, timeout=0.5)
        with pytest.raises(openai.APITimeoutError):  # waiting for the primary's first token
            await client.chat.completions.create(
                model="assist:m", messages=ASK, stream=True)  # type: ignore[arg-type]
        await until(lambda: hung.abandoned == 1)  # the primary's upstream call is cancelled
        primary = running.app[STATE].pool.get("m")
        await until(lambda: primary._limit.free == primary.config.max_concurrency)
        assert_all_idle(running)


async def test_a_streamed_audit_without_another_auditor_keeps_the_first_one(
        tmp_path: Path) -> None:
    async with FakeUpstream(answer="4", latency=0.3) as up, \
            failing("503", "aud1", "b") as first, \
            service(tmp_path, [remote("m", "a", up.base_url, "up-m"), first]) as (running, _):
        headers, chunks = await streamed(running, "audit:m")
        assert headers["x-diffroute-partner"] == "aud1" and text_of(chunks) == "4"
        info = extra(chunks[-1])
        assert info["partner"] == "aud1" and "overloaded" in info["partner_error"]
        assert "fallback" not in info
        assert_all_idle(running)


async def post_stream(running: Running, model: str) -> tuple[int, str]:
    """The status and raw text of one streamed call (errors included)."""
    async with aiohttp.ClientSession() as http, http.post(
            running.base_url + "/chat/completions",
            json={"model": model, "messages": ASK, "stream": True}) as response:
        return response.status, await response.text()


async def test_what_a_streamed_paired_call_does_not_fall_back_from(tmp_path: Path) -> None:
    cut = [{"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "up",
            "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]}]
    async with FakeUpstream() as a, FakeUpstream() as m, service(tmp_path, [
            remote("m", "a", m.base_url, "up-m"),
            remote("asst", "a", a.base_url, "up-a"),
            scripted("aud", "b", "4")]) as (running, _):
        # a request the assistant refuses is the client's problem (as unstreamed)
        a.enqueue(Reply.error(400, "unsupported parameter", error_type="invalid_request"))
        status, text = await post_stream(running, "assist:m")
        assert status == 400 and "unsupported parameter" in text and m.count() == 0
        # the primary fails too: its failure is the answer's, before any header
        a.enqueue(Reply.error(503, "overloaded"))
        m.enqueue(Reply.error(503, "primary down"))
        status, text = await post_stream(running, "assist:m")
        assert status == 502 and "'m'" in text and "primary down" in text
        # an assistant that fails after its first token: the stream has started, it ends
        # with an error event (as a plain stream does)
        a.enqueue(Reply(chunks=cut, done=False))
        status, text = await post_stream(running, "assist:m")
        assert status == 200 and "Hel" in text and "'asst'" in text and m.count() == 1
        # an audit's primary answers itself or fails the call: nobody answers in its place
        m.enqueue(Reply.error(503, "primary down"))
        status, text = await post_stream(running, "audit:m")
        assert status == 502 and "primary down" in text
        assert_all_idle(running)


@pytest.mark.parametrize("empty", [[], [{"id": "x", "object": "chat.completion.chunk",
                                         "created": 0, "model": "up", "choices": []}]],
                         ids=["only-done", "no-choice"])
async def test_an_upstream_stream_without_a_choice_is_an_error_not_an_answer(
        tmp_path: Path, empty: list[Any]) -> None:
    """A stream of nothing (``[DONE]`` alone, or a chunk without choices) was relayed as a 200
    with no answer, and in an audit compared and recorded as a disagreement."""
    async with FakeUpstream() as m, serve(make_settings(tmp_path, [
            remote("m", "a", m.base_url, "up-m"), scripted("aud", "b", "4")])) as running:
        m.enqueue(Reply(chunks=empty))
        status, text = await post_stream(running, "m")
        assert status == 502 and "without a choice" in text, text
        m.enqueue(Reply(chunks=empty))
        status, text = await post_stream(running, "audit:m")
        assert status == 502 and "without a choice" in text, text
        # then a real audit: once it is counted, it is the only comparison and live diff
        status, _ = await post_stream(running, "audit:m")
        assert status == 200

        async def counted() -> int:
            body = (await call(running, "GET", "/v1/stats/disagreements"))[1]
            return sum(row["comparisons"] for row in body["data"])

        async with asyncio.timeout(5):
            while await counted() < 1:  # noqa: ASYNC110  # polls the HTTP API
                await asyncio.sleep(0.02)
        assert await counted() == 1
        assert len((await call(running, "GET", "/v1/diffs"))[1]["data"]) == 1
        # a choiceless chunk first (Azure's prompt filter results), then an answer: relayed
        m.enqueue(Reply(chunks=[*empty, *[{"id": "x", "object": "chat.completion.chunk",
                                            "created": 0, "model": "up", "choices": [
                                                {"index": 0, "delta": {"content": "ok"},
                                                 "finish_reason": "stop"}]}]]))
        status, text = await post_stream(running, "m")
        assert status == 200 and '"ok"' in text and text.count("data:") == len(empty) + 2
