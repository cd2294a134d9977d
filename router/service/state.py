"""The service's shared state, under typed ``web.AppKey``s (never module globals).

Route modules read what they need from the app: ``request.app[STATE]`` is ready once the app
has started (its resources are opened in the app's cleanup context).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from router.config import Settings
from router.live.metrics import LiveMetrics
from router.live.sink import DurableLiveDiffSink
from router.paired.engine import PairedEngine
from router.paired.record import LiveDiffSink
from router.pairing.decision import Decider, LiveSource
from router.pairing.pinned import Pairings
from router.pairing.recent import RecentDecisions
from router.pairing.service import PairingService
from router.pool import Pool
from router.service.health_watch import HealthWatch

DeciderFactory = Callable[[Settings, Pool, Pairings, LiveSource | None], Decider]
"""Builds the pairing policy from the settings, the pool, the pinned pairings and the live
outcomes it reads (``None`` without the durable live store); called at startup and again
whenever the pairings change."""

DiffProvider = Callable[[str, str], dict[str, Any] | Awaitable[dict[str, Any] | None] | None]
"""``(a, b)`` → the behavioral diff as JSON, or ``None`` (404) when there is no profile.

May be sync (run in a worker thread: diffs are numeric work) or async; may raise
``LookupError`` (404) or a :class:`router.errors.DiffrouteError`.
"""

SinkFactory = Callable[[Settings], AbstractAsyncContextManager[LiveDiffSink]]
"""Opens another live-diff sink than the durable store for the app's lifetime (tests)."""

RouteModule = Callable[[web.Application], None]
"""Adds routes to the app (``app.router.add_get(...)``); see ``create_app(route_modules=)``.

It runs before the app starts, so it may also append to ``app.middlewares``,
``app.cleanup_ctx`` (its own resources) or ``app.on_startup``.
"""


@dataclass(frozen=True, slots=True)
class Keys:
    """Resolved API keys (empty ``client``: the client routes are open) and host names."""

    client: tuple[str, ...] = ()
    admin: str | None = None
    hosts: frozenset[str] | None = None
    """The host names requests may name (IP addresses and ``*.localhost`` always may);
    ``None``: any (``server.allowed_hosts``)."""
    good_hosts: set[str] = field(default_factory=set, compare=False, hash=False)
    """``Host`` header values already found allowed (a service sees a handful)."""


@dataclass(frozen=True, slots=True)
class ServiceState:
    """Everything a handler needs, built in the app's cleanup context."""

    settings: Settings
    pool: Pool
    pairing: PairingService
    engine: PairedEngine
    live: DurableLiveDiffSink | None
    """The durable live-diff store, rates and drift; ``None`` when another sink was given."""
    health: HealthWatch
    diff_provider: DiffProvider | None = None
    decisions: RecentDecisions = field(default_factory=RecentDecisions)
    """Routed decisions awaiting a report (``POST /v1/route`` → ``POST /v1/diffs``)."""


SETTINGS = web.AppKey("diffroute.settings", Settings)
STATE = web.AppKey("diffroute.state", ServiceState)
KEYS = web.AppKey("diffroute.keys", Keys)
METRICS = web.AppKey("diffroute.metrics", LiveMetrics)
"""The app's Prometheus registry (there from the start: request metrics need it at once)."""
