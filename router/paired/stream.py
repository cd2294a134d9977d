"""A streamed paired call: the answering model's deltas, then the comparison.

:class:`PairedStream` is the engine's peer for streams; it runs the same steps as
:meth:`~router.paired.engine.PairedEngine.complete` through the engine's public methods.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Protocol

from profiles.protocol import SampleRequest, Usage
from router.backends.base import StreamDelta
from router.paired.call import PairedCall, PairedOutcome, partner_request, review_request


class StreamSteps(Protocol):
    """The engine's steps a stream runs (``router.paired.engine.PairedEngine`` has them)."""

    def stream_answer(self, model: str, request: SampleRequest) -> AsyncIterator[StreamDelta]:
        ...

    async def auditor_answer(self, call: PairedCall, request: SampleRequest
                             ) -> tuple[PairedCall, str | None, str | None]: ...

    def log_answer(self, model: str, request: SampleRequest, usage: Usage | None,
                   seconds: float, call: PairedCall, texts: list[str]) -> None: ...

    def start_shadow(self, call: PairedCall, assistant_text: str) -> None: ...

    async def conclude(self, call: PairedCall, primary_text: str, partner_text: str | None,
                       error: str | None) -> PairedOutcome: ...


class PairedStream:
    """Iterate :meth:`deltas` for the answering model's deltas; then ``await outcome()``.

    For a concurrent audit the partner starts before the first token is read; for a review it
    starts when the primary's answer is complete. Use as an async context manager so that an
    abandoned stream (client gone) cancels the partner.
    """

    def __init__(self, engine: StreamSteps, call: PairedCall) -> None:
        self._engine = engine
        self.call = call
        self._parts: list[str] = []
        self._partner: asyncio.Task[tuple[PairedCall, str | None, str | None]] | None = None
        self._complete = False

    async def __aenter__(self) -> PairedStream:
        call = self.call
        if call.decision.role == "audit" and call.audit_mode == "concurrent":
            self._partner = asyncio.create_task(
                self._engine.auditor_answer(call, partner_request(call.request)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._partner is not None and not self._partner.done():
            self._partner.cancel()

    async def deltas(self) -> AsyncIterator[StreamDelta]:
        started = time.perf_counter()
        usage: Usage | None = None
        async for delta in self._engine.stream_answer(self.call.answering, self.call.request):
            self._parts.append(delta.text)
            usage = delta.usage or usage
            yield delta
        self._complete = True
        self._engine.log_answer(self.call.answering, self.call.request, usage,
                                time.perf_counter() - started, self.call, ["".join(self._parts)])

    async def outcome(self) -> PairedOutcome:
        """Wait for the partner (audit) or start the shadow (assist); compare; record."""
        engine, call, text = self._engine, self.call, "".join(self._parts)
        if call.decision.role == "assist":
            if call.shadow and self._complete:
                engine.start_shadow(call, text)
            return PairedOutcome(call)
        if self._partner is None:
            self._partner = asyncio.create_task(
                engine.auditor_answer(call, review_request(call.request, text)))
        call, partner_text, error = await self._partner  # another auditor if the first failed
        return await engine.conclude(call, text, partner_text, error)
