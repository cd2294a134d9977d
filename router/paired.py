"""The paired-call engine: policy → paired backend calls → compare → record.

The HTTP handler parses a request into a :class:`PairedCall` (:meth:`PairedEngine.prepare`,
which asks the :class:`~router.decision.Decider`), then either awaits
:meth:`PairedEngine.complete` or iterates :meth:`PairedEngine.stream`. Roles:

* **audit** — the primary answers (that is what the client gets); the partner answers the same
  messages concurrently, or, in ``review`` mode, reviews the primary's answer afterwards. The two
  are compared on the response path (cheap) and recorded to the :class:`LiveDiffSink` off it.
* **assist** — the partner (the assistant) answers for the primary; on a ``shadow_rate``
  fraction of requests the primary also answers in the background, so the pair's live agreement
  stays measured; that comparison is recorded when it finishes.

A partner that fails never fails the client's request: the outcome carries the error instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import structlog

from profiles.protocol import Message, SampleRequest, SampleResult
from router.backends.base import StreamDelta
from router.compare import Comparison, compare, compare_review
from router.decision import ROLES, Decider, Decision, Role, RouteRequest
from router.errors import BadRequestError, DiffrouteError, UnknownModelError
from router.logging import log_generation
from router.pool import Pool

AuditMode = Literal["concurrent", "review"]
AUTO = "auto"

REVIEW_INSTRUCTION = (
    "You are auditing another assistant. Review its answer to the conversation above. "
    "If the answer is correct and complete, reply with exactly AGREE. Otherwise reply "
    "DISAGREE on the first line, then give the correct answer."
)

_log = structlog.get_logger("diffroute.paired")


# --- what the client asked for ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed ``model`` field: a pool model (``role`` None) or a virtual model."""

    role: Role | None
    primary: str | None
    """``None`` means ``auto``: the policy picks the primary too."""


def parse_model(model: str, pool: Pool) -> Target:
    """``name`` → plain; ``audit:name`` / ``assist:name`` / ``…:auto`` → paired.

    The one place where virtual model names are matched; unknown names raise
    :class:`UnknownModelError` (404).
    """
    prefix, sep, rest = model.partition(":")
    if sep and prefix in ROLES:
        role: Role = "audit" if prefix == "audit" else "assist"
        if rest == AUTO:
            return Target(role, None)
        if rest not in pool:
            raise UnknownModelError(rest, pool.names)
        return Target(role, rest)
    if model not in pool:
        raise UnknownModelError(model, pool.names)
    return Target(None, model)


def virtual_models(names: Sequence[str]) -> list[str]:
    """Every virtual model name the service answers to, for ``GET /v1/models``."""
    return [f"{role}:{name}" for role in ROLES for name in (AUTO, *names)]


@dataclass(frozen=True, slots=True)
class PairedOptions:
    """Per-request options (the ``diffroute`` body object or ``x-diffroute-*`` headers)."""

    role: Role | None = None
    partner: str | None = None
    candidates: tuple[str, ...] | None = None
    audit_mode: AuditMode | None = None
    shadow_rate: float | None = None
    domain: str | None = None


@dataclass(frozen=True, slots=True)
class PairedCall:
    """A prepared paired call: the decision and what to send."""

    decision: Decision
    request: SampleRequest
    audit_mode: AuditMode = "concurrent"
    shadow: bool = False
    request_id: str = ""

    @property
    def answering(self) -> str:
        """The model whose answer the client gets."""
        return self.decision.primary if self.decision.role == "audit" else self.decision.partner

    @property
    def domains(self) -> tuple[str, ...]:
        weights = self.decision.domains
        return tuple(sorted((d for d, w in weights.items() if w > 0), key=lambda d: -weights[d]))


# --- live-diff recording ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LiveDiffRecord:
    """One comparison of a paired call (agreements too: rates need every comparison)."""

    id: str
    created_at: float
    request_id: str
    primary: str
    partner: str
    role: Role
    answered_by: str
    mode: str
    """``concurrent`` / ``review`` for audits, ``shadow`` for assists."""
    domains: tuple[str, ...]
    prompt_digest: str
    messages: tuple[Message, ...]
    primary_text: str
    partner_text: str
    comparison: Comparison
    reason: str

    @property
    def flagged(self) -> bool:
        return self.comparison.flagged


class LiveDiffSink(Protocol):
    """Where comparisons go. Returns the stored live diff's id, or ``None`` if not kept.

    The in-memory default keeps flagged comparisons only; a durable sink (SQLite) counts every
    comparison and stores the flagged ones under ``record.id``.
    """

    async def record(self, record: LiveDiffRecord) -> str | None: ...


class InMemoryLiveDiffSink:
    """The default sink: the last ``limit`` flagged records, and counts of everything."""

    def __init__(self, limit: int = 10_000) -> None:
        self.records: deque[LiveDiffRecord] = deque(maxlen=limit)
        self.comparisons = 0
        self.disagreements = 0

    async def record(self, record: LiveDiffRecord) -> str | None:
        self.comparisons += 1
        if not record.flagged:
            return None
        self.disagreements += 1
        self.records.append(record)
        return record.id

    def get(self, live_diff_id: str) -> LiveDiffRecord | None:
        return next((r for r in self.records if r.id == live_diff_id), None)


class Comparer(Protocol):
    """``compare(primary_text, partner_text, domains, *, pair)`` → :class:`Comparison`."""

    def __call__(self, primary_text: str, partner_text: str, domains: Sequence[str], *,
                 pair: tuple[str, str] | None = None) -> Comparison: ...


def new_live_diff_id() -> str:
    """128 random bits, as uuid4 has, at a fraction of its cost."""
    return "ld_" + os.urandom(16).hex()


def prompt_digest(messages: Sequence[Message]) -> str:
    """A stable digest of a conversation (records stay joinable when prompts are redacted)."""
    canonical = json.dumps([dict(m) for m in messages], sort_keys=True, ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


# --- the outcome -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PairedOutcome:
    """What a paired call produced; :meth:`to_json` is the response's ``diffroute`` object."""

    call: PairedCall
    answer: SampleResult | None
    """The answering model's result (``None`` for streams, whose text went out already)."""
    comparison: Comparison | None = None
    live_diff_id: str | None = None
    partner_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        d, c = self.call.decision, self.comparison
        out: dict[str, Any] = {
            "role": d.role, "primary": d.primary, "partner": d.partner,
            "answered_by": self.call.answering,
            "agreement": None if c is None else round(c.agreement, 6),
            "flagged": False if c is None else c.flagged,
            "live_diff_id": self.live_diff_id, "reason": d.reason, "score": d.score,
            "domains": list(self.call.domains), "profile_version": d.profile_version,
        }
        if d.role == "audit":
            out["audit_mode"] = self.call.audit_mode
        else:
            out["shadow"] = self.call.shadow
        if self.partner_error is not None:
            out["partner_error"] = self.partner_error
        return out


# --- the engine ------------------------------------------------------------------------------


class PairedEngine:
    """Runs paired calls against the pool; one per app."""

    def __init__(
        self,
        pool: Pool,
        decider: Callable[[], Decider],
        sink: LiveDiffSink,
        *,
        comparer: Comparer = compare,
        review_comparer: Comparer = compare_review,
        default_shadow_rate: float = 0.1,
        ack_records: bool = False,
        log_prompts: bool = False,
        rng: Callable[[], float] = random.random,
    ) -> None:
        """``decider`` is read per request (pairings can be replaced at run time).

        ``ack_records``: await the sink before answering (a durable sink that must not lose an
        id it returned); otherwise records are written in the background.
        """
        self.pool = pool
        self._decider = decider
        self.sink = sink
        self.comparer = comparer
        self.review_comparer = review_comparer
        self.default_shadow_rate = default_shadow_rate
        self.ack_records = ack_records
        self.log_prompts = log_prompts
        self._rng = rng
        self._background: set[asyncio.Task[None]] = set()

    # -- policy ---------------------------------------------------------------------------------

    def decide(self, role: Role, primary: str | None, options: PairedOptions,
               task: str) -> Decision:
        """The policy's decision; a partner requested by the client replaces the policy's."""
        for name in options.candidates or ():
            self.pool.get(name)
        decider = self._decider()
        if options.partner is not None:
            self.pool.get(options.partner)
        if options.partner is not None and primary is not None:
            # both ends are given: no policy call, so this works without profiles too
            return self._requested(role, primary, options.partner, options, decider.version)
        decision = decider.decide(RouteRequest(
            role=role, primary=primary, task=task, candidates=options.candidates,
            domain=options.domain))
        if options.partner is None:
            return decision
        return self._requested(role, decision.primary, options.partner, options,
                               decision.profile_version, decision.domains)

    @staticmethod
    def _requested(role: Role, primary: str, partner: str, options: PairedOptions,
                   version: str, domains: Mapping[str, float] | None = None) -> Decision:
        if partner == primary:
            raise BadRequestError(f"partner '{partner}' is the primary itself",
                                  param="diffroute.partner")
        if domains is None:
            domains = {options.domain: 1.0} if options.domain else {}
        return Decision(primary, partner, role, None, "partner requested by the client",
                        domains=domains, profile_version=version)

    def prepare(self, target: Target, options: PairedOptions, request: SampleRequest,
                task: str, request_id: str = "") -> PairedCall:
        """Decide the pair and the mode of one paired call."""
        role = target.role or options.role
        if role is None:
            raise BadRequestError("a paired call needs a role", param="diffroute.role")
        if target.role is not None and options.role not in (None, target.role):
            raise BadRequestError(
                f"diffroute.role '{options.role}' contradicts model '{target.role}:…'",
                param="diffroute.role")
        decision = self.decide(role, target.primary, options, task)
        rate = self.default_shadow_rate if options.shadow_rate is None else options.shadow_rate
        shadow = role == "assist" and rate > 0 and self._rng() < rate
        return PairedCall(decision, request, options.audit_mode or "concurrent", shadow,
                          request_id)

    # -- non-streaming --------------------------------------------------------------------------

    async def complete(self, call: PairedCall) -> PairedOutcome:
        """Run the call; the primary's (audit) or assistant's (assist) failure is raised."""
        if call.decision.role == "assist":
            answer = await self._sample(call.answering, call.request, call)
            if call.shadow:
                self._spawn(self._shadow(call, answer.samples[0].text))
            return PairedOutcome(call, answer)
        if call.audit_mode == "review":
            answer = await self._sample(call.decision.primary, call.request, call)
            text = answer.samples[0].text
            review, error = await self._partner(call, _review_request(call.request, text))
            return await self._conclude(call, answer, text, review, error)
        partner = asyncio.create_task(self._partner(call, _partner_request(call.request)))
        try:
            answer = await self._sample(call.decision.primary, call.request, call)
        except BaseException:
            partner.cancel()
            raise
        partner_text, error = await partner
        return await self._conclude(call, answer, answer.samples[0].text, partner_text, error)

    # -- streaming ------------------------------------------------------------------------------

    def stream(self, call: PairedCall) -> PairedStream:
        """The answering model's deltas, then :meth:`PairedStream.outcome`."""
        return PairedStream(self, call)

    # -- pieces ---------------------------------------------------------------------------------

    async def _sample(self, model: str, request: SampleRequest,
                      call: PairedCall) -> SampleResult:
        started = time.perf_counter()
        result = await self.pool.sample(model, request)
        log_generation(_log, model, request, result.usage, time.perf_counter() - started,
                       texts=[s.text for s in result.samples], log_prompts=self.log_prompts,
                       role=call.decision.role, request_id=call.request_id)
        return result

    async def _partner(self, call: PairedCall,
                       request: SampleRequest) -> tuple[str | None, str | None]:
        """The partner's text, or its error: a failing partner must not fail the response."""
        try:
            result = await self._sample(call.decision.partner, request, call)
        except DiffrouteError as exc:
            _log.warning("paired.partner_failed", partner=call.decision.partner,
                         error=str(exc), request_id=call.request_id)
            return None, str(exc)
        return result.samples[0].text, None

    async def _shadow(self, call: PairedCall, assistant_text: str) -> None:
        """The primary answers in the background; its answer is compared with the assistant's."""
        primary = call.decision.primary
        try:
            result = await self._sample(primary, _partner_request(call.request), call)
        except DiffrouteError as exc:
            _log.warning("paired.shadow_failed", primary=primary, error=str(exc),
                         request_id=call.request_id)
            return
        primary_text = result.samples[0].text
        comparison = self._compare(call, primary_text, assistant_text, review=False)
        await self._store(self._record(call, primary_text, assistant_text, comparison,
                                       "shadow", new_live_diff_id()))

    def _compare(self, call: PairedCall, primary_text: str, partner_text: str, *,
                 review: bool) -> Comparison:
        comparer = self.review_comparer if review else self.comparer
        pair = (call.decision.primary, call.decision.partner)
        return comparer(primary_text, partner_text, call.domains, pair=pair)

    async def _conclude(self, call: PairedCall, answer: SampleResult | None, primary_text: str,
                        partner_text: str | None, error: str | None) -> PairedOutcome:
        if partner_text is None:
            return PairedOutcome(call, answer, partner_error=error)
        try:
            comparison = self._compare(call, primary_text, partner_text,
                                       review=call.audit_mode == "review")
        except Exception as exc:  # a comparison must never fail the client's answer
            _log.error("paired.compare_failed", error=repr(exc), request_id=call.request_id)
            return PairedOutcome(call, answer)
        record = self._record(call, primary_text, partner_text, comparison, call.audit_mode,
                              new_live_diff_id())
        if self.ack_records:
            stored = await self._store(record)
        else:
            self._spawn(self._store(record))
            stored = record.id if comparison.flagged else None
        return PairedOutcome(call, answer, comparison, stored)

    def _record(self, call: PairedCall, primary_text: str, partner_text: str,
                comparison: Comparison, mode: str, record_id: str) -> LiveDiffRecord:
        d = call.decision
        return LiveDiffRecord(
            id=record_id, created_at=time.time(), request_id=call.request_id,
            primary=d.primary, partner=d.partner, role=d.role, answered_by=call.answering,
            mode=mode, domains=call.domains, prompt_digest=prompt_digest(call.request.messages),
            messages=call.request.messages, primary_text=primary_text,
            partner_text=partner_text, comparison=comparison, reason=d.reason)

    async def _store(self, record: LiveDiffRecord) -> str | None:
        """Hand the record to the sink; a failing sink is logged, never raised."""
        try:
            stored = await self.sink.record(record)
        except Exception as exc:  # a broken sink must not break answers
            _log.error("live_diff.record_failed", error=repr(exc), request_id=record.request_id)
            return None
        if record.flagged:
            _log.info("live_diff", live_diff_id=stored, primary=record.primary,
                      partner=record.partner, role=record.role, mode=record.mode,
                      agreement=record.comparison.agreement, domains=list(record.domains),
                      request_id=record.request_id)
        return stored

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(_discard(work))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self, grace_s: float | None = 10.0) -> None:
        """Let background shadows and records finish (``grace_s``; 0 or None: no limit)."""
        pending = set(self._background)
        if not pending:
            return
        _done, late = await asyncio.wait(pending, timeout=grace_s or None)
        for task in late:
            task.cancel()


async def _discard(work: Any) -> None:
    try:
        await work
    except Exception as exc:  # background work must log, not raise into the loop
        _log.error("paired.background_failed", error=repr(exc))


def _partner_request(request: SampleRequest) -> SampleRequest:
    return dataclasses.replace(request, n=1, top_logprobs=0)


def _review_request(request: SampleRequest, answer: str) -> SampleRequest:
    review: Message = {"role": "user",
                       "content": f"{REVIEW_INSTRUCTION}\n\nAnswer to review:\n{answer}"}
    return dataclasses.replace(request, n=1, top_logprobs=0,
                               messages=(*request.messages, review), completion_prompt=None)


class PairedStream:
    """Iterate for the answering model's deltas; then ``await outcome()``.

    For a concurrent audit the partner starts before the first token is read; for a review it
    starts when the primary's answer is complete. Use as an async context manager so that an
    abandoned stream (client gone) cancels the partner.
    """

    def __init__(self, engine: PairedEngine, call: PairedCall) -> None:
        self._engine = engine
        self.call = call
        self._parts: list[str] = []
        self._partner: asyncio.Task[tuple[str | None, str | None]] | None = None
        self._complete = False

    async def __aenter__(self) -> PairedStream:
        call = self.call
        if call.decision.role == "audit" and call.audit_mode == "concurrent":
            self._partner = asyncio.create_task(
                self._engine._partner(call, _partner_request(call.request)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._partner is not None and not self._partner.done():
            self._partner.cancel()

    async def deltas(self) -> AsyncIterator[StreamDelta]:
        started = time.perf_counter()
        usage = None
        async for delta in self._engine.pool.stream(self.call.answering, self.call.request):
            self._parts.append(delta.text)
            usage = delta.usage or usage
            yield delta
        self._complete = True
        log_generation(_log, self.call.answering, self.call.request, usage,
                       time.perf_counter() - started, texts=["".join(self._parts)],
                       log_prompts=self._engine.log_prompts, role=self.call.decision.role,
                       request_id=self.call.request_id)

    async def outcome(self) -> PairedOutcome:
        """Wait for the partner (audit) or start the shadow (assist); compare; record."""
        engine, call, text = self._engine, self.call, "".join(self._parts)
        if call.decision.role == "assist":
            if call.shadow and self._complete:
                engine._spawn(engine._shadow(call, text))
            return PairedOutcome(call, None)
        if self._partner is None:
            self._partner = asyncio.create_task(
                engine._partner(call, _review_request(call.request, text)))
        partner_text, error = await self._partner
        return await engine._conclude(call, None, text, partner_text, error)
