"""The official ``openai`` client (sync, async, streaming) against the real service."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import openai
import pytest

from router.paired.record import InMemoryLiveDiffSink
from tests.e2e.harness import CAPITAL, PARIS, Running, make_settings, remote, serve
from tests.fakes import FakeUpstream, Reply

ASK = [{"role": "user", "content": CAPITAL}]


def async_client(running: Running, **kw: Any) -> openai.AsyncOpenAI:
    # a minute, not the SDK's ten: a request the service never answers fails here, with the
    # SDK's timeout error, long before pytest-timeout would stop the whole test
    kw.setdefault("timeout", 60.0)
    return openai.AsyncOpenAI(base_url=running.base_url, api_key=kw.pop("api_key", "unused"),
                              max_retries=0, **kw)


def extra(obj: Any) -> dict[str, Any]:
    """The ``diffroute`` object the openai client keeps among a model's extra fields."""
    value = (obj.model_extra or {}).get("diffroute")
    assert isinstance(value, dict), f"no diffroute object in {obj!r}"
    return value


async def eventually(predicate: Any, within_s: float = 2.0) -> None:
    """Wait until background recording has happened (bounded)."""
    async with asyncio.timeout(within_s):
        while not predicate():  # noqa: ASYNC110  # polls a plain counter of the sink
            await asyncio.sleep(0.01)


async def test_sync_client_plain_proxy(service: Running) -> None:
    def call() -> Any:
        client = openai.OpenAI(base_url=service.base_url, api_key="unused", max_retries=0)
        return client.chat.completions.create(model="alpha", messages=ASK)  # type: ignore[arg-type]

    completion = await asyncio.to_thread(call)
    assert completion.choices[0].message.content == PARIS
    assert completion.model == "alpha"
    assert completion.object == "chat.completion"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert "diffroute" not in (completion.model_extra or {})


async def test_async_audit_flags_disagreement_and_records_it(
        service: Running, sink: InMemoryLiveDiffSink) -> None:
    client = async_client(service)
    raw = await client.chat.completions.with_raw_response.create(
        model="audit:alpha", messages=ASK)  # type: ignore[arg-type]
    completion = raw.parse()
    assert completion.choices[0].message.content == PARIS  # the primary answers
    info = extra(completion)
    assert info["role"] == "audit" and info["primary"] == "alpha"
    assert info["partner"] == "beta" and info["answered_by"] == "alpha"
    assert info["flagged"] is True and info["agreement"] == 0.0
    assert info["live_diff_id"].startswith("ld_")
    assert info["reason"] == "test policy: other family"
    assert raw.headers["x-diffroute-partner"] == "beta"
    assert raw.headers["x-diffroute-flagged"] == "true"
    assert raw.headers["x-diffroute-role"] == "audit"
    await eventually(lambda: sink.get(info["live_diff_id"]) is not None)
    record = sink.get(info["live_diff_id"])
    assert record is not None and record.partner_text == "Lyon."
    assert "-Paris is the capital." in record.comparison.unified_diff


async def test_agreeing_audit_is_counted_not_recorded(
        service: Running, sink: InMemoryLiveDiffSink) -> None:
    client = async_client(service)
    raw = await client.chat.completions.with_raw_response.create(
        model="audit:alpha", messages=ASK,  # type: ignore[arg-type]
        extra_body={"diffroute": {"partner": "gamma"}})
    info = extra(raw.parse())
    assert info["partner"] == "gamma" and info["reason"] == "partner requested by the client"
    assert info["agreement"] == 1.0 and info["flagged"] is False
    assert info["live_diff_id"] is None
    assert raw.headers["x-diffroute-flagged"] == "false"
    await eventually(lambda: sink.comparisons == 1)
    assert not sink.records


@pytest.mark.parametrize(("reviewer", "flagged"), [("gamma", False), ("beta", True)])
async def test_review_mode(service: Running, reviewer: str, flagged: bool) -> None:
    completion = await async_client(service).chat.completions.create(
        model="audit:alpha", messages=ASK,  # type: ignore[arg-type]
        extra_headers={"x-diffroute-audit-mode": "review", "x-diffroute-partner": reviewer})
    info = extra(completion)
    assert completion.choices[0].message.content == PARIS
    assert info["audit_mode"] == "review" and info["partner"] == reviewer
    assert info["flagged"] is flagged


async def test_streaming_audit_ends_with_the_audit_chunk(service: Running) -> None:
    stream = await async_client(service).chat.completions.create(
        model="audit:alpha", messages=ASK, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == PARIS
    assert any(c.usage is not None for c in chunks)
    last = chunks[-1]
    assert last.choices == []
    info = extra(last)
    assert info["partner"] == "beta" and info["flagged"] is True
    assert info["live_diff_id"].startswith("ld_")
    assert all("diffroute" not in (c.model_extra or {}) for c in chunks[:-1])


async def test_sync_streaming_plain(service: Running) -> None:
    def call() -> list[Any]:
        client = openai.OpenAI(base_url=service.base_url, api_key="unused", max_retries=0)
        stream = client.chat.completions.create(model="beta", messages=ASK,  # type: ignore[arg-type]
                                                stream=True)
        return list(stream)

    chunks = await asyncio.to_thread(call)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Lyon."
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[0].choices[0].delta.role == "assistant"


async def test_assist_answers_with_the_assistant_and_shadows(
        service: Running, sink: InMemoryLiveDiffSink) -> None:
    client = async_client(service)
    raw = await client.chat.completions.with_raw_response.create(
        model="assist:alpha", messages=ASK,  # type: ignore[arg-type]
        extra_headers={"x-diffroute-shadow-rate": "1"})
    completion = raw.parse()
    info = extra(completion)
    assert info["role"] == "assist" and info["primary"] == "alpha"
    assert info["answered_by"] == "alpha-mini" and completion.model == "alpha-mini"
    assert info["shadow"] is True
    assert raw.headers["x-diffroute-answered-by"] == "alpha-mini"
    await eventually(lambda: sink.comparisons == 1)  # the background shadow was compared

    no_shadow = await client.chat.completions.create(
        model="assist:alpha", messages=ASK,  # type: ignore[arg-type]
        extra_body={"diffroute": {"shadow_rate": 0.0}})
    assert extra(no_shadow)["shadow"] is False


async def test_audit_auto_lets_the_policy_choose_the_primary(service: Running) -> None:
    completion = await async_client(service).chat.completions.create(
        model="audit:auto", messages=ASK,  # type: ignore[arg-type]
        extra_body={"diffroute": {"candidates": ["gamma", "alpha"]}})
    info = extra(completion)
    assert (info["primary"], info["partner"]) == ("gamma", "alpha")


async def test_models_lists_pool_and_virtual_models(service: Running) -> None:
    ids = [m.id async for m in async_client(service).models.list()]
    assert ids[:4] == ["alpha", "alpha-mini", "beta", "gamma"]
    assert {"audit:alpha", "assist:auto", "audit:auto", "assist:gamma"} <= set(ids)


async def test_models_retrieve_answers_for_every_listed_model(service: Running) -> None:
    """``client.models.retrieve`` (GET /v1/models/{model}) was a 404 "no route" for every
    model, listed or not: an app that checks its model exists before using it could not."""
    client = async_client(service)
    listed = {m.id: m async for m in client.models.list()}
    for name in ("alpha", "audit:alpha", "assist:auto"):
        model = await client.models.retrieve(name)
        assert model == listed[name] and model.object == "model"
    with pytest.raises(openai.NotFoundError) as missing:
        await client.models.retrieve("nope")
    assert missing.value.code == "model_not_found" and missing.value.param == "model"


async def test_openai_backends_behind_fake_upstreams(tmp_path: Path) -> None:
    async with FakeUpstream(answers={"up-a": "The answer is B.", "up-b": "C"}) as fake:
        models = [remote("remote-a", "x", fake.base_url, "up-a"),
                  remote("remote-b", "y", fake.base_url, "up-b")]
        async with serve(make_settings(tmp_path, models)) as running:
            client = async_client(running)
            plain = await client.chat.completions.create(
                model="remote-a", messages=ASK, n=2, temperature=0.3,  # type: ignore[arg-type]
                max_tokens=7, seed=11, stop=["\n"])
            assert [c.message.content for c in plain.choices] == ["The answer is B."] * 2
            sent = fake.calls[-1].body
            assert (sent["model"], sent["n"], sent["temperature"]) == ("up-a", 2, 0.3)
            assert (sent["max_tokens"], sent["seed"], sent["stop"]) == (7, 11, ["\n"])

            audited = await client.chat.completions.create(
                model="audit:remote-a", messages=ASK,  # type: ignore[arg-type]
                max_completion_tokens=5)
            info = extra(audited)
            assert info["partner"] == "remote-b" and info["flagged"] is True
            assert {c.body["model"] for c in fake.calls[-2:]} == {"up-a", "up-b"}
            # paired calls to forwarding models get the body as sent, like plain ones
            assert all(c.body["max_completion_tokens"] == 5 and "max_tokens" not in c.body
                       for c in fake.calls[-2:])

            stream = await client.chat.completions.create(
                model="audit:remote-a", messages=ASK, stream=True)  # type: ignore[arg-type]
            chunks = [c async for c in stream]
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert text == "The answer is B."
            assert extra(chunks[-1])["partner"] == "remote-b"


TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
TOOL_ANSWER = {
    "id": "chatcmpl-up", "object": "chat.completion", "created": 1, "model": "up-a",
    "system_fingerprint": "fp_up",
    "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": None, "message": {
        "role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]}}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}}


async def test_plain_calls_pass_tools_through_both_ways(tmp_path: Path) -> None:
    """Agent frameworks call tools: what diffroute does not model must reach the upstream and
    come back untouched (only the model name is the pool's)."""
    async with FakeUpstream(answers={"up-a": "unused"}) as fake:
        settings = make_settings(tmp_path, [remote("remote-a", "x", fake.base_url, "up-a")])
        fake.enqueue(Reply(json=TOOL_ANSWER))
        async with serve(settings) as running:
            completion = await async_client(running).chat.completions.create(
                model="remote-a", messages=ASK, tools=[TOOL],  # type: ignore[arg-type, list-item]
                tool_choice="auto", response_format={"type": "text"}, user="u-1")
    sent = fake.calls[-1].body
    assert sent["model"] == "up-a" and sent["tools"] == [TOOL] and sent["tool_choice"] == "auto"
    assert sent["response_format"] == {"type": "text"} and sent["user"] == "u-1"
    assert "temperature" not in sent and "diffroute" not in sent  # nothing invented
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert (call.function.name, call.function.arguments) == ("get_weather", '{"city": "Paris"}')
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.model == "remote-a" and completion.system_fingerprint == "fp_up"
    assert completion.usage is not None and completion.usage.total_tokens == 19


def tool_chunks() -> list[dict[str, Any]]:
    """A streamed tool call as OpenAI sends it: the arguments arrive in pieces."""
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1,
                "model": "up-a", "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                              "finish_reason": finish}]}

    call = {"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": ""}}
    return [chunk({"role": "assistant", "content": None, "tool_calls": [call]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
            chunk({}, "tool_calls"),
            {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1,
             "model": "up-a", "choices": [],
             "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}}]


async def test_streamed_plain_calls_relay_tool_call_deltas(tmp_path: Path) -> None:
    async with FakeUpstream(answers={"up-a": "unused"}) as fake:
        settings = make_settings(tmp_path, [remote("remote-a", "x", fake.base_url, "up-a")])
        fake.enqueue(Reply(chunks=tool_chunks()), Reply(chunks=tool_chunks()[:2], done=False),
                     Reply.error(503, "overloaded"))
        async with serve(settings) as running:
            client = async_client(running)
            stream = await client.chat.completions.create(
                model="remote-a", messages=ASK, tools=[TOOL], stream=True,  # type: ignore[arg-type, list-item]
                stream_options={"include_usage": True})
            chunks = [c async for c in stream]
            cut = await client.chat.completions.create(
                model="remote-a", messages=ASK, stream=True)  # type: ignore[arg-type]
            with pytest.raises(openai.APIError) as broken:
                _ = [c async for c in cut]
            with pytest.raises(openai.APIStatusError) as refused:
                await client.chat.completions.create(
                    model="remote-a", messages=ASK, stream=True)  # type: ignore[arg-type]
    sent = fake.calls[0].body
    assert sent["stream"] is True and sent["tools"] == [TOOL]
    assert sent["stream_options"] == {"include_usage": True}
    assert {c.model for c in chunks} == {"remote-a"}
    pieces = [tc.function.arguments for c in chunks if c.choices
              for tc in (c.choices[0].delta.tool_calls or ()) if tc.function]
    assert "".join(p or "" for p in pieces) == '{"city": "Paris"}'
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 19
    assert "stream ended before completion" in str(broken.value)
    assert refused.value.status_code == 502 and "overloaded" in refused.value.message


async def test_plain_calls_apply_the_model_configuration(tmp_path: Path) -> None:
    configured = remote("remote-a", "x", "", "up-a",
                        decoding={"temperature": 0.0, "max_tokens": 5, "seed": 3})
    async with FakeUpstream(answers={"up-a": "B"}) as fake:
        configured["backend"] |= {"base_url": fake.base_url, "system_prompt": "Be terse."}
        async with serve(make_settings(tmp_path, [configured])) as running:
            client = async_client(running)
            await client.chat.completions.create(
                model="remote-a", messages=ASK, temperature=1.0,  # type: ignore[arg-type]
                max_completion_tokens=50)
            clamped = fake.calls[-1].body
            await client.chat.completions.create(model="remote-a", messages=ASK)  # type: ignore[arg-type]
            bare = fake.calls[-1].body
            fake.enqueue(Reply(json={"choices": []}))
            with pytest.raises(openai.APIStatusError) as failed:
                await client.chat.completions.create(model="remote-a", messages=ASK)  # type: ignore[arg-type]
    assert clamped["messages"] == [{"role": "system", "content": "Be terse."}, *ASK]
    assert (clamped["temperature"], clamped["seed"]) == (0.0, 3)
    assert clamped["max_completion_tokens"] == 5 and "max_tokens" not in clamped
    assert bare["max_tokens"] == 5
    assert failed.value.status_code == 502 and "remote-a" in failed.value.message
    assert "no choices" in failed.value.message


async def test_review_sends_the_primary_answer_to_the_reviewer(tmp_path: Path) -> None:
    async with FakeUpstream(answers={"up-a": "42", "up-b": "AGREE"}) as fake:
        models = [remote("remote-a", "x", fake.base_url, "up-a"),
                  remote("remote-b", "y", fake.base_url, "up-b")]
        async with serve(make_settings(tmp_path, models)) as running:
            completion = await async_client(running).chat.completions.create(
                model="audit:remote-a", messages=ASK,  # type: ignore[arg-type]
                extra_body={"diffroute": {"audit_mode": "review"}})
    assert extra(completion)["flagged"] is False
    review = fake.calls[-1].body
    assert review["model"] == "up-b"
    assert review["messages"][0]["content"] == CAPITAL
    assert "Answer to review:\n42" in review["messages"][-1]["content"]


async def test_streaming_review_and_streaming_assist(
        service: Running, sink: InMemoryLiveDiffSink) -> None:
    client = async_client(service)
    stream = await client.chat.completions.create(
        model="audit:alpha", messages=ASK, stream=True,  # type: ignore[arg-type]
        extra_body={"diffroute": {"audit_mode": "review", "partner": "beta"}})
    chunks = [c async for c in stream]
    review = extra(chunks[-1])
    assert review["audit_mode"] == "review" and review["flagged"] is True

    stream = await client.chat.completions.create(
        model="assist:alpha", messages=ASK, stream=True,  # type: ignore[arg-type]
        extra_headers={"x-diffroute-shadow-rate": "1.0"})
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == PARIS
    assist = extra(chunks[-1])
    assert assist["answered_by"] == "alpha-mini" and assist["shadow"] is True
    await eventually(lambda: sink.comparisons == 2)  # the review and the shadow


async def test_candidates_header_and_logprobs(tmp_path: Path, service: Running) -> None:
    completion = await async_client(service).chat.completions.create(
        model="audit:auto", messages=ASK,  # type: ignore[arg-type]
        extra_headers={"x-diffroute-candidates": "beta, alpha-mini"})
    assert extra(completion)["primary"] == "beta"
    async with FakeUpstream(answer="B", first_token_logprobs=[("B", -0.1), ("C", -2.5)]) as fake:
        models = [remote("remote-a", "x", fake.base_url, "up-a")]
        async with serve(make_settings(tmp_path, models)) as running:
            plain = await async_client(running).chat.completions.create(
                model="remote-a", messages=ASK, logprobs=True,  # type: ignore[arg-type]
                top_logprobs=2)
    assert fake.calls[-1].body["top_logprobs"] == 2
    logprobs = plain.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert [t.token for t in logprobs.content[0].top_logprobs] == ["B", "C"]


async def test_logprobs_without_top_logprobs_give_the_first_tokens_logprob(
        service: Running) -> None:
    """A translated answer (scripted alpha): ``logprobs`` alone is the first token's logprob
    with no alternatives listed, as OpenAI answers it; ``top_logprobs`` lists that many."""
    client = async_client(service)
    alone = await client.chat.completions.create(
        model="alpha", messages=ASK, logprobs=True)  # type: ignore[arg-type]
    logprobs = alone.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert logprobs.content[0].logprob <= 0 and logprobs.content[0].top_logprobs == []
    two = await client.chat.completions.create(
        model="alpha", messages=ASK, logprobs=True, top_logprobs=2)  # type: ignore[arg-type]
    assert two.choices[0].logprobs is not None and two.choices[0].logprobs.content is not None
    assert len(two.choices[0].logprobs.content[0].top_logprobs) >= 1
    without = await client.chat.completions.create(
        model="alpha", messages=ASK)  # type: ignore[arg-type]
    assert without.choices[0].logprobs is None



async def test_a_translated_answers_logprobs_name_the_token_it_drew(tmp_path: Path) -> None:
    """A model that says "Lyon" 3 times in 10 and "Paris" 7: each choice's ``logprobs``
    names its own first token with that token's logprob (it named the likeliest, "Paris",
    whatever was drawn); the alternatives stay the likeliest first."""
    models = [{"name": "split", "family": "s", "backend": {
        "kind": "scripted", "answers": {"Lyon": 0.3, "Paris": 0.7}, "template": "{answer}"}}]
    async with serve(make_settings(tmp_path, models)) as running:
        answer = await async_client(running).chat.completions.create(
            model="split", messages=ASK, logprobs=True, top_logprobs=2, n=12,
            seed=3)  # type: ignore[arg-type]
    drawn = {}
    for choice in answer.choices:
        assert choice.logprobs is not None and choice.logprobs.content is not None
        first = choice.logprobs.content[0]
        assert choice.message.content == first.token
        drawn[first.token] = first.logprob
        assert [t.token for t in first.top_logprobs] == ["Paris", "Lyon"]
    assert drawn == pytest.approx({"Lyon": math.log(0.3), "Paris": math.log(0.7)})


async def test_a_stream_the_upstream_answers_in_one_piece_keeps_tool_call_indexes(
        tmp_path: Path) -> None:
    """An upstream that answers ``stream: true`` with one JSON completion: the one chunk's
    tool calls carry ``index``, so the SDK's stream accumulator rebuilds them (it raised)."""
    from tests.fakes import tool_call_message

    message = tool_call_message("get_weather", '{"city": "Paris"}',
                                ("get_weather", '{"city": "Lyon"}'))
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}
    async with FakeUpstream(answers={"up-a": message, "up-b": message}) as fake:
        models = [remote("remote-a", "x", fake.base_url, "up-a"),
                  remote("remote-b", "y", fake.base_url, "up-b")]
        async with serve(make_settings(tmp_path, models)) as running:
            client = openai.AsyncOpenAI(base_url=running.base_url, api_key="unused",
                                        max_retries=0)
            for model in ("remote-a", "audit:remote-a"):
                fake.enqueue(Reply(json=fake.completion({"model": "up-a"})))
                async with client.chat.completions.stream(
                        model=model, messages=[{"role": "user", "content": "weather?"}],
                        tools=[tool]) as stream:  # type: ignore[list-item]
                    async for _ in stream:
                        pass
                    final = await stream.get_final_completion()
                calls = final.choices[0].message.tool_calls or []
                assert [(c.function.name, c.function.arguments) for c in calls] == [
                    ("get_weather", '{"city": "Paris"}'), ("get_weather", '{"city": "Lyon"}')]


async def test_every_chunk_of_a_relayed_paired_stream_has_one_id(tmp_path: Path) -> None:
    """The last chunk (the diffroute object) had an id and time of its own."""
    async with FakeUpstream() as fake:
        models = [remote("remote-a", "x", fake.base_url, "up-a"),
                  remote("remote-b", "y", fake.base_url, "up-b")]
        async with serve(make_settings(tmp_path, models)) as running:
            client = openai.AsyncOpenAI(base_url=running.base_url, api_key="unused",
                                        max_retries=0)
            stream = await client.chat.completions.create(
                model="audit:remote-a", messages=[{"role": "user", "content": "hi"}],
                stream=True)
            chunks = [chunk async for chunk in stream]
    assert (chunks[-1].model_extra or {}).get("diffroute"), chunks[-1]
    assert len({(c.id, c.created) for c in chunks}) == 1, [(c.id, c.created) for c in chunks]


async def test_the_sdk_does_not_retry_a_request_bound_to_fail_again(
        tmp_path: Path, service: Running) -> None:
    """The openai SDK retries 409 (as a lock timeout) and every 5xx twice unless the server
    says ``x-should-retry: false``: "no partner" and an upstream that refuses diffroute's own
    key or model were sent three times, each deciding or calling again."""
    sent: list[str] = []

    async def count(request: Any) -> None:
        sent.append(request.url.path)

    client = openai.AsyncOpenAI(
        base_url=service.base_url, api_key="unused", max_retries=2, timeout=60.0,
        http_client=openai.DefaultAsyncHttpxClient(event_hooks={"request": [count]}))
    with pytest.raises(openai.ConflictError) as conflict:
        await client.chat.completions.create(
            model="audit:alpha", messages=ASK,  # type: ignore[arg-type]
            extra_body={"diffroute": {"candidates": ["alpha"]}})
    assert conflict.value.code == "no_pair" and len(sent) == 1
    assert conflict.value.response.headers["x-should-retry"] == "false"

    async with FakeUpstream(api_key="upstream-key") as fake:  # answers 401 to other keys
        keyed = remote("remote-b", "y", fake.base_url, "m")
        keyed["backend"]["api_key"] = "upstream-key"
        settings = make_settings(tmp_path / "remote", [
            remote("remote-a", "x", fake.base_url, "m"), keyed])
        async with serve(settings) as running:
            client = openai.AsyncOpenAI(base_url=running.base_url, api_key="unused",
                                        max_retries=2, timeout=60.0)
            with pytest.raises(openai.InternalServerError) as failed:
                await client.chat.completions.create(
                    model="remote-a", messages=ASK)  # type: ignore[arg-type]
            assert failed.value.status_code == 502 and fake.count() == 1
            # a transient upstream failure is still left to the client's retries
            fake.enqueue(Reply.error(500, "boom"))
            raw = await client.chat.completions.with_raw_response.create(
                model="remote-b", messages=ASK)  # type: ignore[arg-type]
            assert raw.http_response.status_code == 200 and raw.retries_taken == 1


def _upstream_chunks(usage: str | None) -> list[dict[str, Any]]:
    """A streamed answer with a system_fingerprint, and its usage: ``alone`` in a last chunk
    without choices (OpenAI), ``with_last_choice`` on the chunk of the finish reason
    (llama.cpp's server), or ``None`` (not asked for)."""
    tokens = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}

    def chunk(delta: dict[str, Any] | None, finish: str | None = None,
              **more: Any) -> dict[str, Any]:
        choices = [{"index": 0, "delta": delta, "finish_reason": finish}] if delta is not None \
            else []
        return {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 5,
                "model": "up-a", "system_fingerprint": "fp_up", "choices": choices, **more}

    head = [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hi"})]
    if usage == "with_last_choice":
        return [*head, chunk({}, "stop", usage=tokens)]
    if usage == "alone":
        return [*head, chunk({}, "stop"), chunk(None, usage=tokens)]
    return [*head, chunk({}, "stop")]


@pytest.mark.parametrize("usage", ["alone", "with_last_choice", None])
async def test_a_paired_streams_final_completion_keeps_usage_and_fingerprint(
        tmp_path: Path, usage: str | None) -> None:
    """The SDK's stream helper keeps the last chunk's ``usage`` and ``system_fingerprint``:
    the audit's final chunk had no usage when the upstream sent it with the last choice, and
    no fingerprint unless it carried the usage, so ``get_final_completion()`` lost what a
    plain call keeps."""
    async with FakeUpstream() as fake:
        models = [remote("remote-a", "x", fake.base_url, "up-a"),
                  remote("remote-b", "y", fake.base_url, "up-b")]
        async with serve(make_settings(tmp_path, models)) as running:
            client = async_client(running)
            finals = {}
            options = {"include_usage": True} if usage else {}
            for model in ("remote-a", "audit:remote-a"):
                fake.enqueue(Reply(chunks=_upstream_chunks(usage)))
                async with client.chat.completions.stream(
                        model=model, messages=ASK,  # type: ignore[arg-type]
                        stream_options=options) as stream:  # type: ignore[arg-type]
                    chunks = [event.chunk async for event in stream if event.type == "chunk"]
                    finals[model] = await stream.get_final_completion()
            usages = [c.usage for c in chunks if c.usage is not None]
    for final in finals.values():
        assert final.choices[0].message.content == "Hi"
        assert final.system_fingerprint == "fp_up"
        assert (final.usage.total_tokens if final.usage else None) == (5 if usage else None)
    # sent once: readers that add up every chunk's usage count it once
    assert len(usages) == (1 if usage else 0)
    assert extra(chunks[-1])["partner"] == "remote-b"
    assert chunks[-1].usage == (usages[0] if usage else None)
