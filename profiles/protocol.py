"""The small protocol the diff engine needs from a model.

``profiles`` never imports ``router``: it states here what it needs — send chat messages, get
``n`` samples back with finish reasons, usage and, where the backend gives them, the
log-probabilities of the first generated token — and the router's backends satisfy it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

Message = Mapping[str, str]
"""One chat message: ``{"role": "system" | "user" | "assistant", "content": "..."}``."""


@dataclass(frozen=True, slots=True)
class SampleRequest:
    """What to ask a model: the messages and the decoding settings.

    ``completion_prompt`` is the plain-text rendering used by base (completion) models; when it
    is ``None`` such a backend renders ``messages`` itself. ``top_logprobs > 0`` asks for the
    top alternatives of the first generated token (used to score ``choice`` probes).
    """

    messages: tuple[Message, ...]
    n: int = 1
    temperature: float = 0.7
    max_tokens: int = 64
    stop: tuple[str, ...] = ()
    top_logprobs: int = 0
    seed: int | None = None
    completion_prompt: str | None = None
    domains: tuple[str, ...] = ()
    """Domain tags of the probe or task, when known: scripted backends use them."""


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One alternative for a generated token and its natural-log probability."""

    token: str
    logprob: float


@dataclass(frozen=True, slots=True)
class Sample:
    """One sampled completion."""

    text: str
    finish_reason: str = "stop"
    first_token_logprobs: tuple[TokenLogprob, ...] = ()
    """The most likely first tokens, most likely first (what option probabilities read)."""
    first_token: TokenLogprob | None = None
    """The first token this sample drew, with its logprob, when the backend knows it (a
    sampled token need not be the most likely one, nor among ``first_token_logprobs``)."""


def drawn_among(text: str, ranked: Sequence[TokenLogprob]) -> TokenLogprob | None:
    """The first token ``text`` drew, found among likely first tokens ``ranked``: the longest
    one it starts with (``None`` when none does)."""
    starts = [t for t in ranked if t.token and text.startswith(t.token)]
    return max(starts, key=lambda t: (len(t.token), t.logprob)) if starts else None


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one request (all samples)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class SampleResult:
    """A model's answer to a :class:`SampleRequest`."""

    model: str
    samples: tuple[Sample, ...]
    usage: Usage = field(default_factory=Usage)
    latency_s: float = 0.0


@runtime_checkable
class ModelClient(Protocol):
    """Anything that can be sampled: a backend of the router, or a test double."""

    @property
    def name(self) -> str:
        """The pool name of the model."""
        ...

    def identity(self) -> Mapping[str, object]:
        """The parameters that change this model's behaviour (weights, system prompt, ...).

        Observations are cached under a hash of it, so two models with the same identity share
        observations and a changed system prompt re-collects.
        """
        ...

    async def sample(self, request: SampleRequest) -> SampleResult:
        """Return ``request.n`` samples."""
        ...


def mix_seed(*parts: object) -> int:
    """A seed in [0, 2³¹) from several parts, none of which can replace another.

    Backends use it to combine a configured seed with the request's seed (which carries the
    model's identity) or with the model's name: two models given one seed still draw
    independent samples.
    """
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 2**31
