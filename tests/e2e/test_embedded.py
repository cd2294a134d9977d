"""The embedded default pool, end to end: real local models behind the real service.

No config: the service runs :func:`router.embedded.default_settings` (SmolLM2 and Gemma 3 in
process with llama.cpp) with the app's default pairing policy — nothing here picks a partner.
The official ``openai`` client talks to it over a socket. One server serves the whole module
because loading the models takes seconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest
import pytest_asyncio
from openai.types.chat import ChatCompletionMessageParam

from router.embedded import default_settings
from router.pairing.decider import build_decider
from tests.e2e.harness import Running, serve

pytestmark = [pytest.mark.local, pytest.mark.asyncio(loop_scope="module")]

ASK: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the capital of France? Answer in one word."}]
MAX_TOKENS = 8


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def embedded(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    """The service with no config, its default decider, and a fresh data dir."""
    data_dir: Path = tmp_path_factory.mktemp("embedded") / "data"
    async with serve(default_settings(data_dir), decider_factory=build_decider) as running:
        yield running


def client(running: Running) -> openai.AsyncOpenAI:
    # the first call loads the models: allow for a slow, shared machine
    return openai.AsyncOpenAI(base_url=running.base_url, api_key="unused", max_retries=0,
                              timeout=180)


async def families(running: Running) -> dict[str, str]:
    """Pool model → family, as the service lists them in ``GET /v1/models``."""
    listing = await client(running).models.list()
    out: dict[str, str] = {}
    for model in listing.data:
        info: dict[str, Any] = (model.model_extra or {}).get("diffroute") or {}
        if info.get("kind") == "pool":
            out[model.id] = info["family"]
    return out


async def test_audit_smollm2_is_audited_by_a_gemma_model(embedded: Running) -> None:
    raw = await client(embedded).chat.completions.with_raw_response.create(
        model="audit:smollm2", messages=ASK, max_tokens=MAX_TOKENS,
        temperature=0)
    completion = raw.parse()
    assert completion.model == "smollm2"
    assert isinstance(completion.choices[0].message.content, str)
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    audit = (completion.model_extra or {}).get("diffroute")
    assert isinstance(audit, dict), "a paired completion carries the diffroute object"
    assert audit["role"] == "audit"
    assert audit["primary"] == "smollm2" and audit["answered_by"] == "smollm2"
    family = await families(embedded)
    assert family[audit["partner"]] == "gemma3", audit  # divergent priors: the other family
    assert "partner_error" not in audit, audit["partner_error"]
    assert 0.0 <= audit["agreement"] <= 1.0  # the auditor answered and was compared
    assert isinstance(audit["flagged"], bool)
    assert audit["reason"]
    assert raw.headers["x-diffroute-partner"] == audit["partner"]


async def test_plain_proxy_to_gemma3(embedded: Running) -> None:
    completion = await client(embedded).chat.completions.create(
        model="gemma3", messages=ASK, max_tokens=MAX_TOKENS)
    assert completion.model == "gemma3"
    assert completion.object == "chat.completion"
    assert isinstance(completion.choices[0].message.content, str)
    assert completion.usage is not None
    assert 0 < completion.usage.completion_tokens <= MAX_TOKENS
    assert "diffroute" not in (completion.model_extra or {})


async def test_streaming_smollm2(embedded: Running) -> None:
    stream = await client(embedded).chat.completions.create(
        model="smollm2", messages=ASK, max_tokens=MAX_TOKENS, stream=True,
        temperature=0)
    pieces: list[str] = []
    finish: list[str] = []
    async for chunk in stream:
        assert chunk.model == "smollm2"
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            if choice.finish_reason is not None:
                finish.append(choice.finish_reason)
    assert "".join(pieces).strip(), "the model streamed some text"
    assert sum(1 for p in pieces if p) >= 1
    assert finish and finish[-1] in ("stop", "length")


async def test_every_domain_of_the_suite_gets_both_roles(embedded: Running) -> None:
    """A task from each domain of the shipped suite (a probe's question, as a user would ask
    it) gets an auditor and an assistant; ordinary small talk about the model too."""
    from profiles.suite import load_suite
    from router.pairing.index import question_text

    first: dict[str, str] = {}
    for probe in load_suite("default").probes:
        first.setdefault(probe.domains[0], question_text(probe))
    tasks = [*first.values(), "Do you have feelings?"]
    assert len(first) == 12
    for task in tasks:
        for model in ("audit:smollm2", "assist:smollm2", "audit:auto", "assist:auto"):
            completion = await client(embedded).chat.completions.create(
                model=model, messages=[{"role": "user", "content": task}], max_tokens=2,
                temperature=0)
            pair = (completion.model_extra or {}).get("diffroute")
            assert isinstance(pair, dict) and pair["partner"] != pair["primary"], (task, model)


async def test_an_empty_stop_string_stops_nothing_and_logprobs_alone_are_given(
        embedded: Running) -> None:
    """``stop: [""]`` used to end a local model's answer before its first token; ``logprobs``
    without ``top_logprobs`` used to give ``null``."""
    ask = client(embedded).chat.completions.create
    plain = await ask(model="smollm2", messages=ASK, max_tokens=MAX_TOKENS, temperature=0,
                      seed=1)
    stopped = await ask(model="smollm2", messages=ASK, max_tokens=MAX_TOKENS, temperature=0,
                        seed=1, stop=[""], logprobs=True)
    assert plain.choices[0].message.content
    assert stopped.choices[0].message.content == plain.choices[0].message.content
    logprobs = stopped.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert logprobs.content[0].logprob <= 0 and logprobs.content[0].top_logprobs == []
