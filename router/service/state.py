"""The service's shared state, under typed ``web.AppKey``s (never module globals).

Route modules (the built-in ones and those of later subsystems: live diffs, metrics) read what
they need from the app: ``request.app[STATE]`` is ready once the app has started.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from router.config import Settings
from router.decision import Decider
from router.paired import LiveDiffSink, PairedEngine
from router.pairings import Pairings, PairingsStore
from router.pool import Pool

DeciderFactory = Callable[[Settings, Pool, Pairings], Decider]
"""Builds the pairing policy; called at startup and again whenever the pairings change."""

DiffProvider = Callable[[str, str], dict[str, Any] | Awaitable[dict[str, Any] | None] | None]
"""``(a, b)`` → the behavioral diff as JSON, or ``None`` (404) when there is no profile.

May be sync (run in a worker thread: diffs are numeric work) or async; may raise
``LookupError`` (404) or a :class:`router.errors.DiffrouteError`.
"""

SinkFactory = Callable[[Settings], AbstractAsyncContextManager[LiveDiffSink]]
"""Opens the live-diff sink for the app's lifetime (the default keeps records in memory)."""

RouteModule = Callable[[web.Application], None]
"""Adds routes to the app (``app.router.add_get(...)``); see ``create_app(route_modules=)``.

It runs before the app starts, so it may also append to ``app.middlewares`` (metrics),
``app.cleanup_ctx`` (its own resources) or ``app.on_startup``.
"""


@dataclass(frozen=True, slots=True)
class Keys:
    """Resolved API keys; empty ``client`` means the client routes are open."""

    client: tuple[str, ...] = ()
    admin: str | None = None


@dataclass
class ServiceState:
    """Everything a handler needs, built in the app's cleanup context."""

    settings: Settings
    pool: Pool
    pairings_store: PairingsStore
    pairings: Pairings
    decider_factory: DeciderFactory
    decider: Decider
    sink: LiveDiffSink
    engine: PairedEngine
    diff_provider: DiffProvider | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def replace_pairings(self, pairings: Pairings) -> None:
        """Persist new pairings and rebuild the policy from them (the old one stays on error)."""
        decider = self.decider_factory(self.settings, self.pool, pairings)
        attach_live(decider, self.sink)
        self.pairings_store.save(pairings)
        self.pairings, self.decider = pairings, decider


def attach_live(decider: object, sink: object) -> None:
    """Let a decider that reads live outcomes (``live`` attribute) see the sink's monitor."""
    monitor = getattr(sink, "monitor", None)
    if monitor is not None and hasattr(decider, "live"):
        decider.live = monitor


SETTINGS = web.AppKey("diffroute.settings", Settings)
STATE = web.AppKey("diffroute.state", ServiceState)
KEYS = web.AppKey("diffroute.keys", Keys)
