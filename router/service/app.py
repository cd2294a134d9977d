"""The app factory and the server runner.

``create_app(settings)`` builds the whole service from settings and nothing else happens at
import time. Resources are opened in the app's ``cleanup_ctx``, each given what it needs when
it is built, in this order:

0. tracing, when it is on (``settings.telemetry``; :mod:`router.telemetry`);
1. the pool (backends, the upstream client);
2. the profile baseline (noise floors, predicted rates; in a worker thread) and, from it, the
   noise-aware comparer of live diffs;
3. the store (:mod:`router.store`, the engine the ``store`` settings name), its schema
   migrated;
4. the durable live-diff sink over it (drift monitor, retention) — or a sink the caller
   injects;
5. the pairing service: the policy over the pinned pairings (kept in the store), reading the
   drift monitor;
6. the paired engine: the pool, the pairing service, the sink and the comparer;
7. the recent decisions of ``POST /v1/route``, awaiting a report (``POST /v1/diffs``).

They are closed in reverse order when the app stops, after in-flight requests (and background
shadow calls) have finished.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import json
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from router.config import ServerConfig, Settings
from router.errors import ConfigError, StartupError
from router.live.baseline import ProfileBaseline
from router.live.metrics import LiveMetrics, TimedComparer
from router.live.sink import DurableLiveDiffSink, load_baseline, open_live_sink
from router.logging import flush_logs
from router.paired.compare import Comparer, NoiseAwareComparer, compare
from router.paired.engine import PairedEngine
from router.paired.record import LiveDiffSink
from router.pairing.decider import PolicyDecider, build_decider
from router.pairing.decision import Decider, LiveSource
from router.pairing.pinned import Pairings
from router.pairing.recent import RecentDecisions
from router.pairing.service import PairingService
from router.pool import Pool
from router.service import (
    chat,
    health,
    live_routes,
    openapi,
    pairing_routes,
    report_routes,
    ui,
)
from router.service.health_watch import HealthWatch
from router.service.middleware import (
    REQUEST_IDS,
    REQUEST_OBSERVERS,
    RequestIds,
    host_name,
    is_ip,
    service_middleware,
)
from router.service.runner import ServiceRunner
from router.service.state import (
    KEYS,
    METRICS,
    SETTINGS,
    STATE,
    DeciderFactory,
    DiffProvider,
    Keys,
    RouteModule,
    ServiceState,
    SinkFactory,
)
from router.service.tracing import TRACING, tracing_middleware
from router.store import open_store
from router.telemetry import TracePlan, open_tracing, plan_tracing

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

BUILTIN_ROUTES: tuple[RouteModule, ...] = (
    chat.add_routes, pairing_routes.add_routes, live_routes.add_routes,
    report_routes.add_routes, health.add_routes, openapi.add_routes, ui.add_routes)

_log = structlog.get_logger("diffroute.service")


def create_app(
    settings: Settings,
    *,
    decider_factory: DeciderFactory = build_decider,
    diff_provider: DiffProvider | None = None,
    sink_factory: SinkFactory | None = None,
    comparer: Comparer | None = None,
    ack_records: bool | None = None,
    route_modules: Sequence[RouteModule] = (),
    span_exporter: SpanExporter | None = None,
) -> web.Application:
    """The diffroute HTTP service.

    * ``decider_factory(settings, pool, pairings, live) -> Decider``: the pairing policy;
      default :func:`router.pairing.decider.build_decider`. Rebuilt whenever
      ``PUT /v1/pairings`` succeeds.
    * ``diff_provider(a, b)``: serves ``GET /v1/profiles/diff``; default
      :func:`default_diff_provider` (the data dir's profiles, else the shipped ones).
    * ``sink_factory(settings)``: an async context manager yielding another live-diff sink
      than the durable store (then the live routes answer 503; the store still keeps the
      pairings).
      ``ack_records`` makes paired calls wait for the sink's answer (default: on with the
      durable store, so an id returned to a client is committed first).
    * ``comparer``: replaces the comparison of concurrent audits and shadows (default: the
      noise-aware comparer built from the profile baseline; with an injected sink, the simple
      :func:`router.paired.compare.compare`).
    * ``route_modules``: more ``add_routes(app)`` functions; they find the shared state under
      :data:`router.service.state.STATE`.
    * ``span_exporter``: turns tracing on, each span exported to it as it ends (tests,
      embedding); otherwise tracing follows ``settings.telemetry`` (:mod:`router.telemetry`).
    """
    tracing = plan_tracing(settings.telemetry, exporter=span_exporter)
    app = web.Application(
        client_max_size=settings.server.max_body_bytes,
        middlewares=[service_middleware] if tracing is None else [
            tracing_middleware, service_middleware],
    )
    app[SETTINGS] = settings
    app[KEYS] = resolve_keys(settings)
    app[METRICS] = LiveMetrics()
    app[REQUEST_IDS] = RequestIds()
    app[REQUEST_OBSERVERS] = []
    ack = sink_factory is None if ack_records is None else ack_records
    if tracing is not None:  # opened first, closed last: the resources' last spans go too
        app.cleanup_ctx.append(_tracing(tracing))
    app.cleanup_ctx.append(_resources(
        decider_factory, diff_provider or default_diff_provider(settings), sink_factory,
        comparer, ack))
    for add_routes in (*BUILTIN_ROUTES, *route_modules):
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
    return Keys(client, admin, allowed_hosts(server))


def allowed_hosts(server: ServerConfig) -> frozenset[str] | None:
    """The host names the service answers to (``None``: any): on a loopback address
    ``localhost`` and ``server.allowed_hosts``; elsewhere those, or any when none is given."""
    # a name listed with its port ("gw.internal:8080", as a Host header reads) is that name
    names = frozenset(h if h == "*" else host_name(h) for h in server.allowed_hosts)
    if "*" in names:
        return None
    loopback = is_ip(server.host) and ipaddress.ip_address(server.host).is_loopback
    if server.host == "localhost" or loopback:
        return names | {"localhost"}
    return names or None


def default_diff_provider(settings: Settings) -> DiffProvider:
    """Diffs of pool models from their profiles (store first, then shipped), as JSON.

    Runs in a worker thread (the route does that for plain functions): a diff is numeric work.
    An unknown model is a 404, a model without a profile a 404 naming the command to build it.
    """

    def provide(a: str, b: str) -> dict[str, Any]:
        from router.profiling.sources import diff_models, policy_query

        settings.model(a)
        settings.model(b)
        return diff_models(settings, a, b, policy_query(settings)).to_json()

    return provide


def _tracing(plan: TracePlan) -> Callable[[web.Application], AsyncIterator[None]]:
    """The ``cleanup_ctx`` entry of tracing (when it is on): the tracer provider under
    :data:`TRACING`; at shutdown, the last spans exported (blocking: in a worker thread)."""

    async def tracing(app: web.Application) -> AsyncIterator[None]:
        opened = open_tracing(plan, log_prompts=app[SETTINGS].server.log_prompts)
        app[TRACING] = opened
        try:
            yield
        finally:
            grace = app[SETTINGS].server.shutdown_timeout
            if not await asyncio.to_thread(opened.shutdown, grace):
                _log.warning("tracing.shutdown_incomplete", waited_s=grace,
                             hint="the collector did not take the last spans in time; they "
                                  "are dropped")

    return tracing


def _resources(decider_factory: DeciderFactory, diff_provider: DiffProvider | None,
               sink_factory: SinkFactory | None, comparer: Comparer | None,
               ack_records: bool) -> Callable[[web.Application], AsyncIterator[None]]:
    """The ``cleanup_ctx`` entry: open everything at startup, close it all at shutdown."""

    async def resources(app: web.Application) -> AsyncIterator[None]:
        settings, metrics, tracing = app[SETTINGS], app[METRICS], app.get(TRACING)
        async with AsyncExitStack() as stack:
            pool = await stack.enter_async_context(Pool.open(
                settings, None if tracing is None else tracing.trace_head))
            # local weights load in the background; a request that comes first waits for them
            stack.push_async_callback(_cancel, pool.warm())
            store = await stack.enter_async_context(open_store(settings))
            live: DurableLiveDiffSink | None = None
            if sink_factory is None:
                baseline = await asyncio.to_thread(load_baseline, settings, True)
                live = await stack.enter_async_context(
                    open_live_sink(settings, store, baseline, metrics))
                sink: LiveDiffSink = live
                comparer_ = comparer or TimedComparer(_noise_aware(baseline), metrics)
            else:
                sink = await stack.enter_async_context(sink_factory(settings))
                comparer_ = comparer or compare
            pairing = await PairingService.open(
                _builder(decider_factory, settings, pool, None if live is None else live.monitor),
                store)
            # pairings saved by another instance on the same store take effect here too
            store.watch(pairing.changed)
            stack.push_async_callback(_cancel, [asyncio.create_task(pairing.follow())])
            engine = PairedEngine(pool, pairing, sink, comparer=comparer_,
                                  default_shadow_rate=settings.paired.shadow_rate,
                                  ack_records=ack_records,
                                  log_prompts=settings.server.log_prompts,
                                  tracing=tracing)
            health = await stack.enter_async_context(
                HealthWatch(pool, settings.server.health_interval_s))
            decisions = RecentDecisions(settings.paired.decision_ttl_s,
                                        settings.paired.max_decisions)
            app[STATE] = ServiceState(settings, pool, pairing, engine, live, health,
                                      diff_provider, decisions)
            _log.debug("service.resources_open", models=pool.names,
                       data_dir=str(settings.data_dir))
            try:
                yield
            finally:
                await engine.aclose(grace_s=settings.server.shutdown_timeout)
                _log.info("service.stopped")
                flush_logs()

    return resources


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _noise_aware(baseline: ProfileBaseline) -> Comparer:
    return NoiseAwareComparer(baseline, baseline.types)


def _builder(factory: DeciderFactory, settings: Settings, pool: Pool,
             live: LiveSource | None) -> Callable[[Pairings], Decider]:
    def build(pairings: Pairings) -> Decider:
        return factory(settings, pool, pairings, live)

    return build


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


def serving_app(settings: Settings, **app_options: Any) -> web.Application:
    """The app ``diffroute serve`` runs: :func:`create_app` with the collector tuned once it
    has started (:func:`settle_heap`)."""
    app = create_app(settings, **app_options)
    app.on_startup.append(settle_heap)
    return app


def run_server(settings: Settings, **app_options: Any) -> None:
    """Serve until SIGINT/SIGTERM; in-flight requests get ``server.shutdown_timeout`` to end.

    ``app_options`` go to :func:`create_app`. Logging is configured by the caller (the CLI).
    Once listening, one ``service.started`` line says where to call and how.
    """
    asyncio.run(_serve(serving_app(settings, **app_options), settings))


async def _serve(app: web.Application, settings: Settings) -> None:
    server = settings.server
    # handler_cancellation: a client that disconnects cancels its handler, so its model
    # call gives back its slot and its upstream request is cancelled (router.pool)
    runner = ServiceRunner(app, access_log=None, shutdown_timeout=server.shutdown_timeout,
                           handler_cancellation=True)
    await runner.setup()
    try:
        site = web.TCPSite(runner, server.host, server.port)
        try:
            await site.start()
        except OSError as exc:  # the port is taken, the host is not this machine's, …
            raise StartupError(f"cannot listen on {server.host}:{server.port}: "
                               f"{exc.strerror or exc}") from None
        host, port = runner.addresses[0][:2]
        announce(app, f"http://{'[' + host + ']' if ':' in host else host}:{port}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        _log.info("service.stopping", grace_s=server.shutdown_timeout)
    finally:
        await runner.cleanup()


def announce(app: web.Application, base: str) -> None:
    """The start-up line: where to call, the pool and its profiles, the dashboard, a call."""
    state = app[STATE]
    sources = state.pairing.decider.sources \
        if isinstance(state.pairing.decider, PolicyDecider) else {}
    by_source: dict[str, list[str]] = {}
    for name in state.pool.names:
        by_source.setdefault(sources.get(name, "none"), []).append(name)
    first = state.pool.names[0]
    example = json.dumps({"model": f"audit:{first}",
                          "messages": [{"role": "user", "content": "What is 17 * 23?"}]})
    auth = ""
    if state.settings.server.api_keys:  # without it, the call to try is a 401
        var = state.settings.server.api_keys[0].env_var  # a literal key is never logged
        auth = f' -H "Authorization: Bearer ${var}"' if var else \
            " -H 'Authorization: Bearer <key>'"
    fields: dict[str, Any] = {
        "url": f"{base}/v1", "models": state.pool.names,
        "profiles": {k: v for k, v in sorted(by_source.items())},
        "data_dir": str(state.settings.data_dir),
        "try": f"curl -s {base}/v1/chat/completions -H 'Content-Type: application/json'{auth} "
               f"-d '{example}'"}
    if any(r.canonical.startswith("/ui") for r in app.router.resources()):
        fields["dashboard"] = f"{base}/ui/"
    _log.info("service.started", **fields)
