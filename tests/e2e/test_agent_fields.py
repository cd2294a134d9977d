"""What agent frameworks send and read around a paired call: the stream helper's usage, the
fields an auditor is sent, nullable fields, and an upstream refusing the request itself —
the official ``openai`` client against the real service and a fake upstream on loopback."""

from __future__ import annotations

import aiohttp
import openai
import pytest

from router.paired.record import InMemoryLiveDiffSink
from tests.e2e.harness import Running
from tests.e2e.test_agents import ASK, TOOL, agents_service, sent_to
from tests.e2e.test_openai_client import async_client, extra
from tests.fakes import Reply


@pytest.mark.parametrize("model", ["audit:remote-a", "assist:remote-a"])
async def test_the_sdk_stream_helper_ends_a_paired_stream_with_its_usage(
        tmp_path: object, model: str) -> None:
    """The SDK keeps the last chunk's usage: the `diffroute` chunk after the usage chunk
    left `get_final_completion().usage` None on every paired stream."""
    async with agents_service(tmp_path, InMemoryLiveDiffSink()) as (running, _fake):  # type: ignore[arg-type]
        client = async_client(running)
        async with client.chat.completions.stream(
                model=model, messages=ASK, tools=[TOOL],  # type: ignore[arg-type, list-item]
                stream_options={"include_usage": True}) as stream:
            async for _ in stream:
                pass
            final = await stream.get_final_completion()
        assert final.usage is not None and final.usage.total_tokens > 0
        assert final.choices[0].message.tool_calls  # the primary's call, kept
        raw = await client.chat.completions.create(
            model=model, messages=ASK, tools=[TOOL], stream=True,  # type: ignore[arg-type, list-item]
            stream_options={"include_usage": True})
        chunks = [c async for c in raw]
        with_usage = [i for i, c in enumerate(chunks) if c.usage is not None]
        assert with_usage == [len(chunks) - 1]  # once (LangChain adds them up), and last
        assert extra(chunks[-1])["role"] == model.split(":")[0]


async def test_the_auditor_is_not_sent_logprobs(tmp_path: object) -> None:
    """Its logprobs are never read, and a model that refuses `logprobs` lost the audit."""
    async with agents_service(tmp_path, InMemoryLiveDiffSink()) as (running, fake):  # type: ignore[arg-type]
        completion = await async_client(running).chat.completions.create(
            model="audit:remote-a", messages=ASK, logprobs=True,  # type: ignore[arg-type]
            top_logprobs=2)
        assert extra(completion)["agreement"] is not None
        [primary] = sent_to(fake, "up-a")
        [auditor] = sent_to(fake, "up-b")
        assert primary["logprobs"] is True and primary["top_logprobs"] == 2
        assert "logprobs" not in auditor and "top_logprobs" not in auditor


async def post(running: Running, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session, session.post(
            running.url + "/v1/chat/completions", json=body) as response:
        return response.status, await response.json()


@pytest.mark.parametrize("model", ["remote-a", "audit:remote-a"])
async def test_null_n_and_stream_mean_the_defaults(tmp_path: object, model: str) -> None:
    """The API declares them "integer or null" / "boolean or null"; clients that write every
    field send null (a 400 before)."""
    async with agents_service(tmp_path, InMemoryLiveDiffSink()) as (running, _fake):  # type: ignore[arg-type]
        status, answer = await post(running, {"model": model, "messages": ASK, "n": None,
                                              "stream": None})
        assert status == 200 and answer["object"] == "chat.completion"
        status, answer = await post(running, {"model": model, "messages": ASK, "n": "two"})
        assert status == 400 and answer["error"]["param"] == "n"  # type: ignore[index]


@pytest.mark.parametrize(("model", "stream"), [("remote-a", False), ("audit:remote-a", False),
                                               ("remote-a", True), ("assist:remote-a", True)])
async def test_an_upstream_refusing_the_request_is_the_clients_error(
        tmp_path: object, model: str, stream: bool) -> None:
    """A 400 from the upstream (a tool schema it does not take) came back as a 502, which the
    SDK retries as a server failure (5 upstream calls for one) and shows as one."""
    async with agents_service(tmp_path, InMemoryLiveDiffSink()) as (running, fake):  # type: ignore[arg-type]
        refusal = Reply(status=400, json={"error": {
            "message": "Invalid schema for function 'get_weather'", "param": "tools[0]",
            "type": "invalid_request_error", "code": "invalid_function_parameters"}})
        answering = "up-a2" if model.startswith("assist") else "up-a"
        fake.enqueue(refusal, refusal)  # the next two calls, whichever models they are for
        client = openai.AsyncOpenAI(base_url=running.base_url, api_key="unused", max_retries=2,
                                    timeout=60.0)
        with pytest.raises(openai.BadRequestError) as caught:
            if stream:
                async for _ in await client.chat.completions.create(
                        model=model, messages=ASK, tools=[TOOL], stream=True):  # type: ignore[arg-type, list-item]
                    pass
            else:
                await client.chat.completions.create(model=model, messages=ASK,
                                                     tools=[TOOL])  # type: ignore[arg-type, list-item]
        error = caught.value
        assert error.status_code == 400 and "Invalid schema" in error.message
        assert error.param == "tools[0]" and error.code == "invalid_function_parameters"
        assert len(sent_to(fake, answering)) == 1  # not retried by the SDK (a 502 was)
        assert fake.count() <= 2


async def test_a_deprecated_function_message_is_accepted_where_it_can_be_sent(
        tmp_path: object) -> None:
    """`role: "function"` (the `functions` API's result) is still accepted by OpenAI."""
    conversation = [*ASK, {"role": "assistant", "content": None,
                           "function_call": {"name": "get_weather", "arguments": "{}"}},
                    {"role": "function", "name": "get_weather", "content": "sunny"}]
    async with agents_service(tmp_path, InMemoryLiveDiffSink()) as (running, fake):  # type: ignore[arg-type]
        status, answer = await post(running, {"model": "remote-a", "messages": conversation})
        assert status == 200, answer
        assert sent_to(fake, "up-a")[0]["messages"][2]["role"] == "function"
        status, answer = await post(running, {"model": "local", "messages": conversation})
        assert status == 400 and answer["error"]["param"] == "messages[1].function_call"  # type: ignore[index]


@pytest.mark.parametrize("model", ["local", "audit:local"])
async def test_streamed_logprobs_from_a_translated_model_are_refused_not_dropped(
        tmp_path: object, model: str) -> None:
    """A translated stream carries no logprobs: they were silently left out of a 200."""
    async with agents_service(tmp_path, InMemoryLiveDiffSink()) as (running, _fake):  # type: ignore[arg-type]
        status, answer = await post(running, {"model": model, "messages": ASK, "stream": True,
                                              "logprobs": True})
        assert status == 400, answer
        assert answer["error"]["param"] == "logprobs"  # type: ignore[index]
        status, _ = await post(running, {"model": model, "messages": ASK, "logprobs": True})
        assert status == 200  # unstreamed, they are there


@pytest.mark.parametrize("model", ["local", "audit:remote-a"])
async def test_an_sdk_dumped_answer_and_null_fields_reach_a_translated_model(
        tmp_path: object, model: str) -> None:
    """A conversation that goes on with `message.model_dump()` (`"refusal": null`,
    `"tool_calls": null`…) and fields sent as null (`"top_p": null`) asks for nothing a
    translated model would drop: it was a 400 naming `messages[1].refusal` on every local
    model (the embedded pool's second turn)."""
    async with agents_service(tmp_path, InMemoryLiveDiffSink()) as (running, _fake):  # type: ignore[arg-type]
        client = async_client(running)
        first = await client.chat.completions.create(model="local", messages=ASK)  # type: ignore[arg-type]
        dumped = first.choices[0].message.model_dump()
        assert dumped["refusal"] is None and dumped["tool_calls"] is None
        diffroute = {"partner": "local"} if model.startswith("audit:") else None
        completion = await client.chat.completions.create(
            model=model, messages=[*ASK, dumped, {"role": "user", "content": "And Lyon?"}],  # type: ignore[list-item]
            extra_body={"top_p": None, "tools": None, "diffroute": diffroute})
        assert completion.choices[0].message is not None
        # a field that does ask for something is still refused, naming it
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(
                model="local", messages=ASK, extra_body={"top_p": 0.5})  # type: ignore[arg-type]
    assert isinstance(refused.value.body, dict) and refused.value.body["param"] == "top_p"


@pytest.mark.parametrize("model", ["remote-a", "audit:remote-a"])
@pytest.mark.parametrize("stream", [False, True])
async def test_json_nested_deeper_than_can_be_written_is_refused_not_a_500(
        tmp_path: object, model: str, stream: bool) -> None:
    """orjson reads 1,024 levels but writes 254: a body (or an upstream's answer) nested 300
    deep was read, then failed where it was forwarded or answered with — a 500."""
    deep: object = []
    for _ in range(299):
        deep = [deep]
    async with agents_service(tmp_path, InMemoryLiveDiffSink()) as (running, fake):  # type: ignore[arg-type]
        status, answer = await post(running, {"model": model, "messages": ASK,
                                              "metadata": {"x": deep}, "stream": stream})
        assert status == 400 and answer["error"]["code"] == "invalid_json"  # type: ignore[index]
        assert fake.count() == 0
        message = {"role": "assistant", "content": "hi", "extra": deep}
        if stream:
            fake.enqueue(Reply(chunks=[{"id": "c", "object": "chat.completion.chunk",
                                        "choices": [{"index": 0, "delta": message}]}]))
        else:
            fake.enqueue(Reply(json={"id": "c", "object": "chat.completion", "choices": [
                {"index": 0, "message": message, "finish_reason": "stop"}]}))
        # the partner is local: the one upstream call is the answering model's
        status, answer = await post(running, {"model": model, "messages": ASK,
                                              "stream": stream,
                                              "diffroute": {"partner": "local"} if ":" in model
                                              else None})
        assert status == 502, answer
        assert "nesting depth past 254" in answer["error"]["message"]  # type: ignore[index]
