"""The pool: the configured models, their backends, their limits and their health.

One :class:`Pool` per process owns the shared HTTP clients
(:class:`~router.backends.http1.Http1Client` for the OpenAI backend, an aiohttp
``ClientSession`` for plugin backends) and every backend.
Calls go through :meth:`Pool.sample` / :meth:`Pool.stream` (or a :class:`PoolModel`'s
``forward``), which apply the model's decoding overrides and protect the upstream — each
setting per model:

* ``circuit``: a breaker that fails calls fast while the model keeps failing
  (:mod:`router.circuit`); the policy, ``/healthz`` and ``/v1/models`` see it;
* ``max_queue``: calls beyond ``max_concurrency`` wait in line, and beyond the line they are
  shed at once (:class:`~router.errors.ModelBusyError`, 429 with ``Retry-After``);
* ``timeouts.total``: one deadline per call, set when it enters the pool, bounds the wait for
  a slot, every attempt and the backoff between them (a timeout in line is a 504 that says
  "queued");
* ``fallbacks``: the models that answer a plain call in its place (:meth:`Pool.with_fallbacks`).

A call cancelled anywhere (aiohttp cancels the handler of a client that disconnects) leaves
the line or gives its slot back, and cancels the backend's upstream request with it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import structlog

from profiles.protocol import SampleRequest, SampleResult
from router.backends import (
    Backend,
    BackendContext,
    BackendStatus,
    ForwardingBackend,
    StreamDelta,
    create_backend,
)
from router.backends.base import CALL_DEADLINE, DeadlineKeeper, TraceHead, WarmingBackend
from router.backends.http1 import Http1Client
from router.backends.llamacpp import CONFIG_DIR_KEY
from router.circuit import (
    CLOSED,
    CircuitBreaker,
    CircuitSnapshot,
    Clock,
    counts_as_failure,
    failure_kind,
)
from router.config import ModelConfig, Settings
from router.errors import (
    DiffrouteError,
    ModelBusyError,
    ModelUnavailableError,
    UnknownModelError,
    UpstreamError,
    UpstreamTimeoutError,
)
from router.limiter import Limiter
from router.logging import error_fields

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 -- an item of a stream

_log = structlog.get_logger("diffroute.pool")

SHED_RETRY_AFTER_S = 1.0
"""``Retry-After`` of a call shed because the model's queue is full."""


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """One row of ``diffroute models``."""

    name: str
    kind: str
    family: str
    status: BackendStatus
    """The backend's check, or ``circuit open`` while the model's breaker refuses calls."""
    circuit: CircuitSnapshot = field(default=CLOSED)
    check: BackendStatus | None = None
    """The backend's own check, when the circuit overrides it in :attr:`status`."""


class PoolModel:
    """A pool member as a :class:`profiles.protocol.ModelClient`: limits and overrides applied.

    Every call goes through :meth:`_admitted` — circuit breaker, bounded queue, one slot,
    one deadline — and each step of the backend runs within that deadline (:meth:`_bounded`).
    A call cancelled at any point (the client went away) gives its slot back and, being
    cancelled itself, cancels the backend's upstream request.
    """

    def __init__(self, config: ModelConfig, backend: Backend, clock: Clock = time.monotonic,
                 ) -> None:
        self.config = config
        self.backend = backend
        self._limit = Limiter(config.max_concurrency)
        self._forwarder = backend if isinstance(backend, ForwardingBackend) else None
        self._circuit = None if config.circuit is None else CircuitBreaker(
            config.name, config.circuit, clock)
        self._timed = not (isinstance(backend, DeadlineKeeper) and backend.keeps_deadline())

    @property
    def forwards(self) -> bool:
        """Whether plain calls can pass the client's body through (:meth:`forward`)."""
        return self._forwarder is not None

    @property
    def name(self) -> str:
        return self.config.name

    def identity(self) -> Mapping[str, object]:
        return {"backend": dict(self.backend.identity()),
                "decoding": self.config.decoding.model_dump(exclude_none=True)}

    def circuit(self) -> CircuitSnapshot:
        """The circuit breaker's state (closed when the model has none)."""
        return CLOSED if self._circuit is None else self._circuit.snapshot()

    def blocked(self) -> bool:
        """Whether the circuit would refuse a call now (open, or its probe in flight)."""
        return self._circuit is not None and self._circuit.blocked()

    def _apply(self, request: SampleRequest) -> SampleRequest:
        d = self.config.decoding
        changes: dict[str, object] = {}
        if d.temperature is not None:
            changes["temperature"] = d.temperature
        if d.max_tokens is not None:
            changes["max_tokens"] = min(request.max_tokens, d.max_tokens)
        if d.seed is not None and request.seed is None:
            changes["seed"] = d.seed
        if not changes:
            return request
        return dataclasses.replace(request, **changes)  # type: ignore[arg-type]

    # -- admission: circuit, queue, slot, deadline ----------------------------------------------

    def _shed_if_full(self) -> None:
        limit, cfg = self._limit, self.config
        if limit.free == 0 and limit.waiting >= cfg.max_queue:
            raise ModelBusyError(
                self.name, f"{cfg.max_concurrency} calls in flight and {limit.waiting} "
                f"waiting (max_concurrency, max_queue)", SHED_RETRY_AFTER_S)

    async def _queued(self, deadline: float) -> None:
        """Take a slot, waiting at most until ``deadline`` (a slot that comes at the deadline
        is given back: no time is left to use it)."""
        if self._limit.try_acquire():  # the common case, without a timer
            return
        try:
            async with asyncio.timeout_at(deadline):
                await self._limit.acquire()
        except TimeoutError:
            raise self._queued_too_long() from None
        if asyncio.get_running_loop().time() >= deadline:
            self._limit.release()
            raise self._queued_too_long()

    def _queued_too_long(self) -> UpstreamTimeoutError:
        return UpstreamTimeoutError(
            self.name, f"queued for a slot for {self.config.timeouts.total:g} s without "
            f"getting one ({self.config.max_concurrency} busy; timeouts.total)")

    async def _enter(self) -> tuple[float, bool]:
        """One call's admission: the circuit lets it through, the queue has room, a slot is
        taken within ``timeouts.total``. Returns the call's deadline (event loop time) and
        whether the call is the circuit's probe; the caller must :meth:`_leave`."""
        deadline = asyncio.get_running_loop().time() + self.config.timeouts.total
        circuit = self._circuit
        probe = circuit.admit() if circuit is not None else False
        try:
            self._shed_if_full()
            await self._queued(deadline)
        except BaseException:
            if circuit is not None:
                circuit.abandoned(probe)
            raise
        return deadline, probe

    def _leave(self, probe: bool, error: BaseException | None) -> None:
        """The call's outcome to the circuit, and its slot back."""
        self._limit.release()
        circuit = self._circuit
        if circuit is None:
            return
        if error is None:
            circuit.succeeded()
        elif isinstance(error, UpstreamError) and counts_as_failure(error):
            circuit.failed(failure_kind(error))
        else:  # cancelled, or the request's own fault
            circuit.abandoned(probe)

    @asynccontextmanager
    async def _admitted(self) -> AsyncIterator[float]:
        """:meth:`_enter` … :meth:`_leave` around a stream; yields the deadline."""
        deadline, probe = await self._enter()
        try:
            yield deadline
        except BaseException as exc:
            self._leave(probe, exc)
            raise
        self._leave(probe, None)

    async def _call(self, step: Callable[[], Awaitable[T]]) -> T:
        """``await step()`` admitted and within the call's deadline (no context manager: this
        is every plain and paired call's path)."""
        deadline, probe = await self._enter()
        try:
            result = await self._bounded(deadline, step())
        except BaseException as exc:
            self._leave(probe, exc)
            raise
        self._leave(probe, None)
        return result

    async def _bounded(self, deadline: float, step: Awaitable[T]) -> T:
        """``await step`` within the call's deadline, which the backend can read
        (:data:`~router.backends.base.CALL_DEADLINE`). A backend that keeps the deadline
        itself (:class:`~router.backends.base.DeadlineKeeper`) is trusted to: arming a timer
        for every call costs more than the rest of the pool's bookkeeping."""
        token = CALL_DEADLINE.set(deadline)
        try:
            if not self._timed:
                return await step
            async with asyncio.timeout_at(deadline):
                return await step
        except TimeoutError:
            raise UpstreamTimeoutError(
                self.name, f"no answer within timeouts.total ({self.config.timeouts.total:g} s,"
                " the wait for a slot and retries included)") from None
        finally:
            CALL_DEADLINE.reset(token)

    # -- calls ----------------------------------------------------------------------------------

    async def sample(self, request: SampleRequest) -> SampleResult:
        return await self._call(lambda: self.backend.sample(self._apply(request)))

    async def forward(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Pass a client's chat body through (see :class:`ForwardingBackend`), within the
        model's limits; the backend applies the model's overrides."""
        forwarder = self._forwarder
        if forwarder is None:
            raise TypeError(f"the backend of '{self.name}' cannot forward bodies")
        return await self._call(lambda: forwarder.forward(body))

    async def forward_stream(self, body: Mapping[str, Any]
                             ) -> AsyncGenerator[dict[str, Any], None]:
        """Pass a client's streamed chat body through, within the model's limits (the
        stream's body included in the deadline)."""
        if self._forwarder is None:
            raise TypeError(f"the backend of '{self.name}' cannot forward bodies")
        async with self._admitted() as deadline:
            async for chunk in self._steps(deadline, self._forwarder.forward_stream(body)):
                yield chunk

    async def stream(self, request: SampleRequest) -> AsyncIterator[StreamDelta]:
        async with self._admitted() as deadline:
            async for delta in self._steps(deadline, self.backend.stream(self._apply(request))):
                yield delta

    async def _steps(self, deadline: float, items: AsyncIterator[I]) -> AsyncIterator[I]:
        """``items``, each step bounded by the deadline (never a timeout across a ``yield``:
        it would cancel the consumer's code), closed on exit."""
        try:
            while True:
                try:
                    item = await self._bounded(deadline, anext(items))
                except StopAsyncIteration:
                    return
                yield item
        finally:
            if isinstance(items, AsyncGenerator):
                await items.aclose()


class Pool:
    """The configured models, built from settings."""

    def __init__(self, settings: Settings, http: aiohttp.ClientSession | None = None,
                 http1: Http1Client | None = None, clock: Clock = time.monotonic,
                 trace_head: TraceHead | None = None) -> None:
        """``clock``: monotonic seconds for the circuit breakers (tests pass a fake);
        ``trace_head``: the trace context's header lines for upstream requests (tracing on)."""
        self.settings = settings
        self.context = BackendContext(data_dir=settings.data_dir, http=http, http1=http1,
                                      trace_head=trace_head)
        if settings.source_dir is not None:
            self.context.extras[CONFIG_DIR_KEY] = settings.source_dir
        self._models = {m.name: PoolModel(m, create_backend(m, self.context), clock)
                        for m in settings.models}

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings,
                   trace_head: TraceHead | None = None) -> AsyncIterator[Pool]:
        """A pool with its shared HTTP clients; everything is closed on exit."""
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        http1 = Http1Client()
        async with aiohttp.ClientSession(connector=connector) as http:
            pool = cls(settings, http, http1, trace_head=trace_head)
            try:
                yield pool
            finally:
                await pool.aclose()
                await http1.aclose()

    @property
    def names(self) -> list[str]:
        return list(self._models)

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def get(self, name: str, *, param: str = "model") -> PoolModel:
        """The member ``name``; an unknown one is a 404 naming ``param``, the field it came
        from."""
        try:
            return self._models[name]
        except KeyError:
            raise UnknownModelError(name, self.names, param=param) from None

    def warm(self) -> list[asyncio.Task[None]]:
        """Start getting every model ready in the background (local weights load now, not
        on the first call); the caller cancels the tasks when it stops."""
        return [asyncio.create_task(m.backend.warm(), name=f"warm-{m.name}")
                for m in self._models.values() if isinstance(m.backend, WarmingBackend)]

    async def sample(self, name: str, request: SampleRequest) -> SampleResult:
        return await self.get(name).sample(request)

    def stream(self, name: str, request: SampleRequest) -> AsyncIterator[StreamDelta]:
        return self.get(name).stream(request)

    def circuit(self, name: str) -> CircuitSnapshot:
        """The model's circuit breaker state (``/v1/models``, ``/healthz``)."""
        return self.get(name).circuit()

    def blocked(self) -> frozenset[str]:
        """Models whose circuit refuses calls now: the policy chooses none of them."""
        return frozenset(name for name, model in self._models.items() if model.blocked())

    def chain(self, name: str) -> tuple[str, ...]:
        """The model, then its configured fallbacks, in order."""
        return (name, *self.get(name).config.fallbacks)

    async def with_fallbacks(self, name: str, call: Callable[[str], Awaitable[T]]) -> T:
        """``call(name)``; when the model fails (:func:`falls_back`), ``call`` of each of its
        fallbacks in turn. The first answer is returned, else the last failure raised; each
        model's call has its own ``timeouts.total``. A model whose circuit is open fails at
        once, so a dead model costs its fallbacks nothing."""
        chain = self.chain(name)
        for i, candidate in enumerate(chain):
            try:
                return await call(candidate)
            except DiffrouteError as exc:
                if i == len(chain) - 1 or not falls_back(exc):
                    raise
                _log.warning("pool.fallback", model=candidate, fallback=chain[i + 1],
                             **error_fields(exc, log_prompts=self.settings.server.log_prompts))
        raise AssertionError("unreachable: the last model returns or raises")

    async def status(self) -> list[ModelStatus]:
        """Every model's readiness, checked concurrently; a failed check is a status, and an
        open circuit overrides the check (the model refuses calls, reachable or not)."""

        async def one(model: PoolModel) -> ModelStatus:
            try:
                status = await model.backend.check()
            except DiffrouteError as exc:
                status = BackendStatus("error", str(exc))
            cfg = model.config
            return ModelStatus(cfg.name, cfg.backend.kind, cfg.family_name, status)

        checked = await asyncio.gather(*(one(m) for m in self._models.values()))
        return self.with_circuits(checked)

    def with_circuits(self, statuses: Sequence[ModelStatus]) -> list[ModelStatus]:
        """``statuses`` (say, checked a while ago) with each model's circuit as it is now: an
        open circuit is the state ``circuit open`` whatever the check said."""
        out = []
        for checked in statuses:
            circuit = self.get(checked.name).circuit()
            check = checked.check or checked.status
            if circuit.state != "open":
                out.append(dataclasses.replace(checked, status=check, circuit=circuit,
                                               check=None))
                continue
            status = BackendStatus("circuit open", f"{circuit.failures} failures in a row, "
                                   f"last: {circuit.last_error}; probe in "
                                   f"{circuit.retry_after or 0:.1f} s")
            out.append(dataclasses.replace(checked, status=status, circuit=circuit, check=check))
        return out

    async def aclose(self) -> None:
        for model in self._models.values():
            await model.backend.aclose()


def falls_back(exc: DiffrouteError) -> bool:
    """Whether a fallback may answer after ``exc``: the model is unavailable (circuit open,
    busy, no key) or failed as a model does (timeout, 5xx, connection, malformed answer, its
    own 429) — not when the request itself was refused (other 4xx) or was wrong."""
    if isinstance(exc, ModelUnavailableError):
        return True
    if isinstance(exc, UpstreamError):
        return counts_as_failure(exc)
    return False
