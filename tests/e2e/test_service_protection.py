"""Upstream protection through the service, over a real socket, against fake upstreams:
statuses and ``Retry-After`` of shed, queued and circuit-broken calls; clients that disconnect;
fallbacks of plain calls; a failing auditor of a paired call; what ``/v1/models`` and
``/healthz`` say of an open circuit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from router.paired.record import InMemoryLiveDiffSink
from router.pool import PoolModel
from router.service.state import STATE
from tests.e2e.harness import Running, call, make_settings, remote, scripted, serve
from tests.fakes import FakeUpstream, Reply, until

ASK = [{"role": "user", "content": "What is 2 + 2?"}]
HUNG = 30.0
SLOW = {"connect": 1, "read": 60, "total": 60}


@asynccontextmanager
async def service(tmp_path: Path, models: list[dict[str, Any]]) -> AsyncIterator[Running]:
    sink = InMemoryLiveDiffSink()

    @asynccontextmanager
    async def sink_factory(_settings: object) -> AsyncIterator[InMemoryLiveDiffSink]:
        yield sink

    async with serve(make_settings(tmp_path, models), sink_factory=sink_factory) as running:
        yield running


def model_of(running: Running, name: str) -> PoolModel:
    return running.app[STATE].pool.get(name)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_client_that_disconnects_frees_its_slot_and_cancels_the_upstream_call(
        tmp_path: Path, stream: bool) -> None:
    async with FakeUpstream(latency=HUNG) as fake, service(tmp_path, [
            remote("m", "a", fake.base_url, "up", max_concurrency=1, timeouts=SLOW)]) as running:
        model = model_of(running, "m")
        body = {"model": "m", "messages": ASK, "stream": stream}
        async with aiohttp.ClientSession() as http:
            with pytest.raises(asyncio.TimeoutError):  # the client gives up and hangs up
                async with http.post(running.base_url + "/chat/completions", json=body,
                                     timeout=aiohttp.ClientTimeout(total=0.5)) as response:
                    await response.read()
        await until(lambda: model._limit.free == 1)
        await until(lambda: fake.abandoned == 1)
        assert fake.count() == 1
        # a client that hung up is no server error: counted as 499 (it was a 500)
        async with asyncio.timeout(5):
            while 'status="499"' not in (  # noqa: ASYNC110  # polls the HTTP API
                    await call(running, "GET", "/metrics"))[1]:
                await asyncio.sleep(0.02)
        assert 'status="500"' not in (await call(running, "GET", "/metrics"))[1]
        # and the model serves the next client at once
        fake.latency = 0
        status, answer = await call(running, "POST", "/v1/chat/completions",
                                    {"model": "m", "messages": ASK})
        assert status == 200 and answer["model"] == "m"


async def test_shed_queued_and_circuit_broken_calls_have_their_statuses(tmp_path: Path) -> None:
    async with FakeUpstream(latency=HUNG) as fake, service(tmp_path, [
            remote("m", "a", fake.base_url, "up", max_concurrency=1, max_queue=1,
                   timeouts={"connect": 1, "read": 60, "total": 0.6},
                   circuit={"failures": 1, "window_s": 60, "open_s": 120})]) as running:
        _, health = await call(running, "GET", "/healthz")  # checked once, then cached
        assert health["models"][0]["state"] == "unreachable"  # its GET /models hangs too
        body = {"model": "m", "messages": ASK}
        model = model_of(running, "m")
        await model._limit.acquire()  # the one slot, held by the test past the deadlines
        queued = asyncio.create_task(call(running, "POST", "/v1/chat/completions", body))
        await until(lambda: model._limit.waiting == 1)
        async with aiohttp.ClientSession() as http, http.post(
                running.base_url + "/chat/completions", json=body) as response:
            shed = response.status, response.headers.get("Retry-After"), await response.json()
        assert shed[0] == 429 and shed[1] == "1"
        assert shed[2]["error"]["code"] == "model_busy" and "'m'" in shed[2]["error"]["message"]
        queued_status, answer = await queued
        assert queued_status == 504 and answer["error"]["code"] == "upstream_timeout"
        assert "'m'" in answer["error"]["message"] and "queued" in answer["error"]["message"]
        model._limit.release()
        assert fake.count() == 0

        status, answer = await call(running, "POST", "/v1/chat/completions", body)  # hangs
        assert status == 504 and "queued" not in answer["error"]["message"]

        # the in-flight call's timeout opened the circuit (failures: 1): fast 503s now
        async with aiohttp.ClientSession() as http, http.post(
                running.base_url + "/chat/completions", json=body) as response:
            broken = response.status, response.headers.get("Retry-After"), await response.json()
        assert broken[0] == 503 and 0 < int(broken[1] or 0) <= 120
        assert broken[2]["error"]["code"] == "circuit_open"
        assert fake.count() == 1

        _, listing = await call(running, "GET", "/v1/models")
        [row] = [m for m in listing["data"] if m["id"] == "m"]
        assert row["diffroute"]["circuit"]["state"] == "open"
        assert row["diffroute"]["circuit"]["last_error"] == "upstream_timeout"
        status, health = await call(running, "GET", "/healthz")  # the cache, circuit now
        assert status == 200 and health["ready"] is False
        [m] = health["models"]
        assert m["state"] == "circuit open"
        assert (await call(running, "GET", "/healthz?probe=ready"))[0] == 503


async def ask(running: Running, body: dict[str, Any]) -> tuple[int, str | None, str, set[str]]:
    """(status, ``x-diffroute-fallback``, the answer's text, the ``model`` of its objects)
    of a chat call, streamed or not."""
    async with aiohttp.ClientSession() as http, http.post(
            running.base_url + "/chat/completions", json=body) as response:
        status, fallback = response.status, response.headers.get("x-diffroute-fallback")
        text = await response.text()
    if not body.get("stream"):
        answer = json.loads(text)
        return status, fallback, answer["choices"][0]["message"]["content"], {answer["model"]}
    chunks = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                      if c["choices"])
    return status, fallback, content, {c["model"] for c in chunks}


@pytest.mark.parametrize("stream", [False, True])
async def test_a_plain_call_falls_back_and_says_who_answered(tmp_path: Path,
                                                             stream: bool) -> None:
    async with FakeUpstream(answers={"up": "from m", "up-b": "from b"}) as fake, \
            service(tmp_path, [
                remote("m", "a", fake.base_url, "up", fallbacks=["b", "s"]),
                remote("b", "b", fake.base_url, "up-b"),
                scripted("s", "c", "from s")]) as running:
        body = {"model": "m", "messages": ASK, "stream": stream}
        fake.enqueue(Reply.error(503, "down"))
        assert await ask(running, body) == (200, "b", "from b", {"b"})
        # both remotes down: the scripted model answers, by the translated path
        fake.enqueue(Reply.error(503, "down"), Reply.error(502, "down too"))
        assert await ask(running, body) == (200, "s", "from s", {"s"})
        # a healthy model answers itself, without the header
        assert await ask(running, body) == (200, None, "from m", {"m"})
        assert [c.body["model"] for c in fake.calls] == ["up", "up-b", "up", "up-b", "up"]


async def test_a_bad_request_does_not_fall_back(tmp_path: Path) -> None:
    async with FakeUpstream() as fake, service(tmp_path, [
            remote("m", "a", fake.base_url, "up", fallbacks=["s"]),
            scripted("s", "c", "from s")]) as running:
        fake.enqueue(Reply.error(400, "unsupported parameter", error_type="invalid_request"))
        status, answer = await call(running, "POST", "/v1/chat/completions",
                                    {"model": "m", "messages": ASK})
        assert status == 400 and "unsupported parameter" in answer["error"]["message"]
        assert fake.count() == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_a_hung_auditor_costs_the_audit_its_budget_not_the_answer(
        tmp_path: Path, stream: bool) -> None:
    async with FakeUpstream(answer="4") as good, FakeUpstream(latency=HUNG) as hung, \
            service(tmp_path, [
                remote("m", "a", good.base_url, "up"),
                remote("aud", "b", hung.base_url, "up",
                       timeouts={"connect": 1, "read": 60, "total": 0.5})]) as running:
        body = {"model": "audit:m", "messages": ASK, "stream": stream}
        async with aiohttp.ClientSession() as http, http.post(
                running.base_url + "/chat/completions", json=body) as response:
            assert response.status == 200
            text = await response.text()
        if stream:
            final = [json.loads(line[6:]) for line in text.splitlines()
                     if line.startswith("data: {") and "diffroute" in line][-1]["diffroute"]
        else:
            answer = json.loads(text)
            assert answer["choices"][0]["message"]["content"] == "4"
            final = answer["diffroute"]
        assert final["partner"] == "aud" and "timeouts.total" in final["partner_error"]
        assert model_of(running, "aud")._limit.free == 4
        assert model_of(running, "m")._limit.free == 4
        assert hung.count() == 1


def final_diffroute(text: str, stream: bool) -> tuple[str, dict[str, Any]]:
    """(the answer's text, its ``diffroute`` object) of a paired response."""
    if not stream:
        answer = json.loads(text)
        return answer["choices"][0]["message"]["content"], answer["diffroute"]
    chunks = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                      if c["choices"])
    return content, [c for c in chunks if "diffroute" in c][-1]["diffroute"]


@pytest.mark.parametrize("mode", ["concurrent", "review"])
@pytest.mark.parametrize("stream", [False, True])
async def test_a_failing_auditor_is_replaced_by_the_next_one_the_policy_ranks(
        tmp_path: Path, stream: bool, mode: str) -> None:
    async with FakeUpstream() as down, service(tmp_path, [
            scripted("m", "a", "4"),
            remote("aud1", "b", down.base_url, "up"),
            scripted("aud2", "c", "4", rules=[
                {"contains": "Answer to review", "answers": {"AGREE": 1.0}}])]) as running:
        down.enqueue(Reply.error(503, "overloaded"))
        body = {"model": "audit:m", "messages": ASK, "stream": stream,
                "diffroute": {"audit_mode": mode}}
        async with aiohttp.ClientSession() as http, http.post(
                running.base_url + "/chat/completions", json=body) as response:
            assert response.status == 200
            content, outcome = final_diffroute(await response.text(), stream)
        assert content == "4" and outcome["answered_by"] == "m"
        assert outcome["partner"] == "aud2" and outcome["agreement"] is not None
        assert outcome["fallback"]["failed"] == "aud1"
        assert "overloaded" in outcome["fallback"]["error"]
        assert "partner_error" not in outcome and down.count() == 1


async def test_an_auditor_the_client_named_is_not_replaced(tmp_path: Path) -> None:
    async with FakeUpstream() as down, service(tmp_path, [
            scripted("m", "a", "4"), remote("aud1", "b", down.base_url, "up"),
            scripted("aud2", "c", "4")]) as running:
        down.enqueue(Reply.error(503, "overloaded"))
        status, answer = await call(running, "POST", "/v1/chat/completions", {
            "model": "audit:m", "messages": ASK, "diffroute": {"partner": "aud1"}})
        assert status == 200 and answer["diffroute"]["partner"] == "aud1"
        assert "overloaded" in answer["diffroute"]["partner_error"]
        assert "fallback" not in answer["diffroute"]


async def test_a_failing_assistant_leaves_the_answer_to_the_primary(tmp_path: Path) -> None:
    async with FakeUpstream() as down, service(tmp_path, [
            scripted("m", "a", "from the primary"),
            remote("asst", "a", down.base_url, "up")]) as running:
        down.enqueue(Reply.error(503, "overloaded"))
        body = {"model": "assist:m", "messages": ASK}
        async with aiohttp.ClientSession() as http, http.post(
                running.base_url + "/chat/completions", json=body) as response:
            assert response.status == 200
            assert response.headers["x-diffroute-answered-by"] == "m"
            answer = await response.json()
        assert answer["model"] == "m"
        assert answer["choices"][0]["message"]["content"] == "from the primary"
        outcome = answer["diffroute"]
        assert (outcome["partner"], outcome["answered_by"]) == ("asst", "m")
        assert outcome["fallback"]["failed"] == "asst"
        assert "overloaded" in outcome["fallback"]["error"]

        # a request the assistant refuses is the client's problem: no fallback
        down.enqueue(Reply.error(400, "unsupported parameter", error_type="invalid_request"))
        status, error = await call(running, "POST", "/v1/chat/completions", body)
        assert status == 400 and "unsupported parameter" in error["error"]["message"]
