"""A streamed paired call: the answering model's deltas (or upstream chunks), then the
comparison.

:class:`PairedStream` is the engine's peer for streams; it runs the same steps as
:meth:`~router.paired.engine.PairedEngine.complete` through the engine's public methods. A
forwarding model's upstream chunks are relayed as they are (:meth:`PairedStream.chunks`,
tool-call deltas included) and put back together into the answer that is compared; any other
model streams translated deltas (:meth:`PairedStream.deltas`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Protocol

from profiles.protocol import SampleRequest, Usage
from router.backends.base import StreamDelta
from router.paired.answer import Answer, AnswerBuilder, upstream_usage
from router.paired.call import (
    Ask,
    PairedCall,
    PairedOutcome,
    answering_ask,
    partner_ask,
    review_ask,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from router.paired.spans import PairedSpans


class StreamSteps(Protocol):
    """The engine's steps a stream runs (``router.paired.engine.PairedEngine`` has them)."""

    def forwards(self, model: str, ask: Ask) -> bool: ...

    def stream_answer(self, model: str, request: SampleRequest) -> AsyncIterator[StreamDelta]:
        ...

    def forward_stream(self, model: str, body: Mapping[str, Any]
                       ) -> AsyncGenerator[dict[str, Any], None]: ...

    async def auditor_answer(self, call: PairedCall, ask: Ask
                             ) -> tuple[PairedCall, Answer | None, str | None]: ...

    def log_answer(self, model: str, request: SampleRequest, usage: Usage | None,
                   seconds: float, call: PairedCall, texts: list[str]) -> None: ...

    def start_shadow(self, call: PairedCall, assistant: Answer) -> None: ...

    @property
    def spans(self) -> PairedSpans | None: ...

    async def conclude(self, call: PairedCall, primary: Answer, partner: Answer | None,
                       error: str | None) -> PairedOutcome: ...


class PairedStream:
    """Iterate :meth:`chunks` (when :attr:`forwarded`) or :meth:`deltas` for the answering
    model's stream; then ``await outcome()``.

    For a concurrent audit the partner starts before the first token is read; for a review it
    starts when the primary's answer is complete. Use as an async context manager so that an
    abandoned stream (client gone) cancels the partner and ends the stream's span.
    """

    def __init__(self, engine: StreamSteps, call: PairedCall) -> None:
        self._engine = engine
        self.call = call
        self._ask = answering_ask(call)
        self.forwarded = engine.forwards(call.answering, self._ask)
        """Whether the answering model's upstream chunks are relayed as they are."""
        self._answer = AnswerBuilder()
        self._partner: asyncio.Task[tuple[PairedCall, Answer | None, str | None]] | None = None
        self._complete = False
        self._span: Span | None = None
        self._response_model: object = None

    async def __aenter__(self) -> PairedStream:
        call = self.call
        if call.decision.role == "audit" and call.audit_mode == "concurrent":
            self._partner = asyncio.create_task(
                self._engine.auditor_answer(call, partner_ask(call)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._partner is not None and not self._partner.done():
            self._partner.cancel()
        self._end_span(None, None)  # abandoned before its end (when it ended, a no-op)

    async def deltas(self) -> AsyncIterator[StreamDelta]:
        """The translated answer's deltas."""
        started = time.perf_counter()
        usage: Usage | None = None
        self._start_span()
        deltas = self._engine.stream_answer(self.call.answering, self._ask.request)
        with self._span_current():  # the upstream request opens now
            delta = await anext(deltas, None)
        while delta is not None:
            self._answer.add_text(delta.text)
            usage = delta.usage or usage
            yield delta
            delta = await anext(deltas, None)
        self._done(usage, started)

    async def chunks(self) -> AsyncGenerator[dict[str, Any], None]:
        """The forwarding upstream's ``chat.completion.chunk`` objects, as they come."""
        if self._ask.body is None:
            raise TypeError("a stream without the client's body has no chunks to relay")
        started = time.perf_counter()
        usage: Usage | None = None
        chunks = self._engine.forward_stream(self.call.answering, self._ask.body)
        self._start_span()
        try:
            with self._span_current():  # the upstream request opens now
                chunk = await anext(chunks, None)
            while chunk is not None:
                self._response_model = chunk.get("model") or self._response_model
                self._answer.add_chunk(chunk)
                usage = upstream_usage(chunk.get("usage")) or usage
                yield chunk
                chunk = await anext(chunks, None)
        finally:
            await chunks.aclose()  # the upstream connection and the model's slot, at once
        self._done(usage, started)

    def _done(self, usage: Usage | None, started: float) -> None:
        self._complete = True
        text = self._answer.answer().render()
        self._engine.log_answer(self.call.answering, self._ask.request, usage,
                                time.perf_counter() - started, self.call, [text])
        self._end_span(usage, text)

    def _start_span(self) -> None:
        spans = self._engine.spans
        if spans is not None:
            self._span = spans.start_stream(self.call)

    def _span_current(self) -> AbstractContextManager[None]:
        spans = self._engine.spans
        if spans is None or self._span is None:
            return nullcontext()
        return spans.current(self._span)

    def _end_span(self, usage: Usage | None, answer: str | None) -> None:
        spans = self._engine.spans
        if spans is not None and self._span is not None:
            spans.end_stream(self._span, usage, answer, self._response_model)
            self._span = None

    async def outcome(self) -> PairedOutcome:
        """Wait for the partner (audit) or start the shadow (assist); compare; record."""
        engine, call, answer = self._engine, self.call, self._answer.answer()
        if call.decision.role == "assist":
            if call.shadow and self._complete:
                engine.start_shadow(call, answer)
            return PairedOutcome(call)
        if self._partner is None:
            self._partner = asyncio.create_task(
                engine.auditor_answer(call, review_ask(call, answer)))
        call, partner, error = await self._partner  # another auditor if the first failed
        return await engine.conclude(call, answer, partner, error)
