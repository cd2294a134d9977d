"""The backend protocol: how the router reaches a model.

A backend is a :class:`profiles.protocol.ModelClient` (``sample``) plus a streaming variant for
the service, a status check for ``diffroute models`` and ``/healthz``, and ``aclose``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from profiles.protocol import SampleRequest, SampleResult, Usage

if TYPE_CHECKING:
    import aiohttp

    from router.backends.http1 import Http1Client
    from router.backends.model_config import ModelConfig

StatusKind = Literal["ready", "reachable", "weights found", "loading", "missing weights",
                     "missing key", "unreachable", "error", "circuit open"]

CALL_DEADLINE: ContextVar[float | None] = ContextVar("diffroute_call_deadline", default=None)
"""The event loop time (``loop.time()``) by which the current call must end, set by the pool
while a backend method runs (``timeouts.total`` from when the call entered the pool, its wait
for a slot included). The pool enforces it anyway; a backend that retries reads it to make
each attempt fit and to give up — with the real error — rather than wait past it."""


TraceHead = Callable[[], bytes]
"""The current trace context's header lines (``traceparent: …\\r\\n``) for an upstream
request; given to backends only when tracing is on (``router.telemetry``)."""


@dataclass(frozen=True, slots=True)
class BackendStatus:
    """What ``diffroute models`` shows for one model."""

    state: StatusKind
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state in ("ready", "reachable", "weights found")


@dataclass(frozen=True, slots=True)
class StreamDelta:
    """One piece of a streamed completion; the last one carries ``finish_reason``."""

    text: str
    finish_reason: str | None = None
    usage: Usage | None = None


@dataclass
class BackendContext:
    """Shared resources handed to backend factories: the HTTP clients, the data dir."""

    data_dir: Path
    http: aiohttp.ClientSession | None = None
    """An aiohttp session for backends registered by plugins (the built-in ones use ``http1``)."""
    http1: Http1Client | None = None
    """The keep-alive HTTP/1.1 client of the OpenAI backend (:mod:`router.backends.http1`)."""
    trace_head: TraceHead | None = None
    """Tracing on: what the outgoing requests' headers carry on (``None``: tracing off)."""
    extras: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """A model reachable by the router."""

    @property
    def name(self) -> str:
        """Pool name of the model."""
        ...

    def identity(self) -> Mapping[str, object]:
        """Behaviour-relevant parameters (see :class:`profiles.protocol.ModelClient`)."""
        ...

    async def sample(self, request: SampleRequest) -> SampleResult:
        """Return ``request.n`` complete samples."""
        ...

    def stream(self, request: SampleRequest) -> AsyncIterator[StreamDelta]:
        """Stream one completion (``request.n`` is ignored) as it is generated."""
        ...

    async def check(self) -> BackendStatus:
        """Cheap readiness check: no model call if it can be avoided."""
        ...

    async def aclose(self) -> None:
        """Release what the backend holds (loaded weights, threads)."""
        ...


@runtime_checkable
class ForwardingBackend(Protocol):
    """A backend that can pass a client's OpenAI chat-completions body through (tools and
    all) and return the upstream's completion object: the plain proxy's fast, lossless path."""

    async def forward(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The upstream's ``chat.completion`` object for ``body`` (its ``model`` is rewritten)."""
        ...

    def forward_stream(self, body: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The upstream's ``chat.completion.chunk`` objects for a streamed ``body``."""
        ...


@runtime_checkable
class DeadlineKeeper(Protocol):
    """A backend whose calls end by :data:`CALL_DEADLINE` on their own — every attempt's
    timeouts cut to it, no wait past it — so the pool arms no timer of its own per call."""

    def keeps_deadline(self) -> bool:
        """``True`` when every call of this backend keeps the deadline."""
        ...


@runtime_checkable
class WarmingBackend(Protocol):
    """A backend that can get ready before its first call (load local weights)."""

    async def warm(self) -> None:
        """Get ready in the background; never raises (the first call reports a failure)."""
        ...


class BackendFactory(Protocol):
    """Builds a backend from its model's config and the shared context."""

    def __call__(self, model: ModelConfig, context: BackendContext) -> Backend: ...
