"""Route → the framework calls both models itself → report: ``POST /v1/diffs``, end to end.

The "framework" here calls the fake upstreams directly with the official ``openai`` client
(its own SDK, tools included), as an agent framework does after ``POST /v1/route``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from router.service.state import STATE
from tests.e2e.harness import Running, call, make_settings, remote, serve
from tests.e2e.test_agents import LYON, PARIS, PARIS_REORDERED, TOOL
from tests.fakes import FakeUpstream, tool_call_message

TASK = "What is the weather in Paris?"
ASK = [{"role": "user", "content": TASK}]
METRIC = '{{partner="remote-b",primary="remote-a",role="audit"}} {:.1f}'


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(answers={"up-a": tool_call_message("get_weather", PARIS),
                                     "up-b": tool_call_message("get_weather", LYON)}) as up:
        yield up


@pytest.fixture
async def service(tmp_path: Path, fake: FakeUpstream) -> AsyncIterator[Running]:
    """remote-a (family x) and remote-b (family y); the durable live store."""
    models = [remote("remote-a", "x", fake.base_url, "up-a"),
              remote("remote-b", "y", fake.base_url, "up-b")]
    async with serve(make_settings(tmp_path, models, max_body_bytes=4096)) as running:
        yield running


async def route(service: Running) -> dict[str, Any]:
    status, decision = await call(service, "POST", "/v1/route",
                                  {"role": "audit", "task": TASK, "primary": "remote-a"})
    assert status == 200, decision
    return decision


async def framework_answer(fake: FakeUpstream, upstream: str) -> dict[str, Any]:
    """What a framework gets when it calls a model with its own SDK: an assistant message."""
    client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="unused", max_retries=0)
    completion = await client.chat.completions.create(
        model=upstream, messages=ASK, tools=[TOOL])  # type: ignore[arg-type, list-item]
    message: dict[str, Any] = completion.choices[0].message.model_dump()
    return message


def report_body(decision: dict[str, Any], primary: dict[str, Any],
                partner: dict[str, Any]) -> dict[str, Any]:
    return {"decision_id": decision["decision_id"],
            "primary": {"model": decision["primary"], "message": primary},
            "partner": {"model": decision["partner"], "message": partner}}


async def metrics(service: Running) -> str:
    async with aiohttp.ClientSession() as http, http.get(service.url + "/metrics") as resp:
        return await resp.text()


async def test_route_then_report_is_recorded_like_a_paired_call(
        service: Running, fake: FakeUpstream) -> None:
    decision = await route(service)
    assert decision["decision_id"].startswith("dec_") and decision["expires_in_s"] == 3600
    assert (decision["primary"], decision["partner"]) == ("remote-a", "remote-b")
    primary = await framework_answer(fake, "up-a")
    partner = await framework_answer(fake, "up-b")
    status, result = await call(service, "POST", "/v1/diffs",
                                report_body(decision, primary, partner))
    assert status == 200, result
    assert result["object"] == "diffroute.report" and result["mode"] == "reported"
    assert result["flagged"] is True and result["method"] == "tool_calls"
    assert result["diff"].startswith('# get_weather: city: "Paris" → "Lyon"\n')
    assert result["live_diff_id"].startswith("ld_")

    status, page = await call(service, "GET", "/v1/diffs?pair=remote-a,remote-b")
    assert status == 200
    [stored] = page["data"]
    assert stored["id"] == result["live_diff_id"] and stored["mode"] == "reported"
    assert stored["role"] == "audit" and stored["messages"] == ASK
    assert '"Paris" → "Lyon"' in stored["unified_diff"]
    assert f"get_weather({PARIS})" in stored["primary_text"]

    # an equal call (its arguments written otherwise) is counted, not stored
    again = await route(service)
    fake.answers["up-b"] = tool_call_message("get_weather", PARIS_REORDERED)
    status, agreed = await call(service, "POST", "/v1/diffs", report_body(
        again, primary, await framework_answer(fake, "up-b")))
    assert status == 200 and agreed["flagged"] is False and agreed["agreement"] == 1.0
    assert agreed["live_diff_id"] is None

    async def counts() -> tuple[int, int]:
        _, stats = await call(service, "GET", "/v1/stats/disagreements?window=600")
        [row] = [r for r in stats["data"] if (r["primary"], r["partner"]) == ("remote-a",
                                                                               "remote-b")]
        return row["comparisons"], row["disagreements"]

    # an agreement's row is written without waiting (as for a paired call): poll, bounded
    async with asyncio.timeout(5):
        while await counts() != (2, 1):  # noqa: ASYNC110  # polls the HTTP API
            await asyncio.sleep(0.02)
    text = await metrics(service)
    assert "diffroute_paired_comparisons_total" + METRIC.format(2) in text
    assert "diffroute_disagreements_total" + METRIC.format(1) in text


async def test_a_decision_is_reported_once(service: Running, fake: FakeUpstream) -> None:
    decision = await route(service)
    message = await framework_answer(fake, "up-a")
    body = report_body(decision, message, message)
    assert (await call(service, "POST", "/v1/diffs", body))[0] == 200
    status, error = await call(service, "POST", "/v1/diffs", body)
    assert status == 404 and error["error"]["code"] == "decision_not_found"
    assert "already reported" in error["error"]["message"]


async def test_an_answer_nested_past_the_parsers_limit_is_compared_as_text(
        service: Running) -> None:
    decision = await route(service)
    deep = {"role": "assistant", "content": "[" * 1000 + "]" * 1000}  # json.loads: RecursionError
    status, result = await call(service, "POST", "/v1/diffs",
                                report_body(decision, deep, {"role": "assistant",
                                                             "content": "[[1]]"}))
    assert status == 200, result
    assert result["method"] != "json" and result["flagged"] is True
    said = {"role": "assistant", "content": "[[1]]"}
    status, error = await call(service, "POST", "/v1/diffs", report_body(decision, said, said))
    assert status == 404 and error["error"]["code"] == "decision_not_found"


async def test_report_errors_are_4xx_envelopes(service: Running) -> None:
    decision = await route(service)
    said = {"role": "assistant", "content": "It is sunny."}
    good = report_body(decision, said, said)
    cases: list[tuple[dict[str, Any], int, str | None, str | None]] = [
        ({**good, "decision_id": "dec_unknown"}, 404, "decision_not_found", "decision_id"),
        ({**good, "partner": {"model": "remote-a", "message": said}}, 400, "model_mismatch",
         "partner.model"),
        ({k: v for k, v in good.items() if k != "partner"}, 400, None, "partner"),
        ({**good, "primary": {"message": {"role": "assistant", "tool_calls": [
            {"function": {"name": "f", "arguments": {"not": "a string"}}}]}}}, 400, None,
         "primary.message.tool_calls[0].function.arguments"),
        ({**good, "verdict": "mine"}, 400, None, "verdict"),
        ({**good, "primary": {"message": {"role": "assistant", "tool_calls": [
            {"type": "custom", "custom": {"name": "python"}}]}}}, 400, None,
         "primary.message.tool_calls[0].custom.input"),
        ({**good, "primary": {"message": {"role": "assistant", "tool_calls": [
            {"type": "web_search"}]}}}, 400, None, "primary.message.tool_calls[0]"),
        ({**good, "messages": [{"role": "user", "content": "x" * 5000}]}, 413,
         "body_too_large", None),
        ({**good, "primary": {"message": {"role": "assistant", "content": [
            {"type": "refusal", "refusal": "No."}]}}}, 400, None,
         "primary.message.content[0].type"),
    ]
    for body, status, code, param in cases:
        got, error = await call(service, "POST", "/v1/diffs", body)
        assert got == status, (body, error)
        assert error["error"]["code"] == code and error["error"]["param"] == param, error
    # none of the refusals used the decision up
    assert (await call(service, "POST", "/v1/diffs", good))[0] == 200


async def test_openapi_describes_the_report(service: Running) -> None:
    _, doc = await call(service, "GET", "/openapi.json")
    report = doc["paths"]["/v1/diffs"]["post"]
    assert report["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/Report")
    schemas = doc["components"]["schemas"]
    assert set(schemas["Report"]["required"]) == {"decision_id", "primary", "partner"}
    assert "decision_id" in str(schemas["RoutedDecision"])


async def test_custom_tool_calls_are_reported_and_compared(service: Running) -> None:
    """A `custom` tool's call (free-form input) was refused as a report."""
    def custom(given: str) -> dict[str, Any]:
        return {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_0", "type": "custom", "custom": {"name": "shell", "input": given}}]}

    decision = await route(service)
    status, result = await call(service, "POST", "/v1/diffs", report_body(
        decision, custom("ls /tmp"), custom("rm -rf /tmp")))
    assert status == 200, result
    assert result["flagged"] is True and result["method"] == "tool_calls"
    assert result["diff"].startswith('# shell: (value): "ls /tmp" → "rm -rf /tmp"')


async def test_a_report_whose_client_leaves_is_recorded_all_the_same(
        service: Running, fake: FakeUpstream) -> None:
    """A client that timed out while its report was compared retried it and was told the
    decision was already reported, though nothing was: the claimed report died with its
    cancelled handler."""
    engine = service.app[STATE].engine
    report, entered, release = engine.report, asyncio.Event(), asyncio.Event()

    async def slow_report(*args: Any) -> Any:  # a long comparison
        entered.set()
        await release.wait()
        return await report(*args)

    engine.report = slow_report
    decision = await route(service)
    said = {"role": "assistant", "content": "It is sunny."}
    body = report_body(decision, said, {"role": "assistant", "content": "It is snowing hard."})
    client = asyncio.ensure_future(call(service, "POST", "/v1/diffs", body))
    await asyncio.wait_for(entered.wait(), 5)
    client.cancel()  # the client gives up and closes its connection
    with contextlib.suppress(asyncio.CancelledError):
        await client
    await asyncio.sleep(0.1)  # the server sees the connection go
    release.set()
    async with asyncio.timeout(5):
        while not (await call(service, "GET", "/v1/diffs"))[1]["data"]:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    [stored] = (await call(service, "GET", "/v1/diffs"))[1]["data"]
    assert (stored["mode"], stored["partner_text"]) == ("reported", "It is snowing hard.")
    status, error = await call(service, "POST", "/v1/diffs", body)  # the retry: counted once
    assert status == 404 and "already reported" in error["error"]["message"]


async def test_a_report_in_flight_at_shutdown_is_recorded_before_the_store_closes(
        tmp_path: Path, fake: FakeUpstream) -> None:
    """The shielded report of a client that left was not waited for at shutdown: the store
    closed under it, its write waited forever for a writer that had stopped, the diff was lost."""
    models = [remote("remote-a", "x", fake.base_url, "up-a"),
              remote("remote-b", "y", fake.base_url, "up-b")]
    settings = make_settings(tmp_path, models)
    async with serve(settings) as running:
        engine = running.app[STATE].engine
        report, entered = engine.report, asyncio.Event()

        async def slow_report(*args: Any) -> Any:  # a long comparison
            entered.set()
            await asyncio.sleep(0.3)
            return await report(*args)

        engine.report = slow_report
        decision = await route(running)
        body = report_body(decision, {"role": "assistant", "content": "It is sunny."},
                           {"role": "assistant", "content": "It is snowing hard."})
        client = asyncio.ensure_future(call(running, "POST", "/v1/diffs", body))
        await asyncio.wait_for(entered.wait(), 5)
        client.cancel()  # the client leaves; the service is then stopped at once
        with contextlib.suppress(asyncio.CancelledError):
            await client
        await asyncio.sleep(0.05)
    async with serve(settings) as restarted:
        [stored] = (await call(restarted, "GET", "/v1/diffs"))[1]["data"]
        assert (stored["mode"], stored["partner_text"]) == ("reported", "It is snowing hard.")
