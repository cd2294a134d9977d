"""What the HTTP service costs on top of its upstreams, against minimal aiohttp baselines.

All in one run, against one fake OpenAI upstream (``tests.fakes.FakeUpstream``, a fixed
``--latency`` per call, 2 ms by default) on 127.0.0.1:

(a) plain proxy (``model: alpha``): added latency at concurrency 1 (p50, p99) and throughput at
    concurrency 64, against calling the upstream directly and against a minimal aiohttp
    pass-through proxy (forwards the body, returns the upstream's bytes);
(b) ``POST /v1/route`` throughput against a hello-world aiohttp JSON handler;
(c) the audit path (``model: audit:alpha``: alpha and beta answer concurrently, the answers are
    compared and recorded) against a minimal two-call proxy (forwards the body to the upstream
    twice, concurrently, waits for both and returns the first call's bytes);
(d) a streamed plain call (``stream: true``; the fake sends one event per word, then usage and
    ``[DONE]``) against a minimal streaming proxy (relays the upstream's bytes as they come);
(e) with ``--telemetry``: the plain proxy with tracing on (every request a server span,
    exported in batches over OTLP/HTTP to a receiver on loopback that decodes and counts them)
    against the same service with tracing off, and both against the minimal proxy;
(f) with ``--floor``: where ``/v1/route``'s CPU goes — diffroute's app with a handler that does
    nothing, without its middleware, with it (logs at WARNING) and with the access line too,
    each against the hello world, beside ``/v1/route`` itself.

The baseline proxies make their upstream calls with the client diffroute uses,
``router.backends.http1.Http1Client`` (keep-alive pool, ``httptools`` parser), so they are as
tuned as the subject; ``--baseline-client aiohttp`` gives them aiohttp's ``ClientSession`` (an
unlimited ``TCPConnector``) instead, as a minimal aiohttp proxy would be written.

Every server — the upstream, diffroute and each baseline — runs in its own child process, served
the same way (``aiohttp.web.AppRunner``, default asyncio loop, no aiohttp access log).
diffroute runs as ``diffroute serve`` does: JSON logs on (written to a temporary file), and
``handler_cancellation`` on (a client that disconnects cancels its handler; a task per request). Its
pairing decisions for (b) and (c) come from the app's default policy,
``router.pairing.decider.build_decider`` (``--policy real``, the default when it exists; the
fake models have no profiles, so it decides by its family rule after embedding the task and
searching the probe index), or from the tests' ``FamilyDecider`` (``--policy test``).

The load generator is ``wrk`` when it is installed (one thread, ``-c`` connections, a Lua
script per body; see ``benchmarks/_wrk.py``), else one ``aiohttp.ClientSession`` in this process
(which caps the fastest cases near 8,000 req/s: the figures say which one ran). With two or more
CPUs the servers under test are pinned to the last one and the generator and the upstream to
the others (``--no-pin`` to let the kernel place them). Each round measures every comparison's
baseline and subject back to back, in alternating order from one round to the next; a ratio is
the median over rounds of the rounds' subject/baseline ratios, with the sign test's interval.

    python -m benchmarks.service [--duration 10] [--rounds 5] [--latency 0.002] [--policy real]
                                 [--baseline-client http1|aiohttp] [--distinct-tasks]
                                 [--telemetry] [--floor] [--no-pin] [--python-load]

Run it from the repository root (it imports ``tests.fakes``). ``--cprofile DIR`` writes a
cProfile of each proxy server process for the whole run to ``DIR/<server>.prof``
(``python -m pstats DIR/diffroute.prof``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import itertools
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from benchmarks._common import (
    ServerProcess,
    announce,
    median,
    median_interval,
    print_table,
    process_cpu_seconds,
    run_load,
    serve_app,
    spawn_server,
    wait_for_termination,
)
from benchmarks._wrk import find_wrk, lua_script, run_wrk, wrk_version

ROOT = Path(__file__).resolve().parent.parent
CHAT = "/v1/chat/completions"
ANSWER = "Paris is the capital."
QUESTION = "What is the capital of France?"
JSON_HEADERS = {"Content-Type": "application/json"}
HELLO_BYTES = json.dumps({"hello": "world"}).encode()
GENERATOR_BUSY = 0.9
"""A load generator using more than this share of its core may be what limits the rate."""
GENERATOR_HEAVY = 0.5
"""…and so may one whose CPU per request is more than this fraction of the measured server's:
on a shared machine both get a similar share of a core, so the costlier one sets the pace."""


def chat_body(model: str, *, stream: bool = False) -> bytes:
    body: dict[str, Any] = {"model": model, "max_tokens": 16,
                            "messages": [{"role": "user", "content": QUESTION}]}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


ROUTE_BODY = json.dumps({"role": "audit", "primary": "alpha", "task": QUESTION}).encode()
DISTINCT_ROUTE = (f'{{"role": "audit", "primary": "alpha", "task": "{QUESTION} (variant ', ')"}')
"""A ``/v1/route`` body around a per-request ``<salt>-<n>``: a task text no cache has seen."""


def distinct_route_bodies() -> Callable[[], bytes]:
    """:data:`DISTINCT_ROUTE` bodies for the Python load generator."""
    numbers = itertools.count()
    salt = os.urandom(4).hex()  # each round gets texts of its own
    prefix, suffix = DISTINCT_ROUTE
    return lambda: f"{prefix}{salt}-{next(numbers)}{suffix}".encode()


# --- the servers (each runs in a child process) ----------------------------------------------


async def run_upstream(latency: float) -> None:
    """The fake OpenAI upstream; its call log is cleared often so memory stays flat."""
    from tests.fakes import FakeUpstream  # the benchmark runs from the repo root

    async with FakeUpstream(answer=ANSWER, latency=latency,
                            models=("fake-a", "fake-b")) as fake:
        announce(fake.url)

        async def forget() -> None:
            while True:
                await asyncio.sleep(0.5)
                fake.calls.clear()

        forgetting = asyncio.create_task(forget())
        await wait_for_termination()
        forgetting.cancel()


async def run_otlp_receiver() -> None:
    """An OTLP/HTTP traces receiver: ``POST /v1/traces`` decoded and counted; ``GET /count``
    says how many spans arrived."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    received = {"requests": 0, "spans": 0}

    async def traces(request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        received["requests"] += 1
        received["spans"] += sum(len(s.spans) for r in message.resource_spans
                                 for s in r.scope_spans)
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def count(_request: web.Request) -> web.Response:
        return web.json_response(received)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", traces)
    app.router.add_get("/count", count)
    await serve_app(app)


class Upstream:
    """The baselines' way to the upstream: ``post`` whole, or ``stream`` the body's chunks.

    ``http1``: ``router.backends.http1.Http1Client``, the client diffroute's backends use (with
    the OpenAI backend's default timeouts); ``aiohttp``: one ``ClientSession`` with an unlimited
    ``TCPConnector``. Both keep connections alive.
    """

    def __init__(self, url: str, client: str) -> None:
        from router.backends.http1 import Endpoint, Http1Client, HttpTimeouts, encode_headers

        self.client = client
        self._url = url
        self._endpoint = Endpoint.parse(url)
        self._head = encode_headers(JSON_HEADERS)
        self._timeouts = HttpTimeouts(connect=5, read=60, total=120)
        self._http1 = Http1Client() if client == "http1" else None
        self._session = (aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
                         if client == "aiohttp" else None)

    async def post(self, body: bytes) -> tuple[int, bytes]:
        if self._http1 is not None:
            reply = await self._http1.post(self._endpoint, self._head, body, self._timeouts)
            return reply.status, reply.body
        assert self._session is not None
        async with self._session.post(self._url, data=body, headers=JSON_HEADERS) as response:
            return response.status, await response.read()

    async def relay(self, request: web.Request, body: bytes) -> web.StreamResponse:
        """Send ``body`` and relay the answer's bytes to ``request`` as they arrive."""
        if self._http1 is not None:
            stream = await self._http1.open("POST", self._endpoint, self._head, body,
                                            self._timeouts)
            try:
                response = await _prepare(request, stream.status, stream.content_type)
                async for chunk in stream.chunks():
                    await response.write(chunk)
            finally:
                stream.close()
        else:
            assert self._session is not None
            async with self._session.post(self._url, data=body,
                                          headers=JSON_HEADERS) as upstream:
                response = await _prepare(request, upstream.status,
                                          upstream.headers.get("Content-Type", "text/plain"))
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
        await response.write_eof()
        return response

    async def aclose(self) -> None:
        if self._http1 is not None:
            await self._http1.aclose()
        if self._session is not None:
            await self._session.close()


async def _prepare(request: web.Request, status: int, content_type: str) -> web.StreamResponse:
    response = web.StreamResponse(status=status, headers={"Content-Type": content_type})
    await response.prepare(request)
    return response


UPSTREAM = web.AppKey("upstream", Upstream)


def _proxy_app(url: str, client: str,
               handler: Callable[[web.Request], Any]) -> web.Application:
    async def upstream(app: web.Application) -> AsyncIterator[None]:
        app[UPSTREAM] = Upstream(url, client)  # built inside the running loop
        yield
        await app[UPSTREAM].aclose()

    app = web.Application()
    app.cleanup_ctx.append(upstream)
    app.router.add_post(CHAT, handler)
    return app


def minimal_proxy(upstream: str, client: str) -> web.Application:
    """Forward the body to the upstream and return its bytes: the least a proxy can do."""

    async def handler(request: web.Request) -> web.Response:
        status, payload = await request.app[UPSTREAM].post(await request.read())
        return web.Response(status=status, body=payload, content_type="application/json")

    return _proxy_app(upstream + CHAT, client, handler)


def streaming_proxy(upstream: str, client: str) -> web.Application:
    """Forward the body and relay the upstream's response bytes as they arrive."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return await request.app[UPSTREAM].relay(request, await request.read())

    return _proxy_app(upstream + CHAT, client, handler)


def two_call_proxy(upstream: str, client: str) -> web.Application:
    """Forward the body twice concurrently, wait for both, return the first call's bytes."""

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        forward = request.app[UPSTREAM].post
        (status, payload), _ = await asyncio.gather(forward(body), forward(body))
        return web.Response(status=status, body=payload, content_type="application/json")

    return _proxy_app(upstream + CHAT, client, handler)


def hello_world() -> web.Application:
    """A JSON handler that does nothing (it does not read the body)."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=HELLO_BYTES, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/route", handler)
    return app


def default_policy() -> str:
    """``real`` (``router.pairing.decider.build_decider``) when it exists, else ``test``."""
    import importlib.util

    return "real" if importlib.util.find_spec("router.pairing.decider") is not None else "test"


def describe_policy(policy: str) -> str:
    if policy == "real":
        return ("router.pairing.decider.build_decider (these fake models have no profiles: "
                "it embeds the task, searches the probe index, then applies the family rule)")
    return "tests FamilyDecider (audit partner = first model of another family)"


def diffroute(upstream: str, data_dir: Path, policy: str = "test",
              otlp: str | None = None, sample_ratio: float = 1.0,
              log_level: str = "INFO") -> web.Application:
    """The real service over a pool of two ``kind: openai`` models on the fake upstream;
    ``otlp``: with tracing on, exporting to this collector (``sample_ratio`` of the traces)."""
    from router.config import settings_from_mapping
    from router.logging import configure_logging
    from router.service import create_app
    from router.service.app import settle_heap
    from tests.e2e.harness import FamilyDecider, remote

    models = [remote("alpha", "a", upstream + "/v1", "fake-a", max_concurrency=1024),
              remote("beta", "b", upstream + "/v1", "fake-b", max_concurrency=1024)]
    telemetry = {} if otlp is None else {"telemetry": {"otlp_endpoint": otlp,
                                                       "sample_ratio": sample_ratio}}
    settings = settings_from_mapping({"models": models, "data_dir": str(data_dir),
                                      "server": {"shutdown_timeout": 1}, **telemetry})
    # as `diffroute serve` runs, but to stderr (a temporary file): stdout is the parent's pipe
    configure_logging("json", level=log_level, stream=sys.stderr.buffer)
    if policy == "real":
        app = create_app(settings)  # the app's default decider (build_decider)
    else:
        app = create_app(settings, decider_factory=FamilyDecider)
    app.on_startup.append(settle_heap)  # as run_server (diffroute serve) does
    return app


FLOOR_PATH = "/bench/constant"
"""Where :func:`floor_app` serves its handler that does nothing."""
FLOOR_LAYERS = {"floor-app": "diffroute's app, no middleware",
                "floor-quiet": "+ its middleware, logs at WARNING (no access line)",
                "floor-logged": "+ the access line (as served)"}
"""The servers of the ``floor`` group: diffroute's app with one layer more each."""


def floor_app(kind: str, upstream: str, data_dir: Path, policy: str) -> web.Application:
    """The app :func:`diffroute` builds, plus a handler that does nothing at
    :data:`FLOOR_PATH` (the hello world's): what aiohttp, diffroute's app and its middleware
    cost a request before any route's work. ``kind`` is a key of :data:`FLOOR_LAYERS`."""
    app = diffroute(upstream, data_dir, policy,
                    log_level="INFO" if kind == "floor-logged" else "WARNING")
    if kind == "floor-app":
        app.middlewares.clear()

    async def constant(_request: web.Request) -> web.Response:
        return web.Response(body=HELLO_BYTES, content_type="application/json")

    app.router.add_post(FLOOR_PATH, constant)
    return app


def run_child(kind: str, upstream: str, latency: float, profile: str | None,
              policy: str, client: str, otlp: str | None = None,
              sample_ratio: float = 1.0) -> None:
    """Entry point of a child process."""
    with tempfile.TemporaryDirectory() as data_dir:
        main: Any
        if kind == "upstream":
            main = run_upstream(latency)
        elif kind == "otlp":
            main = run_otlp_receiver()
        else:
            apps: dict[str, Callable[[], web.Application]] = {
                "minimal": lambda: minimal_proxy(upstream, client),
                "two-call": lambda: two_call_proxy(upstream, client),
                "streaming": lambda: streaming_proxy(upstream, client),
                "hello": hello_world,
                "diffroute": lambda: diffroute(upstream, Path(data_dir), policy),
                "traced": lambda: diffroute(upstream, Path(data_dir), policy, otlp,
                                            sample_ratio),
                **{layer: (lambda layer=layer: floor_app(layer, upstream, Path(data_dir), policy))
                   for layer in FLOOR_LAYERS},
            }
            # diffroute as `diffroute serve` runs it: a disconnecting client cancels its
            # handler (router.service.app._serve), which costs a task per request
            main = serve_app(apps[kind](), handler_cancellation=kind not in (
                "minimal", "two-call", "streaming", "hello"))
        profiler = cProfile.Profile() if profile else None
        if profiler is not None:
            profiler.enable()
        try:
            asyncio.run(main)
        finally:
            if profiler is not None and profile:
                profiler.disable()
                profiler.dump_stats(profile)


# --- the measurements ------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One measured thing: POST ``body`` to ``server`` + ``path`` at ``concurrency``."""

    name: str
    server: str
    path: str
    body: bytes
    concurrency: int
    distinct: bool = False
    """Each request a new task text instead of ``body`` (:data:`DISTINCT_ROUTE`)."""


@dataclass(frozen=True)
class Comparison:
    """A subject's throughput over its baseline's, with the ratio it should reach."""

    label: str
    subject: str
    baseline: str
    target: float | None = None


GROUPS = ("latency", "plain", "route", "audit", "stream", "telemetry", "floor")
"""The groups of cases, by name (``--only``); ``telemetry`` only with ``--telemetry``,
``floor`` only with ``--floor``."""


def floor_cases(high: int) -> list[Case]:
    """The ``floor`` group: the hello world, diffroute's app with a handler that does nothing
    and one layer more each (:data:`FLOOR_LAYERS`), and ``/v1/route``, back to back."""
    return [Case(f"floor: hello-world JSON, c={high}", "hello", "/v1/route", ROUTE_BODY, high),
            *(Case(f"floor: {label}, c={high}", kind, FLOOR_PATH, ROUTE_BODY, high)
              for kind, label in FLOOR_LAYERS.items()),
            Case(f"floor: diffroute /v1/route, c={high}", "diffroute", "/v1/route", ROUTE_BODY,
                 high)]


def groups(high: int, distinct_tasks: bool = False, telemetry: bool = False,
           floor: bool = False) -> dict[str, list[Case]]:
    """The cases measured back to back: each subject with its baselines (one machine load)."""
    plain, audit = chat_body("alpha"), chat_body("audit:alpha")
    streamed = chat_body("alpha", stream=True)
    route = [Case(f"hello-world JSON, c={high}", "hello", "/v1/route", ROUTE_BODY, high),
             Case(f"diffroute /v1/route, c={high}", "diffroute", "/v1/route", ROUTE_BODY, high)]
    if distinct_tasks:
        route.append(Case(f"diffroute /v1/route distinct tasks, c={high}", "diffroute",
                          "/v1/route", ROUTE_BODY, high, distinct=True))
    traced = [Case(f"minimal proxy, c={high}", "minimal", CHAT, plain, high),
              Case(f"diffroute plain, c={high}", "diffroute", CHAT, plain, high),
              Case(f"diffroute plain traced, c={high}", "traced", CHAT, plain, high)]
    return dict(zip(GROUPS, [
        [Case("upstream direct, c=1", "upstream", CHAT, plain, 1),
         Case("minimal proxy, c=1", "minimal", CHAT, plain, 1),
         Case("diffroute plain, c=1", "diffroute", CHAT, plain, 1)],
        [Case(f"upstream direct, c={high}", "upstream", CHAT, plain, high),
         Case(f"minimal proxy, c={high}", "minimal", CHAT, plain, high),
         Case(f"diffroute plain, c={high}", "diffroute", CHAT, plain, high)],
        route,
        [Case(f"two-call proxy, c={high}", "two-call", CHAT, audit, high),
         Case(f"diffroute audit, c={high}", "diffroute", CHAT, audit, high)],
        [Case(f"streaming proxy, c={high}", "streaming", CHAT, streamed, high),
         Case(f"diffroute stream, c={high}", "diffroute", CHAT, streamed, high)],
        traced if telemetry else [],
        floor_cases(high) if floor else [],
    ], strict=True))


def comparisons(high: int, distinct_tasks: bool = False) -> list[Comparison]:
    c = f", c={high}"
    rows = [
        Comparison(f"(a) plain{c} vs minimal proxy", f"diffroute plain{c}",
                   f"minimal proxy{c}", 0.9),
        Comparison(f"(b) /v1/route{c} vs hello world", f"diffroute /v1/route{c}",
                   f"hello-world JSON{c}", 0.5),
        Comparison(f"(c) audit{c} vs two-call proxy", f"diffroute audit{c}",
                   f"two-call proxy{c}", 0.8),
        Comparison(f"(d) stream{c} vs streaming proxy", f"diffroute stream{c}",
                   f"streaming proxy{c}"),
        Comparison(f"(a) plain{c} vs upstream direct", f"diffroute plain{c}",
                   f"upstream direct{c}"),
        Comparison(f"(e) plain traced{c} vs plain, telemetry off", f"diffroute plain traced{c}",
                   f"diffroute plain{c}"),
        Comparison(f"(e) plain traced{c} vs minimal proxy", f"diffroute plain traced{c}",
                   f"minimal proxy{c}"),
    ]
    hello = f"floor: hello-world JSON{c}"
    rows += [Comparison(f"(f) {label}{c} vs hello world", f"floor: {label}{c}", hello)
             for label in (*FLOOR_LAYERS.values(), "diffroute /v1/route")]
    if distinct_tasks:
        rows.insert(2, Comparison(f"(b) /v1/route distinct tasks{c} vs hello world",
                                  f"diffroute /v1/route distinct tasks{c}",
                                  f"hello-world JSON{c}"))
    return rows


@dataclass(frozen=True)
class Load:
    """What the load generator saw in one run."""

    throughput: float
    p50_ms: float
    p99_ms: float
    ok: int
    errors: int
    first_error: str | None
    elapsed_s: float
    cpu_s: float
    """CPU seconds the load generator used."""


class WrkLoad:
    """``wrk -t1``, one Lua script per case, on ``cpus`` when given."""

    def __init__(self, wrk: str, cpus: Sequence[int] | None) -> None:
        self.wrk, self.cpus = wrk, cpus
        self.name = f"{wrk_version(wrk)} ({wrk}), 1 thread"

    async def run(self, url: str, case: Case, duration_s: float) -> Load:
        script = lua_script(case.body, distinct=DISTINCT_ROUTE if case.distinct else None)
        result = await run_wrk(self.wrk, url, script, connections=case.concurrency,
                               duration_s=duration_s, cpus=self.cpus)
        return Load(result.throughput * result.ok / result.requests if result.requests else 0.0,
                    result.latency_ms.get(50, math.nan), result.latency_ms.get(99, math.nan),
                    result.ok, result.errors,
                    f"{result.non_2xx} non-2xx, {result.socket_errors} socket errors"
                    if result.errors else None,
                    result.elapsed_s, result.cpu_s)


class PythonLoad:
    """One ``aiohttp.ClientSession`` in this process, closed loop (the fallback)."""

    name = "Python: one aiohttp.ClientSession in the parent process (wrk not used)"

    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http

    async def run(self, url: str, case: Case, duration_s: float) -> Load:
        make_body = distinct_route_bodies() if case.distinct else (lambda: case.body)

        async def send() -> None:
            async with self.http.post(url, data=make_body(), headers=JSON_HEADERS) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status} from {url}")

        cpu = time.process_time()
        result = await run_load(send, concurrency=case.concurrency, duration_s=duration_s,
                                max_requests=10**8)
        return Load(result.throughput, result.latency_ms(50), result.latency_ms(99), result.ok,
                    result.errors, result.first_error, result.elapsed_s,
                    time.process_time() - cpu)


Generator = WrkLoad | PythonLoad


@dataclass(frozen=True)
class Run:
    """One measurement: the load and the CPU seconds the measured server and upstream used."""

    load: Load
    server_cpu_s: float
    upstream_cpu_s: float

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.server_cpu_s / self.load.ok if self.load.ok else math.nan

    @property
    def generator_cost(self) -> float:
        """The load generator's CPU per request over the measured server's."""
        return self.load.cpu_s / self.server_cpu_s if self.server_cpu_s else math.nan

    def share(self, cpu_s: float) -> float:
        """``cpu_s`` over the run's wall time: 1.0 is one core busy throughout."""
        return cpu_s / self.load.elapsed_s if self.load.elapsed_s else math.nan


async def measure(generator: Generator, servers: Mapping[str, ServerProcess], case: Case,
                  duration_s: float, warmup_s: float) -> Run:
    server, upstream = servers[case.server], servers["upstream"]
    url = server.url + case.path
    if warmup_s > 0:
        await generator.run(url, case, warmup_s)
    before = (process_cpu_seconds(server.process.pid),
              process_cpu_seconds(upstream.process.pid))
    load = await generator.run(url, case, duration_s)
    return Run(load, process_cpu_seconds(server.process.pid) - before[0],
               process_cpu_seconds(upstream.process.pid) - before[1])


@dataclass(frozen=True)
class Placement:
    """Which CPUs the servers under test and the rest (generator, upstream) may use."""

    servers: Sequence[int] | None
    others: Sequence[int] | None

    @classmethod
    def choose(cls, pin: bool) -> Placement:
        cpus = sorted(os.sched_getaffinity(0))
        if not pin or len(cpus) < 2:
            return cls(None, None)
        return cls(cpus[-1:], cpus[:-1])

    def describe(self) -> str:
        if self.servers is None:
            return "not pinned (the kernel places every process)"
        return (f"servers under test on CPU {','.join(map(str, self.servers))}; load generator "
                f"and upstream on CPU {','.join(map(str, self.others or ()))}")


async def start_servers(stack: AsyncExitStack, args: argparse.Namespace, profile: Path | None,
                        placement: Placement) -> dict[str, ServerProcess]:
    """All servers, each in its own process, by name."""
    base = ["-m", "benchmarks.service", "--latency", str(args.latency), "--policy", args.policy,
            "--baseline-client", args.baseline_client]
    upstream = await stack.enter_async_context(
        spawn_server([*base, "--child", "upstream"], cwd=ROOT))
    servers = {"upstream": upstream}
    kinds = ["minimal", "two-call", "streaming", "hello", "diffroute"]
    if args.telemetry:
        servers["otlp"] = await stack.enter_async_context(
            spawn_server([*base, "--child", "otlp"], cwd=ROOT))
        base += ["--otlp", servers["otlp"].url, "--trace-sample-ratio",
                 str(args.trace_sample_ratio)]
        kinds.append("traced")
    if args.floor:
        kinds += list(FLOOR_LAYERS)
    for kind in kinds:
        argv = [*base, "--child", kind, "--upstream", upstream.url]
        if profile is not None:
            argv += ["--cprofile", str(profile / f"{kind}.prof")]
        servers[kind] = await stack.enter_async_context(spawn_server(argv, cwd=ROOT))
    if placement.servers is not None:
        for name, server in servers.items():
            cpus = placement.others if name in ("upstream", "otlp") else placement.servers
            os.sched_setaffinity(server.process.pid, cpus or ())
    return servers


async def benchmark(args: argparse.Namespace, profile: Path | None, placement: Placement,
                    wrk: str | None) -> tuple[str, dict[str, list[Run]]]:
    """Every case in every round; a round runs each group in the order opposite to the last."""
    results: dict[str, list[Run]] = {}
    async with AsyncExitStack() as stack:
        servers = await start_servers(stack, args, profile, placement)
        generator: Generator
        if wrk is not None:
            generator = WrkLoad(wrk, placement.others)
        else:
            if placement.others is not None:
                os.sched_setaffinity(0, placement.others)
            connector = aiohttp.TCPConnector(limit=0)
            generator = PythonLoad(await stack.enter_async_context(
                aiohttp.ClientSession(connector=connector)))
        for round_number in range(args.rounds):
            for name, group in groups(args.concurrency, args.distinct_tasks,
                                      args.telemetry, args.floor).items():
                if args.only and name not in args.only:
                    continue
                for case in group[::-1] if round_number % 2 else group:
                    run = await measure(generator, servers, case, args.duration, args.warmup)
                    results.setdefault(case.name, []).append(run)
            print(f"round {round_number + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        if "otlp" in servers:
            await report_spans(servers["otlp"].url)
    return generator.name, results


async def report_spans(otlp: str) -> None:
    """How many spans the traced service exported (every request is one, while it keeps up)."""
    await asyncio.sleep(6)  # the batch exporter sends what it holds every 5 s
    async with aiohttp.ClientSession() as http, http.get(otlp + "/count") as response:
        count = await response.json()
    print(f"OTLP receiver: {count['spans']:,} spans in {count['requests']:,} export requests",
          flush=True)


# --- the report ------------------------------------------------------------------------------


def _interval(values: Sequence[float], digits: int = 2, unit: str = "×") -> str:
    low, high, coverage = median_interval(values)
    mid = median(values)
    if math.isnan(mid):
        return "n/a"
    if len(values) < 2:
        return f"{mid:.{digits}f}{unit}"
    return (f"{mid:.{digits}f}{unit} [{low:.{digits}f}, {high:.{digits}f}] "
            f"({coverage:.0%})")


def paired_ratios(results: Mapping[str, Sequence[Run]], subject: str,
                  baseline: str) -> list[float]:
    """Each round's subject / baseline throughput (measured back to back, one machine load)."""
    return [s.load.throughput / b.load.throughput
            for s, b in zip(results[subject], results[baseline], strict=True)
            if b.load.throughput]


def cpu_ratios(results: Mapping[str, Sequence[Run]], subject: str,
               baseline: str) -> list[float]:
    """Each round's baseline / subject server CPU per request: the throughput ratio the two
    would have with a core each if neither waited on the upstream or the generator; steadier
    than throughput on a shared machine."""
    return [b.cpu_ms_per_request / s.cpu_ms_per_request
            for s, b in zip(results[subject], results[baseline], strict=True)
            if s.cpu_ms_per_request]


def report(results: Mapping[str, Sequence[Run]], args: argparse.Namespace,
           generator: str, placement: Placement) -> bool:
    """Print the figures and the ratios; ``True`` when every target is met."""
    high = args.concurrency
    print(f"\nload generator: {generator}\n"
          f"placement: {placement.describe()}\n"
          f"baseline proxies' upstream client: {args.baseline_client}\n"
          f"fake upstream latency {args.latency * 1000:g} ms; {args.rounds} rounds of "
          f"{args.duration:g} s per case (+{args.warmup:g} s warm-up); "
          f"CPU count {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}\n"
          f"pairing policy of diffroute: {describe_policy(args.policy)}\n")
    rows, busiest, heaviest = [], 0.0, 0.0
    for name, runs in results.items():
        loads = [r.load for r in runs]
        generator_share = max(r.share(r.load.cpu_s) for r in runs)
        generator_cost = max(r.generator_cost for r in runs)
        busiest, heaviest = max(busiest, generator_share), max(heaviest, generator_cost)
        rows.append([name, f"{median([x.throughput for x in loads]):,.0f}",
                     f"{median([x.p50_ms for x in loads]):.2f}",
                     f"{median([x.p99_ms for x in loads]):.2f}",
                     f"{median([r.cpu_ms_per_request for r in runs]):.3f}",
                     f"{median([r.share(r.server_cpu_s) for r in runs]):.2f}",
                     f"{median([r.share(r.upstream_cpu_s) for r in runs]):.2f}",
                     f"{generator_share:.2f}", f"{generator_cost:.2f}",
                     str(sum(x.errors for x in loads))])
    print_table(["case", "req/s", "p50 ms", "p99 ms", "server CPU ms/req", "server CPU",
                 "upstream CPU", "generator CPU", "generator/server CPU per req",
                 "errors"], rows)
    print("(medians over rounds, generator columns the largest of the rounds; CPU: share of "
          "one core over the run)")
    for name, runs in results.items():
        if first := next((r.load.first_error for r in runs if r.load.first_error), None):
            print(f"  {name}: first error {first}")
    bottleneck = busiest >= GENERATOR_BUSY or heaviest >= GENERATOR_HEAVY
    verdict = ("MAY BE THE BOTTLENECK: the ratios understate the faster side" if bottleneck
               else "not the bottleneck")
    print(f"\nload generator: at most {busiest:.2f} of a core, at most {heaviest:.2f}× the "
          f"measured server's CPU per request ({verdict})\n")
    return _ratios(results, high, args.distinct_tasks)


def _ratios(results: Mapping[str, Sequence[Run]], high: int, distinct_tasks: bool) -> bool:
    def p(case: str, q: str) -> list[float]:
        return [getattr(r.load, q) for r in results[case]]

    def added(q: str, baseline: str) -> list[float]:
        return [s - b for s, b in zip(p("diffroute plain, c=1", q), p(baseline, q), strict=True)]

    rows = [[f"(a) added latency {q[:3]}, c=1 vs {b}",
             _interval(added(q, f"{b}, c=1"), unit=" ms"), ""]
            for q in ("p50_ms", "p99_ms") for b in ("upstream direct", "minimal proxy")
            if "diffroute plain, c=1" in results]
    met = True
    for c in comparisons(high, distinct_tasks):
        if c.subject not in results or c.baseline not in results:
            continue
        values = paired_ratios(results, c.subject, c.baseline)
        verdict = ""
        if c.target is not None:
            ok = median(values) >= c.target
            met = met and ok
            verdict = f"≥ {c.target:.2f}×: {'met' if ok else 'MISSED'}"
        cpu = _interval(cpu_ratios(results, c.subject, c.baseline))
        rows.append([c.label, _interval(values), cpu, verdict])
    print_table(["diffroute", "throughput ratio", "CPU/req ratio (base/subject)", "target"],
                [row if len(row) == 4 else [row[0], row[1], "", row[2]] for row in rows])
    print("\nratios: median over rounds of each round's subject/baseline figures, [interval] "
          "the sign test's for the median (order statistics), (its coverage); the target is on "
          "the throughput ratio")
    return met


# --- entry point -----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds per measurement (whole seconds under wrk)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each one")
    parser.add_argument("--rounds", type=int, default=5, help="repeat all measurements")
    parser.add_argument("--concurrency", type=int, default=64, help="the high concurrency")
    parser.add_argument("--latency", type=float, default=0.002,
                        help="seconds the fake upstream waits per call")
    parser.add_argument("--cprofile", help="profile each server into DIR/<server>.prof")
    parser.add_argument("--policy", choices=("real", "test"), default=default_policy(),
                        help="diffroute's decider: build_decider's or the tests' FamilyDecider")
    parser.add_argument("--baseline-client", choices=("http1", "aiohttp"), default="http1",
                        help="the baseline proxies' upstream client")
    parser.add_argument("--distinct-tasks", action="store_true",
                        help="also measure /v1/route with a new task text per request "
                             "(no decision-cache hits)")
    parser.add_argument("--telemetry", action="store_true",
                        help="also measure the plain proxy with tracing on, exporting over "
                             "OTLP/HTTP to a receiver on loopback (group 'telemetry')")
    parser.add_argument("--floor", action="store_true",
                        help="also measure where /v1/route's CPU goes: diffroute's app with a "
                             "handler that does nothing, without and with its middleware and "
                             "access line, against the hello world (group 'floor')")
    parser.add_argument("--trace-sample-ratio", type=float, default=1.0,
                        help="with --telemetry: telemetry.sample_ratio of the traced service")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="do not pin the servers under test apart from the load generator")
    parser.add_argument("--python-load", action="store_true",
                        help="use the Python load generator even when wrk is installed")
    parser.add_argument("--only", type=lambda text: text.split(","), default=None,
                        help=f"measure only these groups, comma-separated ({','.join(GROUPS)}); "
                             "with --cprofile, a profile of just that load")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--upstream", default="", help=argparse.SUPPRESS)
    parser.add_argument("--otlp", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        run_child(args.child, args.upstream, args.latency, args.cprofile, args.policy,
                  args.baseline_client, args.otlp, args.trace_sample_ratio)
        return 0
    wrk = None if args.python_load else find_wrk()
    if wrk is None:
        print("wrk not found (or --python-load): the load generator is Python, which caps the "
              "fastest cases near 8,000 req/s; install wrk (apt install wrk) for real figures",
              file=sys.stderr)
    placement = Placement.choose(args.pin)
    profile = Path(args.cprofile).resolve() if args.cprofile else None
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
    generator, results = asyncio.run(benchmark(args, profile, placement, wrk))
    return 0 if report(results, args, generator, placement) else 1


if __name__ == "__main__":
    raise SystemExit(main())
