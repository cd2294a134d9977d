"""The pool: the configured models, their backends, concurrency limits and health.

One :class:`Pool` per process owns the shared HTTP clients
(:class:`~router.backends.http1.Http1Client` for the OpenAI backend, an aiohttp
``ClientSession`` for plugin backends) and every backend.
Calls go through :meth:`Pool.sample` / :meth:`Pool.stream`, which apply the model's decoding
overrides and its ``max_concurrency`` limit.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp

from profiles.protocol import SampleRequest, SampleResult
from router.backends import (
    Backend,
    BackendContext,
    BackendStatus,
    ForwardingBackend,
    StreamDelta,
    create_backend,
)
from router.backends.base import WarmingBackend
from router.backends.http1 import Http1Client
from router.backends.llamacpp import CONFIG_DIR_KEY
from router.config import ModelConfig, Settings
from router.errors import DiffrouteError, UnknownModelError


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """One row of ``diffroute models``."""

    name: str
    kind: str
    family: str
    status: BackendStatus


class Limiter:
    """At most ``limit`` holders at once, first come first served (``async with limiter:``).

    What ``asyncio.Semaphore`` does, for the path every call takes: in Python 3.11 its
    ``acquire`` scans the waiters through a generator even when nobody waits. Here a free slot
    is one comparison, and a released slot is handed straight to the oldest waiter.
    """

    __slots__ = ("_free", "_waiters")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a limit must be at least 1")
        self._free = limit
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def free(self) -> int:
        """Slots nobody holds."""
        return self._free

    async def __aenter__(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # the slot was handed over as the task was cancelled
            else:
                self._waiters.remove(waiter)
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._release()

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to it: _free does not change
                return
        self._free += 1


class PoolModel:
    """A pool member as a :class:`profiles.protocol.ModelClient`: limits and overrides applied."""

    def __init__(self, config: ModelConfig, backend: Backend) -> None:
        self.config = config
        self.backend = backend
        self._limit = Limiter(config.max_concurrency)
        self._forwarder = backend if isinstance(backend, ForwardingBackend) else None

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

    async def sample(self, request: SampleRequest) -> SampleResult:
        async with self._limit:
            return await self.backend.sample(self._apply(request))

    async def forward(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Pass a client's chat body through (see :class:`ForwardingBackend`), within the
        model's concurrency limit; the backend applies the model's overrides."""
        if self._forwarder is None:
            raise TypeError(f"the backend of '{self.name}' cannot forward bodies")
        async with self._limit:
            return await self._forwarder.forward(body)

    async def forward_stream(self, body: Mapping[str, Any]
                             ) -> AsyncGenerator[dict[str, Any], None]:
        """Pass a client's streamed chat body through, within the concurrency limit."""
        if self._forwarder is None:
            raise TypeError(f"the backend of '{self.name}' cannot forward bodies")
        async with self._limit:
            async for chunk in self._forwarder.forward_stream(body):
                yield chunk

    async def stream(self, request: SampleRequest) -> AsyncIterator[StreamDelta]:
        async with self._limit:
            async for delta in self.backend.stream(self._apply(request)):
                yield delta


class Pool:
    """The configured models, built from settings."""

    def __init__(self, settings: Settings, http: aiohttp.ClientSession | None = None,
                 http1: Http1Client | None = None) -> None:
        self.settings = settings
        self.context = BackendContext(data_dir=settings.data_dir, http=http, http1=http1)
        if settings.source_dir is not None:
            self.context.extras[CONFIG_DIR_KEY] = settings.source_dir
        self._models = {m.name: PoolModel(m, create_backend(m, self.context))
                        for m in settings.models}

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[Pool]:
        """A pool with its shared HTTP clients; everything is closed on exit."""
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        http1 = Http1Client()
        async with aiohttp.ClientSession(connector=connector) as http:
            pool = cls(settings, http, http1)
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

    def get(self, name: str) -> PoolModel:
        try:
            return self._models[name]
        except KeyError:
            raise UnknownModelError(name, self.names) from None

    def warm(self) -> list[asyncio.Task[None]]:
        """Start getting every model ready in the background (local weights load now, not
        on the first call); the caller cancels the tasks when it stops."""
        return [asyncio.create_task(m.backend.warm(), name=f"warm-{m.name}")
                for m in self._models.values() if isinstance(m.backend, WarmingBackend)]

    async def sample(self, name: str, request: SampleRequest) -> SampleResult:
        return await self.get(name).sample(request)

    def stream(self, name: str, request: SampleRequest) -> AsyncIterator[StreamDelta]:
        return self.get(name).stream(request)

    async def status(self) -> list[ModelStatus]:
        """Every model's readiness, checked concurrently; a failed check is a status."""

        async def one(model: PoolModel) -> ModelStatus:
            try:
                status = await model.backend.check()
            except DiffrouteError as exc:
                status = BackendStatus("error", str(exc))
            cfg = model.config
            return ModelStatus(cfg.name, cfg.backend.kind, cfg.family_name, status)

        return list(await asyncio.gather(*(one(m) for m in self._models.values())))

    async def aclose(self) -> None:
        for model in self._models.values():
            await model.backend.aclose()
