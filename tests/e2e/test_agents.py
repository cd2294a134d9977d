"""Agents in the loop: paired calls keep tools both ways, with the official ``openai`` client
against fake upstreams on loopback that answer with tool calls."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import openai
import pytest

from router.paired.record import InMemoryLiveDiffSink
from tests.e2e.harness import Running, make_settings, remote, scripted, serve
from tests.e2e.test_openai_client import async_client, eventually, extra
from tests.fakes import FakeUpstream, Reply, tool_call_message

ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                   "unit": {"type": "string"}},
                   "required": ["city"]}}}
PARIS = '{"city": "Paris", "unit": "C"}'
PARIS_REORDERED = '{ "unit":"C",\n  "city":"Paris" }'  # the same JSON value, written otherwise
LYON = '{"city": "Lyon", "unit": "C"}'


def answers() -> dict[str, Any]:
    """up-a and up-a2 (family x) and up-c (family z) call get_weather(Paris); up-b (family y)
    calls it for Lyon."""
    return {"up-a": tool_call_message("get_weather", PARIS),
            "up-a2": tool_call_message("get_weather", PARIS),
            "up-b": tool_call_message("get_weather", LYON),
            "up-c": tool_call_message("get_weather", PARIS_REORDERED)}


def pool(fake: FakeUpstream) -> list[dict[str, Any]]:
    """audit:remote-a → remote-b (another family); assist:remote-a → remote-a2 (same family)."""
    return [remote("remote-a", "x", fake.base_url, "up-a"),
            remote("remote-a2", "x", fake.base_url, "up-a2"),
            remote("remote-b", "y", fake.base_url, "up-b"),
            remote("remote-c", "z", fake.base_url, "up-c"),
            scripted("local", "w", "It is sunny.")]


def in_memory(sink: InMemoryLiveDiffSink) -> Any:
    """A ``sink_factory`` recording into ``sink``."""
    @asynccontextmanager
    async def sink_factory(_settings: object) -> AsyncIterator[InMemoryLiveDiffSink]:
        yield sink

    return sink_factory


@asynccontextmanager
async def agents_service(tmp_path: Path, sink: InMemoryLiveDiffSink
                         ) -> AsyncIterator[tuple[Running, FakeUpstream]]:
    async with FakeUpstream(answers=answers()) as fake, serve(
            make_settings(tmp_path, pool(fake)), sink_factory=in_memory(sink)) as running:
        yield running, fake


def sent_to(fake: FakeUpstream, upstream: str) -> list[dict[str, Any]]:
    return [c.body for c in fake.calls if c.body["model"] == upstream]


def tool_arguments(chunks: list[Any]) -> str:
    return "".join(tc.function.arguments or "" for c in chunks if c.choices
                   for tc in (c.choices[0].delta.tool_calls or ()) if tc.function)


async def test_audit_keeps_tools_both_ways(tmp_path: Path) -> None:
    sink = InMemoryLiveDiffSink()
    async with agents_service(tmp_path, sink) as (running, fake):
        completion = await async_client(running).chat.completions.create(
            model="audit:remote-a", messages=ASK, tools=[TOOL],  # type: ignore[arg-type, list-item]
            tool_choice="required", parallel_tool_calls=False, user="agent-7",
            extra_body={"diffroute": {"partner": "remote-c"}, "vendor_hint": {"x": 1}})
    for upstream in ("up-a", "up-c"):  # the whole request reached both models
        [body] = sent_to(fake, upstream)
        assert body["tools"] == [TOOL] and body["tool_choice"] == "required"
        assert body["parallel_tool_calls"] is False and body["vendor_hint"] == {"x": 1}
        assert body["user"] == "agent-7" and body["messages"] == ASK
        assert "diffroute" not in body and "stream" not in body
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and completion.model == "remote-a"
    [call] = choice.message.tool_calls or []
    assert (call.function.name, call.function.arguments) == ("get_weather", PARIS)  # as given
    info = extra(completion)
    # the same call with its arguments written otherwise: the same JSON value
    assert info["partner"] == "remote-c" and info["flagged"] is False
    assert info["agreement"] == 1.0
    assert sink.comparisons == 1 and not sink.records


async def test_differing_tool_arguments_are_flagged_legibly(tmp_path: Path) -> None:
    sink = InMemoryLiveDiffSink()
    async with agents_service(tmp_path, sink) as (running, _fake):
        client = async_client(running)
        equal = await client.chat.completions.create(
            model="audit:remote-a", messages=ASK, tools=[TOOL],  # type: ignore[arg-type, list-item]
            extra_body={"diffroute": {"partner": "remote-c"}})
        differing = await client.chat.completions.create(
            model="audit:remote-a", messages=ASK, tools=[TOOL])  # type: ignore[arg-type, list-item]
    assert extra(equal)["flagged"] is False
    info = extra(differing)
    assert info["partner"] == "remote-b" and info["flagged"] is True
    assert info["agreement"] < 1.0 and info["live_diff_id"].startswith("ld_")
    [record] = sink.records
    assert record.comparison.method == "tool_calls"
    diff = record.comparison.unified_diff
    assert diff.startswith('# get_weather: city: "Paris" → "Lyon"\n')
    assert "unit" not in diff.splitlines()[0]  # only the argument that differs
    assert "[tool call] get_weather" in record.primary_text
    assert json.loads(record.partner_text.split("get_weather(", 1)[1][:-1])["city"] == "Lyon"


async def test_streamed_audit_relays_tool_call_deltas_then_the_audit(tmp_path: Path) -> None:
    sink = InMemoryLiveDiffSink()
    async with agents_service(tmp_path, sink) as (running, fake):
        stream = await async_client(running).chat.completions.create(
            model="audit:remote-a", messages=ASK, tools=[TOOL], stream=True,  # type: ignore[arg-type, list-item]
            stream_options={"include_usage": True})
        chunks = [c async for c in stream]
    [primary] = sent_to(fake, "up-a")
    [partner] = sent_to(fake, "up-b")
    assert primary["stream"] is True and primary["tools"] == [TOOL]
    assert primary["stream_options"] == {"include_usage": True}
    assert partner["tools"] == [TOOL] and "stream" not in partner  # one whole answer
    assert tool_arguments(chunks) == PARIS  # relayed in the upstream's pieces
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.tool_calls) == 2
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "tool_calls"
    assert {c.model for c in chunks} == {"remote-a"}
    last = chunks[-1]
    assert last.choices == []
    info = extra(last)
    assert info["partner"] == "remote-b" and info["flagged"] is True
    assert all("diffroute" not in (c.model_extra or {}) for c in chunks[:-1])
    await eventually(lambda: len(sink.records) == 1)
    assert sink.records[0].comparison.unified_diff.startswith('# get_weather: city: "Paris"')


@pytest.mark.parametrize("stream", [False, True])
async def test_assist_keeps_tools_both_ways(tmp_path: Path, stream: bool) -> None:
    sink = InMemoryLiveDiffSink()
    async with agents_service(tmp_path, sink) as (running, fake):
        client = async_client(running)
        request: dict[str, Any] = {
            "model": "assist:remote-a", "messages": ASK, "tools": [TOOL],
            "extra_headers": {"x-diffroute-shadow-rate": "1"}}
        if stream:
            chunks = [c async for c in await client.chat.completions.create(
                stream=True, **request)]
            arguments, info = tool_arguments(chunks), extra(chunks[-1])
        else:
            completion = await client.chat.completions.create(**request)
            [call] = completion.choices[0].message.tool_calls or []
            arguments, info = call.function.arguments, extra(completion)
            assert completion.choices[0].finish_reason == "tool_calls"
        await eventually(lambda: sink.comparisons == 1)  # the shadow, compared with tools
    assert arguments == PARIS
    assert info["answered_by"] == "remote-a2" and info["shadow"] is True
    [assistant] = sent_to(fake, "up-a2")
    [shadow] = sent_to(fake, "up-a")
    assert assistant["tools"] == [TOOL] and shadow["tools"] == [TOOL]
    assert assistant.get("stream", False) is stream and "stream" not in shadow
    assert not sink.records  # the same call on both sides: agreement


@pytest.mark.parametrize("stream", [False, True])
async def test_review_shows_the_auditor_the_tool_calls(tmp_path: Path, stream: bool) -> None:
    sink = InMemoryLiveDiffSink()
    async with agents_service(tmp_path, sink) as (running, fake):
        fake.answers["up-b"] = "AGREE"
        request: dict[str, Any] = {
            "model": "audit:remote-a", "messages": ASK, "tools": [TOOL],
            "response_format": {"type": "text"},
            "extra_body": {"diffroute": {"audit_mode": "review"}}}
        client = async_client(running)
        if stream:
            chunks = [c async for c in await client.chat.completions.create(
                stream=True, **request)]
            assert tool_arguments(chunks) == PARIS
            info = extra(chunks[-1])
        else:
            completion = await client.chat.completions.create(**request)
            assert completion.choices[0].message.tool_calls is not None
            info = extra(completion)
    assert info["audit_mode"] == "review" and info["flagged"] is False
    [review] = sent_to(fake, "up-b")
    assert review["messages"][:-1] == ASK
    assert f"[tool call] get_weather({PARIS})" in review["messages"][-1]["content"]
    assert review["tools"] == [TOOL] and review["tool_choice"] == "none"
    assert "response_format" not in review


IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
WITH_IMAGE = [{"role": "user", "content": [{"type": "text", "text": ASK[0]["content"]}, IMAGE]}]


async def test_multi_turn_with_tool_results_reaches_both_sides(tmp_path: Path) -> None:
    history = [*WITH_IMAGE, tool_call_message("get_weather", PARIS),
               {"role": "tool", "tool_call_id": "call_0", "content": '{"sky": "clear"}'}]
    sink = InMemoryLiveDiffSink()
    async with agents_service(tmp_path, sink) as (running, fake):
        fake.answers.update({"up-a": "Clear skies in Paris.", "up-b": "Clear skies in Paris."})
        completion = await async_client(running).chat.completions.create(
            model="audit:remote-a", messages=history, tools=[TOOL])  # type: ignore[arg-type, list-item]
    assert completion.choices[0].message.content == "Clear skies in Paris."
    assert extra(completion)["flagged"] is False
    for upstream in ("up-a", "up-b"):
        [body] = sent_to(fake, upstream)
        assert body["messages"] == history


@pytest.mark.parametrize(("model", "partner", "field", "named"), [
    ("local", None, "tools", "local"),
    ("audit:remote-a", "local", "tools", "local"),
    ("audit:local", "remote-a", "tools", "local"),
    ("audit:remote-a", "local", "response_format", "local"),
    ("audit:remote-a", "local", "messages[1].tool_calls", "local"),
    ("local", None, "messages[0].content[1]", "local"),
])
async def test_translated_models_refuse_what_they_would_drop(
        tmp_path: Path, model: str, partner: str | None, field: str, named: str) -> None:
    body: dict[str, Any] = {}
    messages: list[Any] = ASK
    if field == "tools":
        body["tools"] = [TOOL]
    elif field == "response_format":
        body["response_format"] = {"type": "json_object"}
    elif field == "messages[0].content[1]":
        messages = WITH_IMAGE
    else:
        messages = [*ASK, tool_call_message("get_weather", PARIS)]
    if partner is not None:
        body["diffroute"] = {"partner": partner}
    sink = InMemoryLiveDiffSink()
    async with agents_service(tmp_path, sink) as (running, fake):
        with pytest.raises(openai.BadRequestError) as refused:
            await async_client(running).chat.completions.create(
                model=model, messages=messages, extra_body=body)  # type: ignore[arg-type]
        refused_calls = fake.count()
        # without those fields, the same mixed pair works (the local model is translated)
        fine = await async_client(running).chat.completions.create(
            model=model, messages=ASK,  # type: ignore[arg-type]
            extra_body={k: v for k, v in body.items() if k == "diffroute"})
    error = refused.value.body
    assert isinstance(error, dict)
    assert error["param"] == field and error["code"] == "unsupported_field"
    assert f"'{field}'" in error["message"] and f"model '{named}'" in error["message"]
    assert refused_calls == 0  # refused before any model was called
    if model == "local":
        assert fine.choices[0].message.content == "It is sunny."
    else:  # both models answered, one of them translated
        assert extra(fine)["agreement"] is not None and "partner_error" not in extra(fine)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_failing_auditor_never_fails_the_agents_call(tmp_path: Path,
                                                             stream: bool) -> None:
    sink = InMemoryLiveDiffSink()
    async with FakeUpstream(answers=answers()) as fake, FakeUpstream() as broken:
        broken.enqueue(*[Reply.error(400, "bad tool schema")] * 2)
        models = [remote("remote-a", "x", fake.base_url, "up-a"),
                  remote("remote-b", "y", broken.base_url, "up-b")]
        async with serve(make_settings(tmp_path, models), sink_factory=in_memory(sink)
                         ) as running:
            client = async_client(running)
            if stream:
                chunks = [c async for c in await client.chat.completions.create(
                    model="audit:remote-a", messages=ASK, tools=[TOOL], stream=True)]  # type: ignore[arg-type, list-item]
                arguments, info = tool_arguments(chunks), extra(chunks[-1])
            else:
                completion = await client.chat.completions.create(
                    model="audit:remote-a", messages=ASK, tools=[TOOL])  # type: ignore[arg-type, list-item]
                [call] = completion.choices[0].message.tool_calls or []
                arguments, info = call.function.arguments, extra(completion)
            # the answering model failing is the client's failure, with its status
            fake.enqueue(Reply.error(503, "overloaded"))
            with pytest.raises(openai.APIStatusError) as failed:
                await client.chat.completions.create(
                    model="audit:remote-a", messages=ASK, tools=[TOOL],  # type: ignore[arg-type, list-item]
                    stream=stream, extra_body={"diffroute": {"partner": "remote-b"}})
    assert arguments == PARIS
    assert info["agreement"] is None and "bad tool schema" in info["partner_error"]
    assert failed.value.status_code == 502 and "remote-a" in failed.value.message


async def test_each_side_gets_its_own_model_configuration(tmp_path: Path) -> None:
    auditor = remote("remote-b", "y", "", "up-b", decoding={"temperature": 0.0, "seed": 5})
    async with FakeUpstream(answers=answers()) as fake:
        auditor["backend"] |= {"base_url": fake.base_url, "system_prompt": "Check carefully."}
        models = [remote("remote-a", "x", fake.base_url, "up-a"), auditor]
        async with serve(make_settings(tmp_path, models)) as running:
            await async_client(running).chat.completions.create(
                model="audit:remote-a", messages=ASK, tools=[TOOL],  # type: ignore[arg-type, list-item]
                temperature=0.9)
    [primary] = sent_to(fake, "up-a")
    [partner] = sent_to(fake, "up-b")
    assert primary["messages"] == ASK and primary["temperature"] == 0.9
    assert partner["messages"] == [{"role": "system", "content": "Check carefully."}, *ASK]
    assert (partner["temperature"], partner["seed"]) == (0.0, 5)
    assert primary["tools"] == partner["tools"] == [TOOL]


@pytest.mark.parametrize("stream", [False, True])
async def test_the_auditor_that_replaces_a_failing_one_keeps_the_tools(
        tmp_path: Path, stream: bool) -> None:
    sink = InMemoryLiveDiffSink()
    async with FakeUpstream(answers=answers()) as fake, FakeUpstream() as broken:
        broken.enqueue(*[Reply.error(503, "overloaded")] * 4)
        models = [remote("remote-a", "x", fake.base_url, "up-a"),
                  remote("remote-b", "y", broken.base_url, "up-b"),
                  scripted("local", "w", "It is sunny."),  # would drop the tools: not picked
                  remote("remote-c", "z", fake.base_url, "up-c")]
        async with serve(make_settings(tmp_path, models), sink_factory=in_memory(sink)
                         ) as running:
            client = async_client(running)
            if stream:
                chunks = [c async for c in await client.chat.completions.create(
                    model="audit:remote-a", messages=ASK, tools=[TOOL], stream=True)]  # type: ignore[arg-type, list-item]
                arguments, info = tool_arguments(chunks), extra(chunks[-1])
            else:
                completion = await client.chat.completions.create(
                    model="audit:remote-a", messages=ASK, tools=[TOOL])  # type: ignore[arg-type, list-item]
                [call] = completion.choices[0].message.tool_calls or []
                arguments, info = call.function.arguments, extra(completion)
    assert arguments == PARIS
    assert info["fallback"]["failed"] == "remote-b" and "overloaded" in info["fallback"]["error"]
    assert info["partner"] == "remote-c" and "partner_error" not in info
    [body] = sent_to(fake, "up-c")  # the replacement got the body as sent, tools and all
    assert body["tools"] == [TOOL] and body["messages"] == ASK and "stream" not in body
    # compared as tool calls: the same call with its arguments written otherwise
    assert info["agreement"] == 1.0 and info["flagged"] is False
    assert sink.comparisons == 1


async def test_the_primary_answering_for_a_failing_assistant_keeps_the_tools(
        tmp_path: Path) -> None:
    async with FakeUpstream(answers=answers()) as fake, FakeUpstream() as broken:
        broken.enqueue(*[Reply.error(503, "overloaded")] * 4)
        models = [remote("remote-a", "x", fake.base_url, "up-a"),
                  remote("remote-a2", "x", broken.base_url, "up-a2")]
        async with serve(make_settings(tmp_path, models)) as running:
            completion = await async_client(running).chat.completions.create(
                model="assist:remote-a", messages=ASK, tools=[TOOL],  # type: ignore[arg-type, list-item]
                tool_choice="required", extra_body={"diffroute": {"shadow_rate": 0}})
    [body] = sent_to(fake, "up-a")
    assert body["tools"] == [TOOL] and body["tool_choice"] == "required"
    choice = completion.choices[0]
    assert completion.model == "remote-a" and choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert (call.function.name, call.function.arguments) == ("get_weather", PARIS)
    info = extra(completion)
    assert (info["partner"], info["answered_by"]) == ("remote-a2", "remote-a")
    assert info["fallback"]["failed"] == "remote-a2"


@pytest.mark.parametrize("stream", [False, True])
async def test_a_plain_calls_fallback_keeps_the_tools(tmp_path: Path, stream: bool) -> None:
    async with FakeUpstream(answers=answers()) as fake, FakeUpstream() as broken:
        broken.enqueue(*[Reply.error(503, "overloaded")] * 4)
        models = [remote("remote-p", "x", broken.base_url, "up-p", fallbacks=["remote-c"]),
                  remote("remote-c", "z", fake.base_url, "up-c")]
        async with serve(make_settings(tmp_path, models)) as running:
            client = async_client(running)
            if stream:
                raw = await client.chat.completions.with_raw_response.create(
                    model="remote-p", messages=ASK, tools=[TOOL], stream=True)  # type: ignore[arg-type, list-item]
                chunks = [c async for c in raw.parse()]
                arguments, model = tool_arguments(chunks), chunks[0].model
            else:
                raw = await client.chat.completions.with_raw_response.create(
                    model="remote-p", messages=ASK, tools=[TOOL])  # type: ignore[arg-type, list-item]
                completion = raw.parse()
                [call] = completion.choices[0].message.tool_calls or []
                arguments, model = call.function.arguments, completion.model
    assert raw.headers["x-diffroute-fallback"] == "remote-c" and model == "remote-c"
    assert arguments == PARIS_REORDERED
    [body] = sent_to(fake, "up-c")
    assert body["tools"] == [TOOL] and body["messages"] == ASK


async def test_the_policy_pairs_a_request_with_tools_among_forwarding_models(
        tmp_path: Path) -> None:
    # the policy's first choice of auditor is a translated model, which would refuse the
    # tools: a forwarding one of the pool audits instead, as it replaces a failing auditor
    sink = InMemoryLiveDiffSink()
    async with FakeUpstream(answers=answers()) as fake:
        models = [remote("remote-a", "x", fake.base_url, "up-a"),
                  scripted("local", "y", "It is sunny."),
                  remote("remote-b", "y", fake.base_url, "up-b")]
        async with serve(make_settings(tmp_path, models),
                         sink_factory=in_memory(sink)) as running:
            client = async_client(running)
            completion = await client.chat.completions.create(
                model="audit:remote-a", messages=ASK, tools=[TOOL])  # type: ignore[arg-type, list-item]
            plain = await client.chat.completions.create(model="audit:remote-a", messages=ASK)
    assert extra(completion)["partner"] == "remote-b"
    assert completion.choices[0].finish_reason == "tool_calls"
    assert extra(plain)["partner"] == "local"  # without tools, the policy's own choice
