"""The paired-call engine: decision → paired backend calls → compare → record.

The HTTP handler turns a request into a :class:`~router.paired.call.PairedCall`
(:meth:`PairedEngine.prepare`, which asks the pairing service), then either awaits
:meth:`PairedEngine.complete` or iterates :meth:`PairedEngine.stream`. Roles:

* **audit** — the primary answers (that is what the client gets); the partner answers the same
  messages concurrently, or, in ``review`` mode, reviews the primary's answer afterwards. The two
  are compared on the response path (cheap) and recorded to the :class:`LiveDiffSink` off it.
* **assist** — the partner (the assistant) answers for the primary; on a ``shadow_rate``
  fraction of requests the primary also answers in the background, so the pair's live agreement
  stays measured; that comparison is recorded when it finishes. An assistant that fails as a
  model does leaves the answer to the primary (:meth:`PairedEngine.assistant_fallback`),
  streamed or not.

A model whose backend forwards bodies (``kind: openai``) is sent the client's body as it is
(tools and all) and its answer is the upstream's completion; any other model gets the
translated :class:`~profiles.protocol.SampleRequest` (:meth:`PairedEngine.answer`). The
comparer sees both as :class:`~router.paired.answer.Answer` values (text and tool calls).
A framework that ran a routed pair's calls itself hands the two answers to
:meth:`PairedEngine.report`: the same compare → record steps, with mode ``reported``.

A partner that fails never fails the client's request: the outcome carries the error instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Mapping
from typing import Any, Protocol

import structlog

from profiles.protocol import Message, SampleRequest, Usage
from router.backends.base import StreamDelta
from router.errors import BadRequestError, DiffrouteError, NoPairError, UnknownDomainError
from router.logging import error_fields, log_generation
from router.paired.answer import Answer, upstream_usage
from router.paired.call import (
    Ask,
    Fallback,
    ModelReply,
    PairedCall,
    PairedOptions,
    PairedOutcome,
    answering_ask,
    partner_ask,
    review_ask,
)
from router.paired.compare import Comparer, Comparison, compare, compare_review
from router.paired.record import LiveDiffRecord, LiveDiffSink, new_live_diff_id, prompt_digest
from router.paired.spans import PairedSpans
from router.paired.stream import AuditorWatch, PairedStream
from router.paired.structured import AnswerComparer
from router.pairing.decision import Decision, Role, RouteRequest
from router.pairing.pinned import Pairings
from router.pool import Pool, falls_back
from router.telemetry import Tracing

_log = structlog.get_logger("diffroute.paired")


class DecisionSource(Protocol):
    """Where the engine gets its decisions (``router.pairing.service.PairingService``)."""

    async def decide(self, request: RouteRequest) -> Decision: ...

    @property
    def version(self) -> str: ...

    @property
    def domains(self) -> frozenset[str]: ...

    @property
    def pairings(self) -> Pairings: ...


INLINE_COMPARE_CHARS = 4_000
"""Answers longer than this together are compared in a worker thread (the hash embedder and the
diff cost about a microsecond a character; a thread hop costs more than short answers do)."""


class PairedEngine:
    """Runs paired calls against the pool; one per app."""

    def __init__(
        self,
        pool: Pool,
        decisions: DecisionSource,
        sink: LiveDiffSink,
        *,
        comparer: Comparer = compare,
        review_comparer: Comparer = compare_review,
        default_shadow_rate: float = 0.1,
        ack_records: bool = False,
        log_prompts: bool = False,
        rng: Callable[[], float] = random.random,
        tracing: Tracing | None = None,
    ) -> None:
        """``ack_records``: await the sink before answering (a durable sink that must not lose
        an id it returned); otherwise records are written in the background. ``tracing``: each
        model call, comparison and record is a span (``None``: tracing is off)."""
        self.pool = pool
        self.decisions = decisions
        self.sink = sink
        self.comparer = comparer
        self.answer_comparer = AnswerComparer(comparer)
        self.review_comparer = review_comparer
        self.default_shadow_rate = default_shadow_rate
        self.ack_records = ack_records
        self.log_prompts = log_prompts
        self._rng = rng
        self.spans = None if tracing is None else PairedSpans(tracing, self._backend_kind)
        """The spans of paired calls (``None``: tracing is off)."""
        self._background: set[asyncio.Future[Any]] = set()

    # -- the decision ---------------------------------------------------------------------------

    def check_domain(self, domain: str | None) -> None:
        """400 unless ``domain`` (``diffroute.domain``) is one the profiles know, or ``None``."""
        if domain is not None and domain not in self.decisions.domains:
            known = ", ".join(sorted(self.decisions.domains)) or "none: no profiles"
            raise UnknownDomainError(f"unknown domain '{domain}' (domains: {known})",
                                     param="diffroute.domain")

    async def decide(self, role: Role, primary: str | None, options: PairedOptions,
                     task: str) -> Decision:
        """The policy's decision; a partner requested by the client replaces the policy's."""
        for name in options.candidates or ():
            self.pool.get(name, param="diffroute.candidates")
        self.check_domain(options.domain)  # named as the client named it, before the policy
        if options.partner is not None:
            self.pool.get(options.partner, param="diffroute.partner")
        if options.partner is not None and primary is not None:
            # both ends are given: no policy call, so this works without profiles too; what
            # the policy would check, the engine does: the domain exists, the pair is allowed
            return self._requested(role, primary, options.partner, options,
                                   self.decisions.version)
        decision = await self.decisions.decide(RouteRequest(
            role=role, primary=primary, task=task, candidates=options.candidates,
            domain=options.domain))
        if options.partner is None:
            return decision
        return self._requested(role, decision.primary, options.partner, options,
                               decision.profile_version, decision.domains)

    def _requested(self, role: Role, primary: str, partner: str, options: PairedOptions,
                   version: str, domains: Mapping[str, float] | None = None) -> Decision:
        """The client's own partner, unless the admin excluded the pair."""
        if self.decisions.pairings.is_excluded(primary, partner):
            raise NoPairError(primary, role, f"the pair {primary}–{partner} is excluded by "
                              "the configured pairings")
        return _requested(role, primary, partner, options, version, domains)

    async def prepare(self, role: Role, primary: str | None, options: PairedOptions,
                      request: SampleRequest, task: str, request_id: str = "",
                      body: Mapping[str, Any] | None = None) -> PairedCall:
        """Decide the pair and the mode of one paired call (``body``: the client's, as sent,
        for the models whose backend forwards bodies)."""
        decision = await self.decide(role, primary, options, task)
        rate = self.default_shadow_rate if options.shadow_rate is None else options.shadow_rate
        shadow = role == "assist" and rate > 0 and self._rng() < rate
        route = None if options.partner is not None else RouteRequest(
            role=role, primary=decision.primary, task=task, candidates=options.candidates,
            domain=options.domain)
        return PairedCall(decision, request, options.audit_mode or "concurrent", shadow,
                          request_id, route=route, body=body)

    # -- running it -----------------------------------------------------------------------------

    async def complete(self, call: PairedCall) -> tuple[ModelReply, PairedOutcome]:
        """Run the call: the answering model's reply and the outcome. The primary's (audit)
        or assistant's (assist) failure is raised; the partner's is in the outcome."""
        if call.decision.role == "assist":
            return await self._assisted(call)
        if call.audit_mode == "review":
            reply = await self.answer(call.decision.primary, answering_ask(call), call)
            call, review, error = await self.auditor_answer(call, review_ask(call, reply.answer))
            return reply, await self.conclude(call, reply.answer, review, error)
        partner = asyncio.create_task(self.auditor_answer(call, partner_ask(call)))
        try:
            reply = await self.answer(call.decision.primary, answering_ask(call), call)
        except BaseException:
            partner.cancel()
            raise
        call, partner_reply, error = await partner
        return reply, await self.conclude(call, reply.answer, partner_reply, error)

    async def _assisted(self, call: PairedCall) -> tuple[ModelReply, PairedOutcome]:
        """The assistant's reply; when the assistant fails as a model does, the primary's
        (:meth:`assistant_fallback`; no shadow then: the primary answered)."""
        try:
            reply = await self.answer(call.answering, answering_ask(call), call)
        except DiffrouteError as exc:
            fallback = self.assistant_fallback(call, exc)
            if fallback is None:
                raise
            reply = await self.answer(fallback.answering, answering_ask(fallback), fallback)
            return reply, PairedOutcome(fallback)
        if call.shadow:
            self.start_shadow(call, reply.answer)
        return reply, PairedOutcome(call)

    def assistant_fallback(self, call: PairedCall, exc: DiffrouteError) -> PairedCall | None:
        """The call with the primary answering for an assistant that failed as a model does
        (``falls_back``): it is sent the body as the client made it (tools kept), and the
        outcome says so. ``None`` when ``exc`` is not that (a refused request, an audit's
        primary, a primary that answers already)."""
        d = call.decision
        if d.role != "assist" or call.fallback is not None or not falls_back(exc):
            return None
        _log.warning("paired.assistant_failed", assistant=d.partner, primary=d.primary,
                     request_id=call.request_id,
                     **error_fields(exc, log_prompts=self.log_prompts))
        # no shadow either: the primary answers, there is no assistant's answer to check
        return dataclasses.replace(call, fallback=Fallback(d.partner, str(exc)), shadow=False)

    def stream(self, call: PairedCall) -> PairedStream:
        """The answering model's deltas (or forwarded chunks), then
        :meth:`PairedStream.outcome`."""
        return PairedStream(self, call)

    async def report(self, call: PairedCall, primary: Answer, partner: Answer) -> PairedOutcome:
        """A pair's two answers obtained elsewhere (a framework ran the calls itself): compared
        and recorded as a paired call's are, with mode ``reported``; the record is awaited."""
        primary, partner = primary.bounded(), partner.bounded()
        comparison = await self._compare(call, primary, partner, review=False)
        record = _record(call, primary, partner, comparison, "reported")
        stored, failure = await self._store(record)
        return PairedOutcome(call, comparison, stored, live_diff_error=failure)

    # -- the steps, also used by the stream -----------------------------------------------------

    def forwards(self, model: str, ask: Ask) -> bool:
        """Whether ``model`` is sent the client's body as it is (else the translated request)."""
        return ask.body is not None and self.pool.get(model).forwards

    async def answer(self, model: str, ask: Ask, call: PairedCall) -> ModelReply:
        """One model's answer, logged as a ``gen_ai.chat`` event (and a ``chat {model}`` span
        when tracing): the client's body passed through to a forwarding backend, else the
        translated request."""
        if self.spans is None:
            return await self._answer(model, ask, call)
        with self.spans.model(model, ask.request, call) as span:
            reply = await self._answer(model, ask, call)
            self.spans.reply(span, ask.request, reply)
            return reply

    def _backend_kind(self, model: str) -> str:
        return self.pool.get(model).config.backend.kind

    async def _answer(self, model: str, ask: Ask, call: PairedCall) -> ModelReply:
        started = time.perf_counter()
        if ask.body is not None and self.forwards(model, ask):
            completion = await self.pool.get(model).forward(ask.body)
            answer = Answer.of_completion(completion)
            self.log_answer(model, ask.request, upstream_usage(completion.get("usage")),
                            time.perf_counter() - started, call, [answer.render()])
            return ModelReply(answer, completion=completion)
        result = await self.pool.sample(model, ask.request)
        self.log_answer(model, ask.request, result.usage, time.perf_counter() - started, call,
                        [s.text for s in result.samples])
        return ModelReply(Answer.of_text(result.samples[0].text), result=result)

    def stream_answer(self, model: str, request: SampleRequest) -> AsyncIterator[StreamDelta]:
        """One model's translated answer as a stream of deltas (logged by the stream)."""
        return self.pool.stream(model, request)

    def forward_stream(self, model: str, body: Mapping[str, Any]
                       ) -> AsyncGenerator[dict[str, Any], None]:
        """One model's upstream chunks for the client's streamed body (logged by the stream)."""
        return self.pool.get(model).forward_stream(body)

    def log_answer(self, model: str, request: SampleRequest, usage: Usage | None,
                   seconds: float, call: PairedCall, texts: list[str]) -> None:
        """The ``gen_ai.chat`` event of one model call of a paired request."""
        log_generation(_log, model, request, usage, seconds, texts=texts,
                       log_prompts=self.log_prompts, role=call.decision.role,
                       request_id=call.request_id)

    async def partner_answer(self, call: PairedCall,
                             ask: Ask) -> tuple[Answer | None, str | None]:
        """The partner's answer, or its error: a failing partner must not fail the response."""
        try:
            reply = await self.answer(call.decision.partner, ask, call)
        except DiffrouteError as exc:
            _log.warning("paired.partner_failed", partner=call.decision.partner,
                         request_id=call.request_id,
                         **error_fields(exc, log_prompts=self.log_prompts))
            return None, str(exc)
        return reply.answer, None

    async def auditor_answer(self, call: PairedCall, ask: Ask, watch: AuditorWatch | None = None
                             ) -> tuple[PairedCall, Answer | None, str | None]:
        """:meth:`partner_answer`; when the auditor fails, the next auditor the policy ranks
        (asked again without the failed one) is sent the same ask (the body as sent, for a
        forwarding model) once more, and the call returned names it. Not when the client
        named the auditor: its choice stands. ``watch`` (a stream's headers) is told when the
        auditor failed and which one stands then."""
        answer, error = await self.partner_answer(call, ask)
        if answer is not None or call.route is None or error is None:
            return call, answer, error
        if watch is not None:
            watch.failed()
        replaced = None
        try:
            replaced = await self._next_auditor(call, call.route, error)
        finally:
            if watch is not None:
                watch.chosen(call if replaced is None else replaced)
        if replaced is None:
            return call, answer, error
        answer, error = await self.partner_answer(replaced, ask)
        return replaced, answer, error

    async def _next_auditor(self, call: PairedCall, route: RouteRequest,
                            error: str) -> PairedCall | None:
        """The call with the next auditor the policy ranks, or ``None`` when nobody else
        qualifies (the first failure stands)."""
        failed = call.decision.partner
        names = route.candidates if route.candidates is not None else self.pool.names
        try:
            decision = await self.decisions.decide(dataclasses.replace(
                route, candidates=tuple(n for n in names if n != failed)))
        except DiffrouteError as exc:
            _log.info("paired.no_next_auditor", auditor=failed, reason=str(exc),
                      request_id=call.request_id)
            return None
        return dataclasses.replace(call, decision=decision, fallback=Fallback(failed, error))

    def start_shadow(self, call: PairedCall, assistant: Answer) -> None:
        """In the background, the primary answers too and is compared with the assistant."""
        self._spawn(self._shadow(call, assistant))

    async def _shadow(self, call: PairedCall, assistant: Answer) -> None:
        primary = call.decision.primary
        try:
            reply = await self.answer(primary, partner_ask(call), call)
        except DiffrouteError as exc:
            _log.warning("paired.shadow_failed", primary=primary, request_id=call.request_id,
                         **error_fields(exc, log_prompts=self.log_prompts))
            return
        answer, assistant = reply.answer.bounded(), assistant.bounded()
        comparison = await self._compare(call, answer, assistant, review=False)
        await self._store(_record(call, answer, assistant, comparison, "shadow"))

    async def _compare(self, call: PairedCall, primary: Answer, partner: Answer, *,
                       review: bool) -> Comparison:
        """The comparison of two bounded answers (:meth:`Answer.bounded`): on the event loop
        when they are short, as nearly all are; in a worker thread when they are long, so that
        one long answer does not hold every other request (a 2 MB answer held them 2.8 s)."""
        run = functools.partial(self._comparison, call, primary, partner, review=review)
        inline = primary.size() + partner.size() <= INLINE_COMPARE_CHARS
        if self.spans is None:
            return run() if inline else await asyncio.to_thread(run)
        with self.spans.compare(call, review) as span:
            comparison = run() if inline else await asyncio.to_thread(run)
            self.spans.compared(span, comparison)
            return comparison

    def _comparison(self, call: PairedCall, primary: Answer, partner: Answer, *,
                    review: bool) -> Comparison:
        pair = (call.decision.primary, call.decision.partner)
        if review:  # the review is text about the primary's answer, its tool calls included
            return self.review_comparer(primary.render(), partner.text, call.domains,
                                        pair=pair)
        return self.answer_comparer(primary, partner, call.domains, pair=pair)

    async def conclude(self, call: PairedCall, primary: Answer, partner: Answer | None,
                       error: str | None) -> PairedOutcome:
        """Compare the two answers and record the comparison (an audit's last step)."""
        if partner is None:
            return PairedOutcome(call, partner_error=error)
        primary, partner = primary.bounded(), partner.bounded()
        try:
            comparison = await self._compare(call, primary, partner,
                                             review=call.audit_mode == "review")
        except Exception as exc:  # a comparison must never fail the client's answer
            _log.error("paired.compare_failed", error=repr(exc), request_id=call.request_id)
            return PairedOutcome(call)
        record = _record(call, primary, partner, comparison, call.audit_mode)
        if self.ack_records:
            stored, failure = await self._store(record)
            return PairedOutcome(call, comparison, stored, live_diff_error=failure)
        self._spawn(self._store(record))
        return PairedOutcome(call, comparison, record.id if comparison.flagged else None)

    async def _store(self, record: LiveDiffRecord) -> tuple[str | None, str | None]:
        """Hand the record to the sink: its id, or why it could not be stored (a failing sink
        must not break answers, and its failure must not be silent)."""
        if self.spans is None:
            return await self._stored(record)
        with self.spans.record(record) as span:
            stored, failure = await self._stored(record)
            self.spans.recorded(span, stored, failure)
            return stored, failure

    async def _stored(self, record: LiveDiffRecord) -> tuple[str | None, str | None]:
        try:
            stored = await self.sink.record(record)
        except Exception as exc:
            _log.error("live_diff.record_failed", error=str(exc), request_id=record.request_id)
            return None, f"the live diff was not confirmed stored: {exc}"
        if record.flagged:
            _log.info("live_diff", live_diff_id=stored, primary=record.primary,
                      partner=record.partner, role=record.role, mode=record.mode,
                      agreement=record.comparison.agreement, domains=list(record.domains),
                      request_id=record.request_id)
        return stored, None

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        self.hold(asyncio.ensure_future(_discard(work)))

    def hold(self, task: asyncio.Future[Any]) -> None:
        """Let ``task`` (work that outlives its request) finish before :meth:`aclose` returns,
        as background shadows and records do."""
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


def _requested(role: Role, primary: str, partner: str, options: PairedOptions,
               version: str, domains: Mapping[str, float] | None = None) -> Decision:
    if partner == primary:
        raise BadRequestError(f"partner '{partner}' is the primary itself",
                              param="diffroute.partner")
    if domains is None:
        domains = {options.domain: 1.0} if options.domain else {}
    return Decision(primary, partner, role, None, "partner requested by the client",
                    domains=domains, profile_version=version)


def _record(call: PairedCall, primary: Answer, partner: Answer,
            comparison: Comparison, mode: str) -> LiveDiffRecord:
    d = call.decision
    return LiveDiffRecord(
        id=new_live_diff_id(), created_at=time.time(), request_id=call.request_id,
        primary=d.primary, partner=d.partner, role=d.role, answered_by=call.answering,
        mode=mode, domains=call.domains, prompt_digest=prompt_digest(call.request.messages),
        messages=_conversation(call), primary_text=primary.render(),
        partner_text=partner.render(), comparison=comparison, reason=d.reason)


def _conversation(call: PairedCall) -> tuple[Message, ...]:
    """The messages both models answered: the client's own (tool calls and results kept)
    when it sent a body, else the translated ones."""
    sent = None if call.body is None else call.body.get("messages")
    return tuple(sent) if isinstance(sent, list) else call.request.messages


async def _discard(work: Coroutine[Any, Any, Any]) -> None:
    try:
        await work
    except Exception as exc:  # background work must log, not raise into the loop
        _log.error("paired.background_failed", error=repr(exc))

