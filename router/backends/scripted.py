"""A deterministic, seeded model for tests and simulated pools with a known ground truth.

It ships in the package (like ``structlog.testing``) so that users can simulate a pool too.

How a scripted model answers a prompt:

* the prompt has a *truth* among the ``options`` — :func:`scripted_truth` (a hash of the prompt);
* a *prior* (a name shared by a family of models) picks, per prompt, a *preferred* answer: the
  truth with probability ``accuracy``, otherwise a wrong option — deterministically from
  ``hash(prior, prompt)``, so models sharing a prior share their blind spots;
* each sample is the preferred answer with probability ``sharpness``, else another option at
  random (the model's own sampling noise), from a generator seeded by ``seed``;
* ``shift`` moves that much probability from the preferred answer to a fixed alternative (a
  planted difference of known size); ``refusal_rate`` answers with a refusal instead.

Per-domain blocks override the defaults for requests tagged with that domain, ``rules`` override
by substring of the prompt, and ``drift_after`` switches the model to ``drift`` after that many
requests (a provider silently changing a model).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from profiles.protocol import Sample, SampleRequest, SampleResult, TokenLogprob, Usage
from router.backends.base import CALL_DEADLINE, BackendContext, BackendStatus, StreamDelta
from router.backends.params import Behaviour, ScriptedParams
from router.errors import UpstreamConnectionError, UpstreamError, UpstreamTimeoutError

REFUSAL_TEXT = "I'm sorry, but I can't help with that request."


def _unit(*parts: object) -> float:
    """A deterministic number in [0, 1) from the parts."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def prompt_text(request: SampleRequest) -> str:
    """The text a scripted model keys its behaviour on."""
    if request.completion_prompt is not None:
        return request.completion_prompt
    return "\n".join(m.get("content", "") for m in request.messages if m.get("role") != "system")


def scripted_truth(prompt: str, options: tuple[str, ...] = ("A", "B", "C", "D")) -> str:
    """The correct option of a prompt in a simulated world (use it as the gold answer)."""
    return options[int(_unit("truth", prompt) * len(options))]


class _Resolved:
    """Defaults merged with the request's domain, rule and drift blocks."""

    def __init__(self, params: ScriptedParams, blocks: list[Behaviour]) -> None:
        merged: dict[str, Any] = {
            k: getattr(params, k) for k in Behaviour.model_fields if hasattr(params, k)
        }
        for block in blocks:
            merged.update(block.model_dump(exclude_none=True, exclude={"contains"}))
        self.prior: str = merged["prior"]
        self.accuracy: float = merged["accuracy"]
        self.sharpness: float = merged["sharpness"]
        self.shift: float = merged["shift"]
        self.refusal_rate: float = merged["refusal_rate"]
        self.options: tuple[str, ...] = tuple(merged["options"])
        self.answers: dict[str, float] | None = merged["answers"]
        self.latency_ms: float = merged["latency_ms"]
        self.failure_rate: float = merged["failure_rate"]

    def distribution(self, prompt: str) -> dict[str, float]:
        """The probability of each answer text for this prompt."""
        if self.answers:
            total = sum(self.answers.values())
            return {k: v / total for k, v in self.answers.items()}
        opts = self.options
        truth = scripted_truth(prompt, opts)
        wrong = [o for o in opts if o != truth] or [truth]
        if _unit("acc", self.prior, prompt) < self.accuracy:
            preferred = truth
        else:
            preferred = wrong[int(_unit("wrong", self.prior, prompt) * len(wrong))]
        others = [o for o in opts if o != preferred]
        dist = {o: 0.0 for o in opts}
        dist[preferred] = self.sharpness if others else 1.0
        for o in others:
            dist[o] += (1 - self.sharpness) / len(others)
        if self.shift and others:
            target = others[int(_unit("shift", prompt) * len(others))]
            moved = min(self.shift, dist[preferred])
            dist[preferred] -= moved
            dist[target] += moved
        return dist


class ScriptedBackend:
    """The backend for ``kind: scripted``."""

    def __init__(self, name: str, params: ScriptedParams) -> None:
        self._name = name
        self.params = params
        self.calls = 0
        self._rng = random.Random(params.seed)

    @property
    def name(self) -> str:
        return self._name

    def identity(self) -> Mapping[str, object]:
        return self.params.identity()

    def _resolve(self, request: SampleRequest, prompt: str) -> _Resolved:
        p = self.params
        blocks: list[Behaviour] = [p.domains[d] for d in request.domains if d in p.domains]
        blocks += [r for r in p.rules if r.contains in prompt]
        if p.drift_after is not None and p.drift is not None and self.calls > p.drift_after:
            blocks.append(p.drift)
        return _Resolved(p, blocks)

    def _rng_for(self, request: SampleRequest, prompt: str, index: int = 0) -> random.Random:
        # sample i of a seeded request draws as a request seeded with seed + i would, so a
        # resumed collection reproduces the samples of a whole one
        if request.seed is not None:
            return random.Random(f"{self.params.seed}:{request.seed + index}:{prompt}")
        return self._rng

    async def _begin(self, request: SampleRequest) -> tuple[_Resolved, str, random.Random]:
        self.calls += 1
        prompt = prompt_text(request)
        behaviour = self._resolve(request, prompt)
        rng = self._rng  # failures draw from the backend's own stream, so a retry can succeed
        if behaviour.latency_ms:
            await self._pause(behaviour.latency_ms / 1000)
        if behaviour.failure_rate and rng.random() < behaviour.failure_rate:
            raise UpstreamError(self._name, "scripted failure", status=500, body="scripted")
        return behaviour, prompt, rng

    async def _pause(self, seconds: float) -> None:
        """The scripted latency, within the call's deadline (a timeout at the deadline when
        the latency would pass it, as a slow server's call would end)."""
        deadline = CALL_DEADLINE.get()
        left = None if deadline is None else deadline - asyncio.get_running_loop().time()
        if left is None or seconds < left:
            await asyncio.sleep(seconds)
            return
        await asyncio.sleep(max(0.0, left))
        raise UpstreamTimeoutError(self._name, f"scripted latency of {seconds:g} s is past "
                                   "timeouts.total")

    def keeps_deadline(self) -> bool:
        """Its one wait, the scripted latency, ends by the call's deadline."""
        return True

    def _one(self, behaviour: _Resolved, prompt: str, rng: random.Random,
             top_logprobs: int) -> Sample:
        dist = behaviour.distribution(prompt)
        if behaviour.refusal_rate and rng.random() < behaviour.refusal_rate:
            return Sample(REFUSAL_TEXT, "stop")
        answer = rng.choices(list(dist), weights=list(dist.values()))[0]
        logprobs: tuple[TokenLogprob, ...] = ()
        drawn = None
        if top_logprobs:
            ranked = sorted(dist.items(), key=lambda kv: (-kv[1], kv[0]))[:top_logprobs]
            logprobs = tuple(
                TokenLogprob(tok, math.log(p) if p > 0 else -1e9) for tok, p in ranked
            )
            drawn = TokenLogprob(answer, math.log(dist[answer]))  # the answer is the token
        return Sample(self.params.template.format(answer=answer), "stop", logprobs, drawn)

    async def sample(self, request: SampleRequest) -> SampleResult:
        started = time.perf_counter()
        behaviour, prompt, _ = await self._begin(request)
        samples = tuple(
            self._one(behaviour, prompt, self._rng_for(request, prompt, i), request.top_logprobs)
            for i in range(request.n)
        )
        usage = Usage(len(prompt.split()), sum(len(s.text.split()) for s in samples))
        return SampleResult(self._name, samples, usage, time.perf_counter() - started)

    async def stream(self, request: SampleRequest) -> AsyncIterator[StreamDelta]:
        behaviour, prompt, _ = await self._begin(request)
        sample = self._one(behaviour, prompt, self._rng_for(request, prompt), 0)
        words = sample.text.split(" ")
        for i, word in enumerate(words):
            yield StreamDelta(word if i == 0 else " " + word)
        yield StreamDelta("", "stop", Usage(len(prompt.split()), len(words)))

    async def check(self) -> BackendStatus:
        if self.params.failure_rate >= 1:
            raise UpstreamConnectionError(self._name, "scripted to always fail")
        return BackendStatus("ready", "scripted")

    async def aclose(self) -> None:
        return None


def create(model: Any, context: BackendContext) -> ScriptedBackend:
    params = model.backend
    assert isinstance(params, ScriptedParams)
    return ScriptedBackend(model.name, params)
