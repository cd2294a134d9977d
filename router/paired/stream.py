"""A streamed paired call: the answering model's deltas (or upstream chunks), then the
comparison.

:class:`PairedStream` is the engine's peer for streams; it runs the same steps as
:meth:`~router.paired.engine.PairedEngine.complete` through the engine's public methods. A
forwarding model's upstream chunks are relayed as they are (:meth:`PairedStream.chunks`,
tool-call deltas included) and put back together into the answer that is compared; any other
model streams translated deltas (:meth:`PairedStream.deltas`).

The response's headers go out once they are known: :meth:`PairedStream.open` waits for the
answering model's first delta. An assistant that fails before it leaves the stream to the
primary, as a non-streamed assist call does; a concurrent auditor that failed before it is
named by its replacement. What happens after the headers (an auditor that fails later, every
review) is told by the final chunk's ``diffroute`` object only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from profiles.protocol import SampleRequest, Usage
from router.backends.base import StreamDelta
from router.errors import DiffrouteError
from router.paired.answer import Answer, AnswerBuilder, upstream_usage
from router.paired.call import (
    Ask,
    PairedCall,
    PairedOutcome,
    answering_ask,
    partner_ask,
    review_ask,
)

I = TypeVar("I")  # noqa: E741 -- an item of a stream


class AuditorWatch:
    """Which auditor a running audit has, for headers sent before it ends: the one asked
    first, until it fails; then (once the policy chose it) the one that replaces it."""

    def __init__(self, call: PairedCall) -> None:
        self.call = call
        self._chosen = asyncio.Event()
        self._chosen.set()

    def failed(self) -> None:
        """The auditor failed: another is being chosen."""
        self._chosen.clear()

    def chosen(self, call: PairedCall) -> None:
        """The auditor that stands now (the first one again, when nobody replaces it)."""
        self.call = call
        self._chosen.set()

    async def current(self) -> PairedCall:
        """The call naming the auditor, waiting while a replacement is being chosen."""
        await self._chosen.wait()
        return self.call


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

    def assistant_fallback(self, call: PairedCall, exc: DiffrouteError) -> PairedCall | None:
        ...

    async def auditor_answer(self, call: PairedCall, ask: Ask, watch: AuditorWatch | None = None
                             ) -> tuple[PairedCall, Answer | None, str | None]: ...

    def log_answer(self, model: str, request: SampleRequest, usage: Usage | None,
                   seconds: float, call: PairedCall, texts: list[str]) -> None: ...

    def start_shadow(self, call: PairedCall, assistant: Answer) -> None: ...

    @property
    def spans(self) -> PairedSpans | None: ...

    async def conclude(self, call: PairedCall, primary: Answer, partner: Answer | None,
                       error: str | None) -> PairedOutcome: ...


class Started(Generic[I]):
    """A stream whose first item was awaited (so its failure is raised before a response
    starts) and is kept for :meth:`items`."""

    def __init__(self, items: AsyncIterator[I]) -> None:
        self._items = items
        self._head: list[I] = []

    async def start(self) -> None:
        """Await the first item; a failure closes the stream and is raised."""
        try:
            self._head = [await anext(self._items)]
        except StopAsyncIteration:
            pass
        except BaseException:
            await self.aclose()
            raise

    async def items(self) -> AsyncIterator[I]:
        """The first item, then the others as they come."""
        head, self._head = self._head, []
        for item in head:
            yield item
        async for item in self._items:
            yield item

    async def aclose(self) -> None:
        """Close the stream: its upstream connection and its model's slot, at once."""
        if isinstance(self._items, AsyncGenerator):
            await self._items.aclose()


class PairedStream:
    """:meth:`open`, then iterate :meth:`chunks` (when :attr:`forwarded`) or :meth:`deltas`
    for the answering model's stream; then ``await outcome()``.

    For a concurrent audit the partner starts before the first token is read; for a review it
    starts when the primary's answer is complete. Use as an async context manager so that an
    abandoned stream (client gone) cancels the partner, closes the answering stream and
    ends the stream's span.
    """

    def __init__(self, engine: StreamSteps, call: PairedCall) -> None:
        self._engine = engine
        self.call = call
        """The call as the headers tell it (:meth:`open` may change it)."""
        self.forwarded = False
        """Whether the answering model's upstream chunks are relayed as they are."""
        self._ask = answering_ask(call)
        self._deltas: Started[StreamDelta] | None = None
        self._chunks: Started[dict[str, Any]] | None = None
        self._started = 0.0
        self._answer = AnswerBuilder()
        self._watch = AuditorWatch(call)
        self._partner: asyncio.Task[tuple[PairedCall, Answer | None, str | None]] | None = None
        self._complete = False
        self._span: Span | None = None
        self._response_model: object = None

    async def __aenter__(self) -> PairedStream:
        call = self.call
        if call.decision.role == "audit" and call.audit_mode == "concurrent":
            self._partner = asyncio.create_task(
                self._engine.auditor_answer(call, partner_ask(call), self._watch))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._partner is not None and not self._partner.done():
            self._partner.cancel()
        self._end_span(None, None)  # abandoned before its end (when it ended, a no-op)
        for started in (self._deltas, self._chunks):
            if started is not None:
                await started.aclose()

    async def open(self) -> None:
        """Start the answering model's stream and await its first delta. An assistant that
        fails before it, as a model does, leaves the answer to the primary (the call then says
        so); a concurrent auditor that failed by then is named by its replacement."""
        try:
            await self._start()
        except DiffrouteError as exc:
            fallback = self._engine.assistant_fallback(self.call, exc)
            if fallback is None:
                raise
            self.call = fallback
            await self._start()
        if self.call.decision.role == "audit":
            self.call = await self._watch.current()

    async def _start(self) -> None:
        """Open the answering model's stream (its chunks relayed, if it forwards, else its
        translated deltas) and await its first item."""
        engine, call = self._engine, self.call
        self._ask = ask = answering_ask(call)
        self.forwarded = engine.forwards(call.answering, ask)
        self._started = time.perf_counter()
        self._start_span()
        try:
            with self._span_current():  # the upstream request opens now
                if self.forwarded and ask.body is not None:
                    self._chunks = Started(engine.forward_stream(call.answering, ask.body))
                    await self._chunks.start()
                else:
                    self._deltas = Started(engine.stream_answer(call.answering, ask.request))
                    await self._deltas.start()
        except BaseException:
            self._end_span(None, None)  # this attempt failed: its span ends with an error
            raise

    async def deltas(self) -> AsyncIterator[StreamDelta]:
        """The translated answer's deltas."""
        if self._deltas is None:
            raise TypeError("open() a translated stream before reading its deltas")
        usage: Usage | None = None
        async for delta in self._deltas.items():
            self._answer.add_text(delta.text)
            usage = delta.usage or usage
            yield delta
        self._done(usage)

    async def chunks(self) -> AsyncGenerator[dict[str, Any], None]:
        """The forwarding upstream's ``chat.completion.chunk`` objects, as they come."""
        if self._chunks is None:
            raise TypeError("open() a forwarded stream before reading its chunks")
        usage: Usage | None = None
        try:
            async for chunk in self._chunks.items():
                self._response_model = chunk.get("model") or self._response_model
                self._answer.add_chunk(chunk)
                usage = upstream_usage(chunk.get("usage")) or usage
                yield chunk
        finally:
            await self._chunks.aclose()  # the upstream connection and the slot, at once
        self._done(usage)

    def _done(self, usage: Usage | None) -> None:
        self._complete = True
        text = self._answer.answer().render()
        self._engine.log_answer(self.call.answering, self._ask.request, usage,
                                time.perf_counter() - self._started, self.call, [text])
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
            spans.end_stream(self._span, self.call.request.messages, usage, answer,
                             self._response_model)
            self._span = None

    async def outcome(self) -> PairedOutcome:
        """Wait for the partner (audit) or start the shadow (assist); compare; record."""
        engine, call, answer = self._engine, self.call, self._answer.answer()
        if call.decision.role == "assist":
            if call.shadow and call.fallback is None and self._complete:
                engine.start_shadow(call, answer)
            return PairedOutcome(call)
        if self._partner is None:
            self._partner = asyncio.create_task(
                engine.auditor_answer(call, review_ask(call, answer)))
        call, partner, error = await self._partner  # another auditor if the first failed
        return await engine.conclude(call, answer, partner, error)
