"""Embedders: the hash default, MiniLM in numpy (real weights, offline), the OpenAI backend."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from profiles.embed import (
    Embedder,
    EmbeddingError,
    HashEmbedder,
    MiniLMEmbedder,
    OpenAIEmbedder,
    make_embedder,
    usable_rows,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SENTENCE = "The cat sat on the mat."
REPO = Path(__file__).resolve().parents[2]


# --- hash ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dim", "expected"),
    [
        (256, [(179, -0.354943), (145, 0.266207), (22, 0.177471)]),
        (64, [(51, -0.505291), (41, -0.336861), (6, 0.252646)]),
    ],
)
def test_hash_embedder_has_fixed_values(dim: int, expected: list[tuple[int, float]]) -> None:
    vector = HashEmbedder(dim).embed([SENTENCE])[0]
    for index, value in expected:
        assert vector[index] == pytest.approx(value, abs=1e-6)


def test_hash_embedder_is_identical_in_another_process_with_another_hash_seed() -> None:
    code = (
        "from profiles.embed import HashEmbedder;"
        f"print(HashEmbedder(256).embed([{SENTENCE!r}])[0].tobytes().hex())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    here = HashEmbedder(256).embed([SENTENCE])[0]
    assert bytes.fromhex(out.stdout.strip()) == here.tobytes()


def test_hash_embedder_rows_are_unit_float32_even_for_the_empty_text() -> None:
    vectors = HashEmbedder(128).embed(["one text", "another, longer piece of text", ""])
    assert vectors.shape == (3, 128)
    assert vectors.dtype == np.float32
    assert np.linalg.norm(vectors, axis=1) == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)


# Answers SmolLM2 really gave in a default-suite build (issue #19; tests/profiles/fixtures).
FENCE, RULE, EMOJI = "```", "---", "🌟🌟🌍🌈🌊🌌🌊🌊🌌"
CODE = '```json\n{\n  "name": "Ana",\n  "age": 30\n}\n```'
EDGE_TEXTS = [FENCE, RULE, EMOJI, "🌈🌈🌈", "", " \n\t ", "\u200b", "。！？", CODE,
              "word " * 20_000, "🌊" * 50_000]


def test_hash_embedder_gives_every_text_a_unit_vector() -> None:
    vectors = HashEmbedder().embed(EDGE_TEXTS)
    assert np.all(np.isfinite(vectors))
    assert np.linalg.norm(vectors, axis=1) == pytest.approx([1.0] * len(EDGE_TEXTS), abs=1e-5)


def test_hash_embedder_texts_without_words_agree_with_themselves_only() -> None:
    fence, fence_again, rule, emoji, code = HashEmbedder().embed(
        [FENCE, FENCE, RULE, EMOJI, CODE])
    assert float(fence @ fence_again) == pytest.approx(1.0, abs=1e-6)  # two models answering ```
    assert abs(float(fence @ code)) < 0.2  # ``` vs a block of code: apart
    assert abs(float(fence @ rule)) < 0.2 and abs(float(rule @ emoji)) < 0.3
    # content-dependent: emoji sequences sharing symbols are closer than unrelated ones
    a, b, c = HashEmbedder().embed(["🌊🌊🌌", "🌊🌌🌌", "---"])
    assert float(a @ b) > float(a @ c) + 0.3


def test_hash_embedder_empty_and_whitespace_share_one_fixed_vector() -> None:
    empty, spaces, newline, *others = HashEmbedder().embed(
        ["", "   ", "\n\t", "empty", "nothing", "(no answer)", FENCE, EMOJI])
    assert np.array_equal(empty, spaces) and np.array_equal(empty, newline)
    assert max(abs(float(empty @ other)) for other in others) < 0.3


def test_hash_embedder_keeps_the_vectors_of_texts_with_words() -> None:
    # symbols next to words are ignored as before: the fallback only serves texts without words
    plain, fenced = HashEmbedder().embed(["print(x)", "```print(x)```"])
    assert np.array_equal(plain, fenced)


def test_usable_rows_flags_zero_and_non_finite_rows() -> None:
    rows = np.array([[1.0, 0.0], [0.0, 0.0], [np.nan, 1.0], [np.inf, 0.0], [0.0, -2.0]])
    assert usable_rows(rows).tolist() == [True, False, False, False, True]


def test_hash_embedder_puts_similar_texts_closer_than_unrelated() -> None:
    a, b, c = HashEmbedder().embed(
        [SENTENCE, "A cat was sitting on the mat.", "Stock markets fell sharply today."]
    )
    assert float(a @ b) > float(a @ c) + 0.3


async def test_hash_embedder_aembed_matches_embed() -> None:
    embedder = HashEmbedder(32)
    assert np.array_equal(await embedder.aembed(["x y z"]), embedder.embed(["x y z"]))


# --- MiniLM ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder()


def test_minilm_loads_offline_and_orders_by_meaning(
    minilm: MiniLMEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    food, bread, baby, horse = minilm.embed(
        [
            "A man is eating food.",
            "A man is eating a piece of bread.",
            "The girl is carrying a baby.",
            "A man is riding a horse.",
        ]
    )
    assert float(food @ bread) > float(food @ horse) > float(food @ baby)
    # sentence-transformers' documentation gives 0.7553 for this pair with all-MiniLM-L6-v2:
    # a wrong layer, GELU or pooling would move it far more than 0.01.
    assert float(food @ bread) == pytest.approx(0.7553, abs=0.01)


def test_minilm_rows_are_unit_and_independent_of_batching(minilm: MiniLMEmbedder) -> None:
    texts = ["short", "a considerably longer sentence that needs padding in its batch", "mid one"]
    together = minilm.embed(texts)
    alone = np.vstack([minilm.embed([t]) for t in texts])
    assert together.shape == (3, minilm.dim) == (3, 384)
    assert np.linalg.norm(together, axis=1) == pytest.approx([1.0] * 3, abs=1e-5)
    # Padding must be masked out: a padded row equals the same text embedded alone.
    assert np.allclose(together, alone, atol=1e-5)
    assert minilm.embed([]).shape == (0, 384)


async def test_minilm_aembed_from_concurrent_tasks(minilm: MiniLMEmbedder) -> None:
    first, second = await asyncio.gather(minilm.aembed(["alpha"]), minilm.aembed(["alpha"]))
    assert np.allclose(first, second, atol=1e-6)


def test_minilm_gives_every_text_a_unit_vector(minilm: MiniLMEmbedder) -> None:
    vectors = minilm.embed(EDGE_TEXTS)
    assert np.all(np.isfinite(vectors))
    assert np.linalg.norm(vectors, axis=1) == pytest.approx([1.0] * len(EDGE_TEXTS), abs=1e-5)
    fence, fence_again, code, empty, spaces = minilm.embed([FENCE, FENCE, CODE, "", " \n\t "])
    assert np.allclose(fence, fence_again, atol=1e-6)
    assert np.allclose(empty, spaces, atol=1e-6)  # the tokenizer drops whitespace
    assert float(fence @ code) < 0.9


def test_minilm_truncates_long_text_to_its_window(minilm: MiniLMEmbedder) -> None:
    # past 256 word pieces nothing counts: a long text equals its own longer version
    head = "the cat sat on the mat " * 60  # about 360 word pieces
    long, longer = minilm.embed([head, head + "stock markets fell sharply " * 500])
    assert np.allclose(long, longer, atol=1e-5)


def test_minilm_tokenizes_only_what_its_window_can_hold(minilm: MiniLMEmbedder) -> None:
    """A 1 MB task was tokenized whole (2–3 s of CPU per ``POST /v1/route``) for 256 pieces."""
    text = "What is the capital of Peru? " * 36_000
    model = minilm._loaded()
    given: list[int] = []
    tokenizer = model._tokenizer

    class Spy:
        def encode_batch(self, texts: list[str]) -> Any:
            given.extend(len(t) for t in texts)
            return tokenizer.encode_batch(texts)

    model._tokenizer = Spy()  # type: ignore[assignment]
    try:
        whole = minilm.embed([text])
    finally:
        model._tokenizer = tokenizer
    assert given and max(given) <= 100 * 256
    assert np.allclose(whole, minilm.embed([text[:20_000]]), atol=1e-5)


def test_minilm_reports_missing_model_dir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        MiniLMEmbedder(model_dir=tmp_path).embed(["x"])


# --- OpenAI-compatible -------------------------------------------------------------------------


async def _serve(handler: Handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/v1/embeddings", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/v1"


async def _embeddings(request: web.Request) -> web.Response:
    body = await request.json()
    assert request.headers["Authorization"] == "Bearer k"
    # Answer out of order and unnormalised: the client must sort by index and normalise.
    data = [
        {"object": "embedding", "index": i, "embedding": [float(len(text)), 0.0, 3.0]}
        for i, text in enumerate(body["input"])
    ]
    return web.json_response({"object": "list", "model": body["model"], "data": data[::-1]})


async def _failing(request: web.Request) -> web.Response:
    return web.json_response({"error": {"message": "boom"}}, status=500)


async def test_openai_embedder_posts_and_normalises() -> None:
    runner, base = await _serve(_embeddings)
    try:
        async with aiohttp.ClientSession() as session:
            embedder = OpenAIEmbedder(base, "text-embed", api_key="k", http_session=session)
            vectors = await embedder.aembed(["abcd", ""])
        assert embedder.dim == 3
        assert vectors[0] == pytest.approx([0.8, 0.0, 0.6])
        # the empty text is sent as "(empty)" (7 characters): OpenAI refuses empty inputs
        assert vectors[1] == pytest.approx(np.array([7.0, 0.0, 3.0]) / np.sqrt(58.0))
        assert embedder.name == "openai:text-embed"
    finally:
        await runner.cleanup()


async def test_openai_embedder_sends_whitespace_as_empty_and_cuts_long_text() -> None:
    seen: list[list[str]] = []

    async def record(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body["input"])
        data = [{"index": i, "embedding": [1.0, float(i)]} for i in range(len(body["input"]))]
        return web.json_response({"data": data})

    runner, base = await _serve(record)
    try:
        embedder = OpenAIEmbedder(base, "m", max_chars=10)
        vectors = await embedder.aembed([" \n", "x" * 25, FENCE])
        assert seen == [["(empty)", "x" * 10, FENCE]]
        assert np.all(usable_rows(vectors))
    finally:
        await runner.cleanup()


async def test_openai_embedder_raises_embedding_error_with_status_and_body() -> None:
    runner, base = await _serve(_failing)
    try:
        async with aiohttp.ClientSession() as session:
            embedder = OpenAIEmbedder(base, "m", http_session=session)
            with pytest.raises(EmbeddingError) as caught:
                await embedder.aembed(["x"])
        assert caught.value.status == 500
        assert "boom" in caught.value.body
    finally:
        await runner.cleanup()


async def test_openai_embedder_sync_path_in_a_thread() -> None:
    runner, base = await _serve(_embeddings)
    try:
        embedder = OpenAIEmbedder(base, "m", api_key="k")
        vectors = await asyncio.to_thread(embedder.embed, ["abcd"])
        assert vectors[0] == pytest.approx([0.8, 0.0, 0.6])
    finally:
        await runner.cleanup()


async def test_openai_embedder_unreachable_is_an_embedding_error() -> None:
    runner, base = await _serve(_failing)
    await runner.cleanup()  # the port is now closed
    embedder = OpenAIEmbedder(base, "m")
    with pytest.raises(EmbeddingError) as caught:
        await embedder.aembed(["x"])
    assert caught.value.status is None


# --- factory -----------------------------------------------------------------------------------


def test_make_embedder_builds_each_kind() -> None:
    assert make_embedder("hash", dim=16).dim == 16
    assert make_embedder("minilm").name == "all-MiniLM-L6-v2"
    openai = make_embedder("openai", base_url="http://127.0.0.1:9/v1", model="m")
    assert isinstance(openai, OpenAIEmbedder)
    assert all(isinstance(make_embedder(k), Embedder) for k in ("hash", "minilm"))
    with pytest.raises(ValueError, match="unknown embedder"):
        make_embedder("word2vec")


def test_cached_embedder_embeds_each_text_once_and_returns_the_same_vectors() -> None:
    from profiles.embed import CachedEmbedder

    class Counting:
        """The hash embedder, counting the texts it is asked for."""

        def __init__(self) -> None:
            self.inner = HashEmbedder(64)
            self.asked: list[str] = []

        @property
        def name(self) -> str:
            return self.inner.name

        @property
        def dim(self) -> int:
            return self.inner.dim

        def embed(self, texts: Sequence[str]) -> np.ndarray:
            self.asked += list(texts)
            return self.inner.embed(texts)

        async def aembed(self, texts: Sequence[str]) -> np.ndarray:
            return self.embed(texts)

    counting = Counting()
    cached = CachedEmbedder(counting, max_texts=8)
    texts = ["a cat", "a dog", "a cat"]
    first = cached.embed(texts)
    assert np.array_equal(first, HashEmbedder(64).embed(texts))
    assert counting.asked == ["a cat", "a dog"]
    assert np.array_equal(cached.embed(["a dog"]), first[1:2]) and len(counting.asked) == 2
    assert cached.embed([]).shape == (0, 64) and cached.name == counting.name
