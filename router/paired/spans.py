"""The spans of paired calls, when tracing is on (:mod:`router.telemetry`).

The engine and the stream hold a :class:`PairedSpans` or ``None`` (tracing off: they check it
and skip all of this). Under the request's server span, one paired call makes:

* ``chat {model}`` (client) for each model call — the primary's, the partner's, a replacement
  auditor's, a shadow — with the GenAI attributes and ``diffroute.member``; a stream's span is
  started and ended by hand, since the stream outlives the block that starts it;
* ``diffroute.compare`` with the agreement and whether it is flagged;
* ``diffroute.record`` with the live diff's id, when it was stored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING

from profiles.protocol import Message, SampleRequest, Usage
from router.paired.answer import upstream_usage
from router.paired.call import ModelReply, PairedCall
from router.paired.compare import Comparison
from router.paired.record import LiveDiffRecord
from router.telemetry import Attributes, Tracing, model_attributes, set_usage

if TYPE_CHECKING:
    from opentelemetry.trace import Span


class PairedSpans:
    """Spans of model calls, comparisons and records; ``backend_kind(model)`` names a pool
    model's backend kind (its ``gen_ai.provider.name``)."""

    def __init__(self, tracing: Tracing, backend_kind: Callable[[str], str]) -> None:
        self.tracing = tracing
        self._backend_kind = backend_kind

    def attributes(self, model: str, request: SampleRequest, call: PairedCall) -> Attributes:
        """The attributes one model call's span starts with."""
        d = call.decision
        out = model_attributes(model, self._backend_kind(model),
                               "primary" if model == d.primary else "partner", d.role,
                               d.partner)
        if request.temperature is not None:
            out["gen_ai.request.temperature"] = request.temperature
        if request.max_tokens is not None:
            out["gen_ai.request.max_tokens"] = request.max_tokens
        return out

    def model(self, model: str, request: SampleRequest,
              call: PairedCall) -> AbstractContextManager[Span]:
        """A model call's span, current inside the block (its upstream request is a child)."""
        return self.tracing.span(f"chat {model}", self.attributes(model, request, call),
                                 client=True)

    def reply(self, span: Span, request: SampleRequest, reply: ModelReply) -> None:
        """What the model answered: usage, the upstream's model name, and the contents when
        ``log_prompts`` allows them."""
        if reply.completion is not None:
            completion = reply.completion
            set_usage(span, upstream_usage(completion.get("usage")), completion.get("model"))
        elif reply.result is not None:
            set_usage(span, reply.result.usage)
        self.tracing.add_contents(span, request.messages, [reply.answer.render()])

    def start_stream(self, call: PairedCall) -> Span:
        """The answering model's span of a stream, started and not current."""
        model = call.answering
        return self.tracing.start(f"chat {model}", self.attributes(model, call.request, call),
                                  client=True)

    def current(self, span: Span) -> AbstractContextManager[None]:
        """A block in which a stream's span is current (no ``yield`` inside it)."""
        return self.tracing.within(span)

    def end_stream(self, span: Span, messages: Sequence[Message], usage: Usage | None,
                   answer: str | None, response_model: object = None) -> None:
        """End a stream's span (``messages``: the prompt it answered); ``answer`` is ``None``
        when the stream did not finish (the client went away, the upstream failed): the
        span's status is then an error."""
        set_usage(span, usage, response_model)
        if answer is None:
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR, "the stream did not finish"))
        else:
            self.tracing.add_contents(span, messages, [answer])
        span.end()

    @contextmanager
    def compare(self, call: PairedCall, review: bool) -> Iterator[Span]:
        """The comparison's span; :meth:`compared` says what it found."""
        with self.tracing.span("diffroute.compare", {"diffroute.role": call.decision.role,
                                                     "diffroute.review": review}) as span:
            yield span

    @staticmethod
    def compared(span: Span, comparison: Comparison) -> None:
        span.set_attributes({"diffroute.agreement": comparison.agreement,
                             "diffroute.flagged": comparison.flagged})

    def record(self, record: LiveDiffRecord) -> AbstractContextManager[Span]:
        """The record's span; :meth:`recorded` says how it went."""
        return self.tracing.span("diffroute.record", {"diffroute.mode": record.mode,
                                                      "diffroute.flagged": record.flagged})

    @staticmethod
    def recorded(span: Span, stored: str | None, failure: str | None) -> None:
        if stored is not None:
            span.set_attribute("diffroute.live_diff_id", stored)
        if failure is not None:
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR, failure))
