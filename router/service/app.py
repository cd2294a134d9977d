"""The app factory and the server runner.

``create_app(settings)`` builds the whole service from settings and nothing else happens at
import time. Resources — the pool with its HTTP session, the pairings, the policy, the live-diff
sink and the paired engine — are opened in the app's ``cleanup_ctx`` and closed when it stops,
after in-flight requests (and background shadow calls) have finished.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import structlog
from aiohttp import web

from router.compare import compare
from router.config import Settings
from router.decision import Decision, RouteRequest
from router.errors import ConfigError, NoPairError
from router.live import routes as live_routes
from router.live.sink import open_live_sink
from router.logging import flush_logs
from router.paired import Comparer, LiveDiffSink, PairedEngine
from router.pairings import Pairings, PairingsStore
from router.pool import Pool
from router.service import health, openai_routes, openapi, routing_routes
from router.service.middleware import (
    REQUEST_IDS,
    REQUEST_OBSERVERS,
    RequestIds,
    add_request_id_header,
    service_middleware,
)
from router.service.state import (
    KEYS,
    SETTINGS,
    STATE,
    DeciderFactory,
    DiffProvider,
    Keys,
    RouteModule,
    ServiceState,
    SinkFactory,
    attach_live,
)

BUILTIN_ROUTES: tuple[RouteModule, ...] = (
    openai_routes.add_routes, routing_routes.add_routes, health.add_routes, openapi.add_routes)
DEFAULT_ROUTE_MODULES: tuple[RouteModule, ...] = (live_routes.add_routes,)
DEFAULT_SHADOW_RATE = 0.1
"""Fraction of assist calls where the primary answers too (``extensions.service.shadow_rate``)."""

_log = structlog.get_logger("diffroute.service")


def create_app(
    settings: Settings,
    *,
    decider_factory: DeciderFactory | None = None,
    diff_provider: DiffProvider | None = None,
    sink_factory: SinkFactory | None = None,
    comparer: Comparer | None = None,
    ack_records: bool | None = None,
    route_modules: Sequence[RouteModule] | None = None,
) -> web.Application:
    """The diffroute HTTP service.

    * ``decider_factory(settings, pool, pairings) -> Decider``: the pairing policy; default
      ``router.routing.build_decider``. Rebuilt whenever ``PUT /v1/pairings`` succeeds.
    * ``diff_provider(a, b)``: serves ``GET /v1/profiles/diff``; default
      :func:`default_diff_provider` (the data dir's profiles, else the shipped ones).
    * ``sink_factory(settings)``: an async context manager yielding the live-diff sink
      (default: the durable store in ``settings.data_dir``, ``router.live.sink.open_live_sink``);
      ``ack_records`` makes paired calls wait for the sink's answer (default: on with the
      default durable sink, so an id returned to a client is committed first).
    * ``comparer``: replaces the comparison for concurrent audits and shadows (default: the
      sink's own ``comparer`` if it has one — the durable sink's is noise-floor aware — else
      :func:`router.compare.compare`).
    * ``route_modules``: more ``add_routes(app)`` functions; they find the shared state under
      :data:`router.service.state.STATE`. Default: :func:`router.live.routes.add_routes`.
    """
    app = web.Application(
        client_max_size=settings.server.max_body_bytes,
        middlewares=[service_middleware],
    )
    app[SETTINGS] = settings
    app[KEYS] = resolve_keys(settings)
    app[REQUEST_IDS] = RequestIds()
    app[REQUEST_OBSERVERS] = []
    app.on_response_prepare.append(add_request_id_header)
    ack = sink_factory is None if ack_records is None else ack_records
    app.cleanup_ctx.append(_resources(
        decider_factory, diff_provider or default_diff_provider(settings), sink_factory,
        comparer, ack))
    modules = DEFAULT_ROUTE_MODULES if route_modules is None else route_modules
    for add_routes in (*BUILTIN_ROUTES, *modules):
        add_routes(app)
    return app


def resolve_keys(settings: Settings) -> Keys:
    """Read the configured keys now, so a missing ``env:`` variable fails at start, not later."""
    server = settings.server
    missing = [ref.describe() for ref in (*server.api_keys, server.admin_key)
               if ref is not None and ref.value() is None]
    if missing:
        raise ConfigError([f"server key {m} is not set in the environment" for m in missing])
    client = tuple(v for ref in server.api_keys if (v := ref.value()) is not None)
    admin = server.admin_key.value() if server.admin_key is not None else None
    return Keys(client, admin)


def default_decider_factory() -> DeciderFactory:
    """``router.routing.build_decider`` when the policy module is installed, else no policy."""
    if importlib.util.find_spec("router.routing") is None:
        _log.warning("service.no_policy", detail="router.routing is missing; paired calls "
                     "and /v1/route answer 409 unless a partner is given")
        return lambda settings, pool, pairings: NoPolicy()
    from router import routing  # type: ignore[attr-defined, unused-ignore]

    factory: DeciderFactory = routing.build_decider
    return factory


def default_diff_provider(settings: Settings) -> DiffProvider:
    """Diffs of pool models from their profiles (store first, then shipped), as JSON.

    Runs in a worker thread (the route does that for plain functions): a diff is numeric work.
    An unknown model is a 404, a model without a profile a 404 naming the command to build it.
    """

    def provide(a: str, b: str) -> dict[str, Any]:
        from router.diffing import diff_models

        settings.model(a)
        settings.model(b)
        return diff_models(settings, a, b).to_json()

    return provide


class NoPolicy:
    """A Decider for a service without a pairing policy: every decision is a 409."""

    version = ""

    def decide(self, request: RouteRequest) -> Decision:
        raise NoPairError(request.primary or "auto", request.role, "no pairing policy is loaded")


def _sink_comparer(sink: LiveDiffSink) -> Comparer:
    """A sink that knows the pairs' noise floors brings its comparer; else the simple one."""
    found: Comparer = getattr(sink, "comparer", compare)
    return found


def _shadow_rate(settings: Settings) -> float:
    service = settings.extensions.get("service", {})
    rate = service.get("shadow_rate", DEFAULT_SHADOW_RATE) if isinstance(service, dict) else None
    if not isinstance(rate, int | float) or not 0 <= rate <= 1:
        raise ConfigError(["extensions.service.shadow_rate: must be a number in [0, 1]"])
    return float(rate)


def _resources(decider_factory: DeciderFactory | None, diff_provider: DiffProvider | None,
               sink_factory: SinkFactory | None, comparer: Comparer | None,
               ack_records: bool) -> Callable[[web.Application], AsyncIterator[None]]:
    """The ``cleanup_ctx`` entry: open everything at startup, close it all at shutdown."""

    async def resources(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        factory = decider_factory or default_decider_factory()
        store = PairingsStore(settings.data_dir)
        pairings = _load_pairings(store)
        async with Pool.open(settings) as pool, (sink_factory or open_live_sink)(settings) as sink:
            # building the policy reads profiles and indexes the suite: seconds, not for the loop
            decider = await asyncio.to_thread(factory, settings, pool, pairings)
            attach_live(decider, sink)
            state = ServiceState(
                settings=settings, pool=pool, pairings_store=store, pairings=pairings,
                decider_factory=factory, decider=decider, sink=sink,
                engine=PairedEngine(pool, lambda: app[STATE].decider, sink,
                                    default_shadow_rate=_shadow_rate(settings),
                                    ack_records=ack_records,
                                    log_prompts=settings.server.log_prompts,
                                    comparer=comparer or _sink_comparer(sink)),
                diff_provider=diff_provider)
            app[STATE] = state
            _log.info("service.started", models=pool.names, data_dir=str(settings.data_dir))
            try:
                yield
            finally:
                await state.engine.aclose(grace_s=settings.server.shutdown_timeout)
                _log.info("service.stopped")
                flush_logs()

    return resources


def _load_pairings(store: PairingsStore) -> Pairings:
    try:
        return store.load()
    except ValueError as exc:  # pydantic's ValidationError and JSON errors
        raise ConfigError([f"invalid pairings file: {exc}"], str(store.path)) from None


GC_THRESHOLD = (10_000, 10, 10)
"""The serving process's collector thresholds (Python's default first one is 700)."""


async def settle_heap(_app: web.Application) -> None:
    """``on_startup`` of a serving process, once the resources are open.

    What start-up built — modules, settings, profiles, the policy's tables, the suite — lives
    as long as the process, so it is moved out of the collector's sight (``gc.freeze``): a
    full collection otherwise walks it all, about 45 ms with the embedded pool's ~100,000
    objects, and it was the proxy's p99. A request allocates hundreds of short-lived
    containers; a first threshold of 10,000 instead of 700 collects them a dozen times less
    often for the same result (reference counting frees nearly all of them anyway).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def run_server(settings: Settings, **app_options: Any) -> None:
    """Serve until SIGINT/SIGTERM; in-flight requests get ``server.shutdown_timeout`` to end.

    ``app_options`` go to :func:`create_app`. Logging is configured by the caller (the CLI).
    The process's collector is tuned once the app has started (:func:`settle_heap`).
    """
    app = create_app(settings, **app_options)
    app.on_startup.append(settle_heap)
    server = settings.server
    web.run_app(app, host=server.host, port=server.port, access_log=None,
                shutdown_timeout=server.shutdown_timeout, print=None,
                handle_signals=True)
