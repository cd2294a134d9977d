"""The OpenAI-compatible HTTP backend against a real fake upstream on 127.0.0.1."""

from __future__ import annotations

import json
import math
import socket
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from profiles.protocol import SampleRequest, TokenLogprob
from router.backends.base import BackendContext, StreamDelta
from router.backends.http1 import Endpoint, Http1Client
from router.backends.openai_http import (
    OpenAIBackend,
    create,
    parse_retry_after,
)
from router.backends.params import OpenAIParams
from router.config import Decoding, ModelConfig, Timeouts
from router.errors import (
    ModelUnavailableError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRateLimitError,
    UpstreamRequestError,
    UpstreamTimeoutError,
)
from tests.fakes import EMBEDDINGS, MODELS, FakeUpstream, Reply

ASK = SampleRequest(messages=({"role": "user", "content": "Pick A, B, C or D."},), max_tokens=8)

MakeBackend = Callable[..., OpenAIBackend]


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(answer="B is right", models=("up-model",)) as upstream:
        yield upstream


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[MakeBackend]:
    """Builds backends through the registered factory and closes them after the test."""
    built: list[OpenAIBackend] = []

    def build(base_url: str, timeouts: Timeouts | None = None, **params: Any) -> OpenAIBackend:
        params.setdefault("model", "up-model")
        backend_params = OpenAIParams(base_url=base_url, **params)
        model = ModelConfig(name="pool-a", backend=backend_params,
                            timeouts=timeouts or Timeouts())
        backend = create(model, BackendContext(data_dir=tmp_path))
        built.append(backend)
        return backend

    yield build
    for backend in built:
        await backend.aclose()


def free_port() -> int:
    """A port nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def collect(backend: OpenAIBackend, request: SampleRequest = ASK) -> list[StreamDelta]:
    return [delta async for delta in backend.stream(request)]


# --- success ---------------------------------------------------------------------------------


async def test_sample_maps_the_completion_and_sends_the_request(
        fake: FakeUpstream, make: MakeBackend) -> None:
    backend = make(fake.base_url, system_prompt="Be terse.")
    request = SampleRequest(messages=ASK.messages, temperature=0.3, max_tokens=5,
                            stop=("\n",), seed=11)

    result = await backend.sample(request)

    assert result.model == "pool-a"
    assert [s.text for s in result.samples] == ["B is right"]
    assert result.samples[0].finish_reason == "stop"
    assert result.usage.prompt_tokens == 2 + 6  # system prompt + user message, in words
    assert result.usage.completion_tokens == 3
    sent = fake.calls[0].body
    assert sent["model"] == "up-model"
    assert sent["messages"][0] == {"role": "system", "content": "Be terse."}
    assert sent["messages"][1] == dict(ASK.messages[0])
    assert (sent["n"], sent["temperature"], sent["max_tokens"]) == (1, 0.3, 5)
    assert (sent["stop"], sent["seed"]) == (["\n"], 11)
    assert "logprobs" not in sent


async def test_a_configured_seed_is_mixed_with_the_request_seed_never_substituted(
        fake: FakeUpstream, tmp_path: Path) -> None:
    def backend(name: str) -> OpenAIBackend:
        model = ModelConfig(name=name, backend=OpenAIParams(base_url=fake.base_url,
                                                            model="up-model"),
                            decoding=Decoding(seed=42))
        return create(model, BackendContext(data_dir=tmp_path))

    a, b = backend("a"), backend("b")
    try:
        for request_seed in (101, 202, None):
            await a.sample(SampleRequest(messages=ASK.messages, seed=request_seed))
            await b.sample(SampleRequest(messages=ASK.messages, seed=request_seed))
    finally:
        await a.aclose()
        await b.aclose()
    seeds = [c.body["seed"] for c in fake.calls]
    # another request seed (collection mixes in the model's identity) gives another seed, and
    # two pool names given one configured seed are not coupled when the request has none
    assert seeds[0] != seeds[2] and seeds[4] != seeds[5]
    assert 42 not in seeds


async def test_n_samples_come_from_one_call(fake: FakeUpstream, make: MakeBackend) -> None:
    result = await make(fake.base_url).sample(SampleRequest(messages=ASK.messages, n=3))

    assert len(result.samples) == 3
    assert fake.count() == 1
    assert fake.calls[0].body["n"] == 3


async def test_upstream_ignoring_n_is_asked_again_with_fresh_seeds(
        fake: FakeUpstream, make: MakeBackend) -> None:
    fake.enqueue(Reply(choices=1, text="one"), Reply(choices=1, text="two"))

    result = await make(fake.base_url).sample(
        SampleRequest(messages=ASK.messages, n=3, seed=5))

    assert [s.text for s in result.samples] == ["one", "two", "B is right"]
    assert [c.body["n"] for c in fake.calls] == [3, 2, 1]
    assert [c.body["seed"] for c in fake.calls] == [5, 6, 7]
    assert result.usage.completion_tokens == 1 + 1 + 3


async def test_first_token_logprobs_are_passed_through(make: MakeBackend) -> None:
    options = [("B", math.log(0.7)), ("A", math.log(0.2)), ("C", math.log(0.1))]
    async with FakeUpstream(answer="B", first_token_logprobs=options) as fake:
        backend = make(fake.base_url)
        result = await backend.sample(SampleRequest(messages=ASK.messages, top_logprobs=2))
        capped = await backend.sample(SampleRequest(messages=ASK.messages, top_logprobs=50))

    assert result.samples[0].first_token_logprobs == tuple(
        TokenLogprob(t, lp) for t, lp in options[:2])
    assert (fake.calls[0].body["logprobs"], fake.calls[0].body["top_logprobs"]) == (True, 2)
    assert fake.calls[1].body["top_logprobs"] == 20
    assert len(capped.samples[0].first_token_logprobs) == 3


async def test_the_token_drawn_is_kept_apart_from_the_likeliest(make: MakeBackend) -> None:
    """The upstream drew "C", not its likeliest "B": the sample says so (a translated answer's
    ``logprobs.content[0]`` is the drawn token; it was the likeliest one)."""
    options = [("B", math.log(0.7)), ("C", math.log(0.2))]
    async with FakeUpstream(answer="C", first_token_logprobs=options) as fake:
        result = await make(fake.base_url).sample(
            SampleRequest(messages=ASK.messages, top_logprobs=2))
    sample = result.samples[0]
    assert sample.first_token == TokenLogprob("C", math.log(0.2))
    assert sample.first_token_logprobs[0] == TokenLogprob("B", math.log(0.7))


async def test_logprobs_are_not_asked_of_a_server_without_them(
        fake: FakeUpstream, make: MakeBackend) -> None:
    result = await make(fake.base_url, supports_logprobs=False).sample(
        SampleRequest(messages=ASK.messages, top_logprobs=5))

    assert "logprobs" not in fake.calls[0].body
    assert result.samples[0].first_token_logprobs == ()


# --- HTTP errors -------------------------------------------------------------------------------


async def test_429_is_a_rate_limit_error_with_retry_after(
        fake: FakeUpstream, make: MakeBackend) -> None:
    fake.enqueue(Reply.error(429, "Rate limit reached", retry_after="7"))

    with pytest.raises(UpstreamRateLimitError) as caught:
        await make(fake.base_url).sample(ASK)

    assert caught.value.retry_after == 7.0
    assert caught.value.upstream_status == 429
    assert caught.value.model == "pool-a"
    assert "Rate limit reached" in str(caught.value)
    assert fake.count() == 1


async def test_429_is_retried_after_the_delay_the_server_asks(
        fake: FakeUpstream, make: MakeBackend) -> None:
    fake.enqueue(Reply(status=429, headers={"retry-after-ms": "300"}, json={"error": "busy"}))
    started = time.perf_counter()

    result = await make(fake.base_url, max_retries=1).sample(ASK)

    assert result.samples[0].text == "B is right"
    assert fake.count() == 2
    assert time.perf_counter() - started >= 0.3


async def test_a_retry_after_longer_than_the_call_budget_is_not_waited_for(
        fake: FakeUpstream, make: MakeBackend) -> None:
    fake.enqueue(Reply.error(429, "come back tomorrow", retry_after="86400"))

    with pytest.raises(UpstreamRateLimitError):
        await make(fake.base_url, max_retries=3).sample(ASK)

    assert fake.count() == 1


async def test_500_is_an_upstream_error_with_status_and_body(
        fake: FakeUpstream, make: MakeBackend) -> None:
    fake.enqueue(Reply.error(500, "engine crashed"))

    with pytest.raises(UpstreamError) as caught:
        await make(fake.base_url).sample(ASK)

    assert type(caught.value) is UpstreamError
    assert caught.value.upstream_status == 500
    assert "engine crashed" in str(caught.value)
    assert "engine crashed" in caught.value.body
    assert caught.value.transient


async def test_client_errors_are_not_retried(fake: FakeUpstream, make: MakeBackend) -> None:
    fake.enqueue(Reply(status=400, body="bad request, plain text"))

    with pytest.raises(UpstreamError) as caught:
        await make(fake.base_url, max_retries=3).sample(ASK)

    assert caught.value.upstream_status == 400
    assert "HTTP 400" in str(caught.value)
    assert fake.count() == 1


async def test_a_slow_upstream_is_a_timeout(fake: FakeUpstream, make: MakeBackend) -> None:
    fake.enqueue(Reply(delay=3.0))
    backend = make(fake.base_url, timeouts=Timeouts(connect=1, read=0.2, total=5))
    started = time.perf_counter()

    with pytest.raises(UpstreamTimeoutError) as caught:
        await backend.sample(ASK)

    assert time.perf_counter() - started < 2.0
    assert caught.value.status == 504


async def test_connection_refused_is_a_connection_error(make: MakeBackend) -> None:
    backend = make(f"http://127.0.0.1:{free_port()}/v1")

    with pytest.raises(UpstreamConnectionError) as caught:
        await backend.sample(ASK)

    assert caught.value.upstream_status is None


async def test_a_truncated_body_is_a_protocol_error(fake: FakeUpstream, make: MakeBackend) -> None:
    fake.enqueue(Reply.truncated())

    with pytest.raises(UpstreamProtocolError):
        await make(fake.base_url).sample(ASK)


@pytest.mark.parametrize("reply", [
    Reply.malformed(),
    Reply(body="<html>proxy error</html>", headers={"Content-Type": "text/html"}),
    Reply(json={"object": "chat.completion"}),
    Reply(json={"choices": []}),
    Reply(json={"choices": [{"finish_reason": "stop"}]}),
], ids=["bad-json", "html", "no-choices-field", "empty-choices", "no-message"])
async def test_malformed_responses_are_protocol_errors(
        fake: FakeUpstream, make: MakeBackend, reply: Reply) -> None:
    fake.enqueue(reply)

    with pytest.raises(UpstreamProtocolError) as caught:
        await make(fake.base_url, max_retries=2).sample(ASK)

    assert not caught.value.transient
    assert caught.value.upstream_status == 200
    assert caught.value.body  # the offending body travels with the error
    assert fake.count() == 1


# --- streaming -----------------------------------------------------------------------------------


async def test_stream_yields_the_deltas_then_finish_and_usage(
        fake: FakeUpstream, make: MakeBackend) -> None:
    deltas = await collect(make(fake.base_url))

    assert "".join(d.text for d in deltas) == "B is right"
    assert len([d for d in deltas if d.text]) == 3
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].usage is not None and deltas[-1].usage.completion_tokens == 3
    assert all(d.finish_reason is None for d in deltas[:-1])
    assert fake.calls[0].body["stream"] is True


async def test_stream_of_scripted_chunks_without_done_but_with_finish(
        fake: FakeUpstream, make: MakeBackend) -> None:
    fake.enqueue(Reply(done=False, chunks=[
        {"choices": [{"delta": {"content": "Hel"}, "finish_reason": None}]},
        {"choices": [{"delta": {"content": "lo"}, "finish_reason": "length"}]},
    ]))

    deltas = await collect(make(fake.base_url))

    assert [d.text for d in deltas] == ["Hel", "lo", ""]
    assert deltas[-1].finish_reason == "length"


@pytest.mark.parametrize("reply", [
    Reply(done=False, chunks=[{"choices": [{"delta": {"content": "cut"}}]}]),
    Reply(chunks=["{not json"]),
], ids=["cut-stream", "bad-chunk"])
async def test_broken_streams_are_protocol_errors(
        fake: FakeUpstream, make: MakeBackend, reply: Reply) -> None:
    fake.enqueue(reply)

    with pytest.raises(UpstreamProtocolError):
        await collect(make(fake.base_url))


async def test_stream_errors_are_typed(fake: FakeUpstream, make: MakeBackend) -> None:
    fake.enqueue(Reply.error(503, "overloaded"),
                 Reply(chunks=[{"error": {"message": "died mid-stream"}}]))
    backend = make(fake.base_url)

    with pytest.raises(UpstreamError) as before:
        await collect(backend)
    with pytest.raises(UpstreamError) as during:
        await collect(backend)

    assert before.value.upstream_status == 503
    assert "died mid-stream" in str(during.value)


async def test_stream_accepts_a_server_that_ignores_stream(
        fake: FakeUpstream, make: MakeBackend) -> None:
    fake.enqueue(Reply(json=fake.completion({"n": 1}, Reply(text="whole"))))

    deltas = await collect(make(fake.base_url))

    assert [(d.text, d.finish_reason) for d in deltas] == [("whole", None), ("", "stop")]


# --- check, keys, identity, sessions -----------------------------------------------------------


async def test_check_reports_reachable_and_whether_the_model_is_served(
        fake: FakeUpstream, make: MakeBackend) -> None:
    served = await make(fake.base_url).check()
    other = await make(fake.base_url, model="absent").check()

    assert (served.state, served.ok) == ("reachable", True)
    assert "up-model" in served.detail
    assert other.state == "reachable" and "not listed" in other.detail
    assert fake.count(MODELS) == 2


async def test_check_reports_unreachable(make: MakeBackend) -> None:
    status = await make(f"http://127.0.0.1:{free_port()}/v1").check()

    assert status.state == "unreachable"
    assert not status.ok


async def test_check_reports_a_rejected_key_as_error(
        make: MakeBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFROUTE_TEST_KEY", "sk-wrong")
    async with FakeUpstream(api_key="sk-right") as fake:
        status = await make(fake.base_url, api_key="env:DIFFROUTE_TEST_KEY").check()

    assert status.state == "error"
    assert "401" in status.detail


async def test_a_missing_key_is_reported_and_never_sent(
        fake: FakeUpstream, make: MakeBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIFFROUTE_TEST_KEY", raising=False)
    backend = make(fake.base_url, api_key="env:DIFFROUTE_TEST_KEY")

    status = await backend.check()
    with pytest.raises(ModelUnavailableError):
        await backend.sample(ASK)

    assert status.state == "missing key"
    assert "DIFFROUTE_TEST_KEY" in status.detail
    assert fake.calls == []


async def test_the_key_is_sent_as_bearer_and_kept_out_of_identity(
        make: MakeBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFROUTE_TEST_KEY", "sk-secret-123")
    async with FakeUpstream(api_key="sk-secret-123") as fake:
        backend = make(fake.base_url, api_key="env:DIFFROUTE_TEST_KEY",
                       headers={"X-Team": "eval"}, system_prompt="Be brief.")
        result = await backend.sample(ASK)

    assert result.samples[0].text
    assert fake.calls[0].headers["Authorization"] == "Bearer sk-secret-123"
    assert fake.calls[0].headers["X-Team"] == "eval"
    identity = backend.identity()
    assert {"base_url", "model", "system_prompt"} <= set(identity)
    assert identity["system_prompt"] == "Be brief."
    assert "api_key" not in identity and "headers" not in identity
    assert "sk-secret" not in json.dumps(identity) + repr(backend.params)


async def test_an_upstream_that_echoes_the_key_does_not_hand_it_on(
        fake: FakeUpstream, make: MakeBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Some servers quote the key they were sent in their 401 ("Incorrect API key provided:
    sk-…"): that text becomes the error diffroute's clients read (the message of a plain call,
    a pair's ``partner_error``, ``/healthz``), so the backend's secrets are taken out first."""
    monkeypatch.setenv("DIFFROUTE_TEST_KEY", "sk-echoed-secret-123")
    fake.enqueue(Reply.error(401, "Incorrect API key provided: sk-echoed-secret-123"),
                 Reply.error(403, "token hdr-secret-456 may not use this model"),
                 Reply(chunks=[{"error": {"message": "key sk-echoed-secret-123 revoked"}}]))
    backend = make(fake.base_url, api_key="env:DIFFROUTE_TEST_KEY",
                   headers={"X-Api-Token": "hdr-secret-456"})

    errors = []
    for call in (backend.sample(ASK), backend.sample(ASK), collect(backend)):
        with pytest.raises(UpstreamError) as caught:
            await call
        errors.append(caught.value)
    fake.enqueue(Reply.error(401, "Incorrect API key provided: sk-echoed-secret-123"),
                 path=MODELS)
    status = await backend.check()

    shown = [str(e) for e in errors] + [e.body for e in errors] + [status.detail]
    assert all("secret" not in text for text in shown), shown
    assert "Incorrect API key provided: [redacted]" in str(errors[0])
    assert "[redacted] may not use this model" in str(errors[1])
    assert "revoked" in str(errors[2])


async def test_calls_share_one_kept_alive_connection_of_the_given_client(
        fake: FakeUpstream, tmp_path: Path) -> None:
    """Calls, whole and streamed, go through the pool's ``Http1Client``: one connection, kept
    alive across calls and backends, left open by the backend's ``aclose``."""
    shared = Http1Client()
    backends = [create(ModelConfig(name=name, backend=OpenAIParams(base_url=fake.base_url,
                                                                    model="up-model")),
                       BackendContext(data_dir=tmp_path, http1=shared))
                for name in ("pool-a", "pool-b")]
    for _ in range(3):
        for backend in backends:
            assert (await backend.sample(ASK)).samples[0].text == "B is right"
            assert "".join(d.text for d in await collect(backend)) == "B is right"
    endpoint = Endpoint.parse(fake.base_url + "/chat/completions")
    assert len(fake.calls) == 12 and shared.idle_connections(endpoint) == 1
    fake.enqueue(Reply(chunks=[{"choices": [{"delta": {"content": w}}]} for w in "abc"],
                       chunk_delay=0.2))
    deltas = backends[0].stream(ASK)  # a stream left before its end: its connection closes
    assert (await anext(deltas)).text == "a"
    await deltas.aclose()
    assert shared.idle_connections(endpoint) == 0
    assert (await backends[1].sample(ASK)).samples[0].text == "B is right"
    headers = fake.calls[0].headers
    assert headers["User-Agent"].startswith("diffroute/")
    assert headers["Content-Type"] == "application/json"
    for backend in backends:
        await backend.aclose()
    assert not shared.closed and shared.idle_connections(endpoint) == 1
    await shared.aclose()


async def test_a_key_or_header_with_a_line_break_is_refused(
        fake: FakeUpstream, make: MakeBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFROUTE_TEST_KEY", "sk-1\r\nX-Injected: yes")
    backend = make(fake.base_url, api_key="env:DIFFROUTE_TEST_KEY")
    with pytest.raises(ModelUnavailableError, match="line break"):
        await backend.sample(ASK)
    with pytest.raises(ModelUnavailableError, match="line break"):
        await collect(backend)
    assert fake.calls == []
    with pytest.raises(ValidationError, match="line break"):
        OpenAIParams(base_url=fake.base_url, model="m", headers={"X-Team": "a\nb"})


async def test_a_key_a_header_cannot_carry_is_refused_without_showing_it(
        fake: FakeUpstream, make: MakeBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key pasted with curly quotes was a ``UnicodeEncodeError`` (a 500 on every call, a
    failed health check whose log line held the whole ``Authorization`` header)."""
    monkeypatch.setenv("DIFFROUTE_TEST_KEY", "\u201csk-curly-secret\u201d")
    backend = make(fake.base_url, api_key="env:DIFFROUTE_TEST_KEY")
    with pytest.raises(ModelUnavailableError, match="U\\+201C at position 0") as whole:
        await backend.sample(ASK)
    with pytest.raises(ModelUnavailableError) as streamed:
        await collect(backend)
    status = await backend.check()
    assert status.state == "error" and "DIFFROUTE_TEST_KEY" in status.detail
    assert fake.calls == []
    assert all("secret" not in text for text in (str(whole.value), str(streamed.value),
                                                  status.detail))


def test_base_url_must_be_http() -> None:
    with pytest.raises(ValidationError, match="http"):
        OpenAIParams(base_url="ftp://example.org/v1", model="m")
    assert OpenAIParams(base_url="http://h:1/v1/", model="m").base_url == "http://h:1/v1"


def test_retry_after_accepts_seconds_milliseconds_and_http_dates() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)

    assert parse_retry_after({"Retry-After": "12"}) == 12.0
    assert parse_retry_after({"retry-after-ms": "250", "Retry-After": "1"}) == 0.25
    assert parse_retry_after({"Retry-After": later}, now=now.timestamp()) == 30.0
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None
    # not finite: no time given (it reached int() as infinity: a 500); huge: a day at most
    for value in ("inf", "1e999", "nan", "-inf"):
        assert parse_retry_after({"Retry-After": value}) is None
        assert parse_retry_after({"retry-after-ms": value}) is None
    assert parse_retry_after({"Retry-After": "1e300"}) == 86_400.0
    assert parse_retry_after({"Retry-After": "-5"}) == 0.0


# --- the fake itself (used by service tests and benchmarks) --------------------------------


async def test_fake_embeddings_are_deterministic_unit_vectors(fake: FakeUpstream) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(fake.url + EMBEDDINGS, json={"input": ["a", "b", "a"]}) as resp,
    ):
        data = (await resp.json())["data"]

    vectors = [d["embedding"] for d in data]
    assert len(vectors[0]) == fake.embedding_dim
    assert vectors[0] == vectors[2] != vectors[1]
    assert math.isclose(sum(v * v for v in vectors[1]), 1.0)


@pytest.mark.parametrize("choice", [{"index": 0, "message": None, "finish_reason": "stop"},
                                    {"index": 0, "finish_reason": "stop"}, "text"])
async def test_a_forwarded_answer_without_a_message_is_a_protocol_error(
        fake: FakeUpstream, make: MakeBackend, choice: object) -> None:
    """Not an answer to compare (an audit recorded a disagreement with nothing) nor one to
    pass on: the same protocol error as an empty ``choices``."""
    fake.enqueue(Reply(json={"id": "x", "object": "chat.completion", "choices": [choice]}))
    with pytest.raises(UpstreamError) as caught:
        await make(fake.base_url).forward({"model": "m", "messages": [
            {"role": "user", "content": "hi"}]})
    assert "choices.0" in str(caught.value) and caught.value.upstream_status == 200


async def test_a_short_key_does_not_garble_the_upstream_s_errors(
        fake: FakeUpstream, make: MakeBackend) -> None:
    """A local server's placeholder key (``x``, Ollama's documented ``ollama``) is no secret,
    but every occurrence of it was replaced: "max_tokens" read "ma[redacted]_tokens". Keys are
    redacted from the length configured header values are (8), as those are."""
    fake.enqueue(Reply(status=400, json={"error": {
        "message": "max_tokens is too large: 9000 > 8192", "type": "invalid_request_error",
        "param": "max_tokens", "code": None}}))
    backend = make(fake.base_url, api_key="x")
    with pytest.raises(UpstreamRequestError) as caught:
        await backend.sample(ASK)
    assert "max_tokens is too large" in str(caught.value), str(caught.value)
    assert caught.value.param == "max_tokens"  # passed on to the client as the error's param
    assert "[redacted]" not in str(caught.value) + caught.value.body
