"""What the HTTP service costs on top of its upstreams, against minimal aiohttp baselines.

All in one run, against one fake OpenAI upstream (``tests.fakes.FakeUpstream``, a fixed
``--latency`` per call, 2 ms by default) on 127.0.0.1:

(a) plain proxy (``model: alpha``): added latency at concurrency 1 (p50, p99) and throughput at
    concurrency 64, against calling the upstream directly and against a minimal aiohttp
    pass-through proxy (forwards the body with one shared ``ClientSession``, returns the
    upstream's bytes);
(b) ``POST /v1/route`` throughput against a hello-world aiohttp JSON handler;
(c) the audit path (``model: audit:alpha``: alpha and beta answer concurrently, the answers are
    compared and recorded) against a minimal two-call proxy (forwards the body to the upstream
    twice, concurrently, waits for both and returns the first call's bytes);
(d) a streamed plain call (``stream: true``; the fake sends one event per word, then usage and
    ``[DONE]``) against a minimal streaming proxy (relays the upstream's bytes as they come).

Every server — the upstream, diffroute and each baseline — runs in its own child process, served
the same way (``aiohttp.web.AppRunner``, default asyncio loop, no aiohttp access log), so the
client (one ``aiohttp.ClientSession`` in this process) never shares a core's event loop with a
server. diffroute runs as ``diffroute serve`` does: JSON logs on (written to a temporary file).
Its pairing decisions for (b) and (c) come from the app's default policy,
``router.pairing.decider.build_decider`` (``--policy real``, the default when it exists; the
fake models have no profiles, so it decides by its family rule after embedding the task and
searching the probe index), or from the tests' ``FamilyDecider`` (``--policy test``).

    python -m benchmarks.service [--duration 3] [--rounds 1] [--latency 0.002] [--policy real]
                                 [--distinct-tasks]

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
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from benchmarks._common import (
    LoadResult,
    ServerProcess,
    announce,
    median,
    print_table,
    process_cpu_seconds,
    ratio,
    run_load,
    serve_app,
    spawn_server,
    wait_for_termination,
)

ROOT = Path(__file__).resolve().parent.parent
CHAT = "/v1/chat/completions"
ANSWER = "Paris is the capital."
QUESTION = "What is the capital of France?"
JSON_HEADERS = {"Content-Type": "application/json"}
HELLO_BYTES = json.dumps({"hello": "world"}).encode()


def chat_body(model: str, *, stream: bool = False) -> bytes:
    body: dict[str, Any] = {"model": model, "max_tokens": 16,
                            "messages": [{"role": "user", "content": QUESTION}]}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


ROUTE_BODY = json.dumps({"role": "audit", "primary": "alpha", "task": QUESTION}).encode()


def distinct_route_bodies() -> Callable[[], bytes]:
    """A new task text per call, so no ``/v1/route`` call hits the decider's task cache."""
    numbers = itertools.count()
    salt = os.urandom(4).hex()  # each round gets texts of its own

    def body() -> bytes:
        task = f"{QUESTION} (variant {salt}-{next(numbers)})"
        return json.dumps({"role": "audit", "primary": "alpha", "task": task}).encode()

    return body


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


def _session_ctx(key: web.AppKey[aiohttp.ClientSession]
                 ) -> Callable[[web.Application], AsyncIterator[None]]:
    async def session(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            app[key] = http
            yield

    return session


HTTP = web.AppKey("http", aiohttp.ClientSession)


async def _forward(app: web.Application, url: str, body: bytes) -> tuple[int, bytes]:
    async with app[HTTP].post(url, data=body, headers=JSON_HEADERS) as response:
        return response.status, await response.read()


def minimal_proxy(upstream: str) -> web.Application:
    """Forward the body to the upstream and return its bytes: the least a proxy can do."""

    async def handler(request: web.Request) -> web.Response:
        status, payload = await _forward(request.app, upstream + CHAT, await request.read())
        return web.Response(status=status, body=payload, content_type="application/json")

    app = web.Application()
    app.cleanup_ctx.append(_session_ctx(HTTP))
    app.router.add_post(CHAT, handler)
    return app


def streaming_proxy(upstream: str) -> web.Application:
    """Forward the body and relay the upstream's response bytes as they arrive."""

    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with request.app[HTTP].post(upstream + CHAT, data=body,
                                          headers=JSON_HEADERS) as upstream_response:
            response = web.StreamResponse(status=upstream_response.status, headers={
                "Content-Type": upstream_response.headers.get("Content-Type", "text/plain")})
            await response.prepare(request)
            async for chunk in upstream_response.content.iter_any():
                await response.write(chunk)
        await response.write_eof()
        return response

    app = web.Application()
    app.cleanup_ctx.append(_session_ctx(HTTP))
    app.router.add_post(CHAT, handler)
    return app


def two_call_proxy(upstream: str) -> web.Application:
    """Forward the body twice concurrently, wait for both, return the first call's bytes."""

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        (status, payload), _ = await asyncio.gather(
            _forward(request.app, upstream + CHAT, body),
            _forward(request.app, upstream + CHAT, body))
        return web.Response(status=status, body=payload, content_type="application/json")

    app = web.Application()
    app.cleanup_ctx.append(_session_ctx(HTTP))
    app.router.add_post(CHAT, handler)
    return app


def hello_world() -> web.Application:
    """A JSON handler that does nothing (it does not read the body)."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=HELLO_BYTES, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/route", handler)
    return app


def default_policy() -> str:
    """``real`` (``router.pairing.decider.build_decider``) when the policy module exists, else
    ``test``."""
    import importlib.util

    return "real" if importlib.util.find_spec("router.pairing.decider") is not None else "test"


def describe_policy(policy: str) -> str:
    if policy == "real":
        return ("router.pairing.decider.build_decider (these fake models have no profiles: it "
                "embeds the task, searches the probe index, then applies the family rule)")
    return "tests FamilyDecider (audit partner = first model of another family)"


def diffroute(upstream: str, data_dir: Path, policy: str = "test") -> web.Application:
    """The real service over a pool of two ``kind: openai`` models on the fake upstream."""
    from router.config import settings_from_mapping
    from router.logging import configure_logging
    from router.service import create_app
    from router.service.app import settle_heap
    from tests.e2e.harness import FamilyDecider, remote

    models = [remote("alpha", "a", upstream + "/v1", "fake-a", max_concurrency=1024),
              remote("beta", "b", upstream + "/v1", "fake-b", max_concurrency=1024)]
    settings = settings_from_mapping({"models": models, "data_dir": str(data_dir),
                                      "server": {"shutdown_timeout": 1}})
    # as `diffroute serve` runs, but to stderr (a temporary file): stdout is the parent's pipe
    configure_logging("json", stream=sys.stderr.buffer)
    if policy == "real":
        # the app's default decider: router.pairing.decider.build_decider
        app = create_app(settings)
    else:
        app = create_app(settings, decider_factory=FamilyDecider)
    app.on_startup.append(settle_heap)  # as run_server (diffroute serve) does
    return app


def run_child(kind: str, upstream: str, latency: float, profile: str | None,
              policy: str) -> None:
    """Entry point of a child process."""
    with tempfile.TemporaryDirectory() as data_dir:
        main: Any
        if kind == "upstream":
            main = run_upstream(latency)
        else:
            apps: dict[str, Callable[[], web.Application]] = {
                "minimal": lambda: minimal_proxy(upstream),
                "two-call": lambda: two_call_proxy(upstream),
                "streaming": lambda: streaming_proxy(upstream),
                "hello": hello_world,
                "diffroute": lambda: diffroute(upstream, Path(data_dir), policy),
            }
            main = serve_app(apps[kind]())
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
    body: bytes | Callable[[], bytes]
    """Fixed bytes, or a function giving each request's body."""
    concurrency: int


def cases(high: int, distinct_tasks: bool = False) -> list[Case]:
    """In groups: the subject right after its baselines, so they see the same machine load."""
    plain, audit = chat_body("alpha"), chat_body("audit:alpha")
    streamed = chat_body("alpha", stream=True)
    distinct = [Case(f"diffroute /v1/route distinct tasks, c={high}", "diffroute", "/v1/route",
                     distinct_route_bodies(), high)] if distinct_tasks else []
    return [
        Case("upstream direct, c=1", "upstream", CHAT, plain, 1),
        Case("minimal proxy, c=1", "minimal", CHAT, plain, 1),
        Case("diffroute plain, c=1", "diffroute", CHAT, plain, 1),
        Case(f"upstream direct, c={high}", "upstream", CHAT, plain, high),
        Case(f"minimal proxy, c={high}", "minimal", CHAT, plain, high),
        Case(f"diffroute plain, c={high}", "diffroute", CHAT, plain, high),
        Case(f"hello-world JSON, c={high}", "hello", "/v1/route", ROUTE_BODY, high),
        Case(f"diffroute /v1/route, c={high}", "diffroute", "/v1/route", ROUTE_BODY, high),
        *distinct,
        Case(f"two-call proxy, c={high}", "two-call", CHAT, audit, high),
        Case(f"diffroute audit, c={high}", "diffroute", CHAT, audit, high),
        Case(f"streaming proxy, c={high}", "streaming", CHAT, streamed, high),
        Case(f"diffroute stream, c={high}", "diffroute", CHAT, streamed, high),
    ]


@dataclass(frozen=True)
class LoadSettings:
    duration_s: float
    warmup_s: float
    max_requests: int


@dataclass
class Run:
    """One measurement: the load result and the CPU seconds the measured server used."""

    load: LoadResult
    server_cpu_s: float

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.server_cpu_s / self.load.ok if self.load.ok else float("nan")


async def measure(http: aiohttp.ClientSession, server: ServerProcess, case: Case,
                  load: LoadSettings) -> Run:
    url = server.url + case.path

    make_body = case.body if callable(case.body) else None

    async def send() -> None:
        body = make_body() if make_body is not None else case.body
        async with http.post(url, data=body, headers=JSON_HEADERS) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status} from {url}")

    await run_load(send, concurrency=case.concurrency, duration_s=load.warmup_s,
                   max_requests=load.max_requests)
    cpu_before = process_cpu_seconds(server.process.pid)
    result = await run_load(send, concurrency=case.concurrency, duration_s=load.duration_s,
                            max_requests=load.max_requests)
    return Run(result, process_cpu_seconds(server.process.pid) - cpu_before)


async def start_servers(stack: AsyncExitStack, latency: float, profile: Path | None,
                        policy: str) -> dict[str, ServerProcess]:
    """All servers, each in its own process, by name."""
    base = ["-m", "benchmarks.service", "--latency", str(latency), "--policy", policy]
    upstream = await stack.enter_async_context(
        spawn_server([*base, "--child", "upstream"], cwd=ROOT))
    servers = {"upstream": upstream}
    for kind in ("minimal", "two-call", "streaming", "hello", "diffroute"):
        argv = [*base, "--child", kind, "--upstream", upstream.url]
        if profile is not None:
            argv += ["--cprofile", str(profile / f"{kind}.prof")]
        servers[kind] = await stack.enter_async_context(spawn_server(argv, cwd=ROOT))
    return servers


async def benchmark(load: LoadSettings, rounds: int, high: int, latency: float,
                    profile: Path | None, policy: str,
                    distinct_tasks: bool = False) -> dict[str, list[Run]]:
    results: dict[str, list[Run]] = {}
    async with AsyncExitStack() as stack:
        servers = await start_servers(stack, latency, profile, policy)
        connector = aiohttp.TCPConnector(limit=0)
        http = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
        for _ in range(rounds):
            for case in cases(high, distinct_tasks):
                result = await measure(http, servers[case.server], case, load)
                results.setdefault(case.name, []).append(result)
    return results


# --- the report ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """One case's figures over all rounds: medians of throughput and CPU, pooled latencies."""

    throughput: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float
    errors: int
    first_error: str | None

    @classmethod
    def of(cls, runs: Sequence[Run]) -> Figures:
        loads = [r.load for r in runs]
        pooled = LoadResult(loads[0].concurrency,
                            latencies=[x for r in loads for x in r.latencies])
        errors = sum(r.errors for r in loads)
        first = next((r.first_error for r in loads if r.first_error), None)
        return cls(median([r.throughput for r in loads]), pooled.latency_ms(50),
                   pooled.latency_ms(99), median([r.cpu_ms_per_request for r in runs]),
                   errors, first)


def report(results: Mapping[str, Sequence[Run]], high: int, latency: float,
           policy: str) -> bool:
    """Print the figures and the ratios; ``True`` when both targets are met."""
    figures = {name: Figures.of(runs) for name, runs in results.items()}
    print(f"fake upstream latency {latency * 1000:g} ms\n"
          f"pairing policy of diffroute: {describe_policy(policy)}\n")
    print_table(["case", "req/s", "p50 ms", "p99 ms", "server CPU ms/req", "errors"], [
        [name, f"{f.throughput:,.0f}", f"{f.p50_ms:.2f}", f"{f.p99_ms:.2f}", f"{f.cpu_ms:.3f}",
         str(f.errors)] for name, f in figures.items()])
    for name, f in figures.items():
        if f.first_error:
            print(f"  {name}: first error {f.first_error}")
    print()
    return _ratios(figures, high, results)


def paired(results: Mapping[str, Sequence[Run]], subject: str, baseline: str) -> float:
    """The median over rounds of subject / baseline throughput, each pair from one round.

    A baseline is measured right before its subject, so a round's ratio sees one machine
    load; the median of those ratios drifts less with the other tenants' load than the ratio
    of the two medians does.
    """
    return median([s.load.throughput / b.load.throughput
                   for s, b in zip(results[subject], results[baseline], strict=True)
                   if b.load.throughput])


def _ratios(f: Mapping[str, Figures], high: int, results: Mapping[str, Sequence[Run]]) -> bool:
    direct1, minimal1, plain1 = (f[f"{n}, c=1"] for n in (
        "upstream direct", "minimal proxy", "diffroute plain"))
    direct, plain = f[f"upstream direct, c={high}"], f[f"diffroute plain, c={high}"]
    proxy = paired(results, f"diffroute plain, c={high}", f"minimal proxy, c={high}")
    route_ratio = paired(results, f"diffroute /v1/route, c={high}", f"hello-world JSON, c={high}")
    audit_ratio = paired(results, f"diffroute audit, c={high}", f"two-call proxy, c={high}")
    stream_ratio = paired(results, f"diffroute stream, c={high}", f"streaming proxy, c={high}")
    proxy_ok, route_ok = proxy >= 0.9, route_ratio >= 0.5
    rows = [
        ["(a) added latency p50, c=1", f"{plain1.p50_ms - direct1.p50_ms:+.2f} ms",
         f"{plain1.p50_ms - minimal1.p50_ms:+.2f} ms", ""],
        ["(a) added latency p99, c=1", f"{plain1.p99_ms - direct1.p99_ms:+.2f} ms",
         f"{plain1.p99_ms - minimal1.p99_ms:+.2f} ms", ""],
        ["(a) latency p50 ratio, c=1", ratio(plain1.p50_ms, direct1.p50_ms),
         ratio(plain1.p50_ms, minimal1.p50_ms), ""],
        [f"(a) plain throughput, c={high}", ratio(plain.throughput, direct.throughput),
         f"{proxy:.2f}×", f"≥ 0.90× minimal: {'met' if proxy_ok else 'MISSED'}"],
        [f"(b) /v1/route throughput, c={high}", "", f"{route_ratio:.2f}×",
         f"≥ 0.50× hello: {'met' if route_ok else 'MISSED'}"],
        [f"(c) audit throughput, c={high}", "", f"{audit_ratio:.2f}×", ""],
        [f"(d) streamed throughput, c={high}", "", f"{stream_ratio:.2f}×", ""],
    ]
    distinct = f"diffroute /v1/route distinct tasks, c={high}"
    if distinct in results:
        rows.insert(-2, [f"(b) /v1/route distinct tasks, c={high}", "",
                         f"{paired(results, distinct, f'hello-world JSON, c={high}'):.2f}×",
                         "(no cache hits)"])
    print_table(["diffroute vs", "upstream direct", "baseline", "target"], rows)
    print("\nbaseline: (a) minimal proxy, (b) hello-world JSON, (c) two-call proxy, "
          "(d) streaming proxy; "
          "throughput vs baseline: median of the rounds' paired ratios")
    return proxy_ok and route_ok


# --- entry point -----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds before each one")
    parser.add_argument("--rounds", type=int, default=1, help="repeat all measurements")
    parser.add_argument("--max-requests", type=int, default=200_000,
                        help="cap on requests per measurement")
    parser.add_argument("--concurrency", type=int, default=64, help="the high concurrency")
    parser.add_argument("--latency", type=float, default=0.002,
                        help="seconds the fake upstream waits per call")
    parser.add_argument("--cprofile", help="profile each server into DIR/<server>.prof")
    parser.add_argument("--policy", choices=("real", "test"), default=default_policy(),
                        help="diffroute's decider: router.pairing.decider's or the tests' "
                             "FamilyDecider")
    parser.add_argument("--distinct-tasks", action="store_true",
                        help="also measure /v1/route with a new task text per request "
                             "(no decision-cache hits)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--upstream", default="", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        run_child(args.child, args.upstream, args.latency, args.cprofile, args.policy)
        return 0
    load = LoadSettings(args.duration, args.warmup, args.max_requests)
    profile = Path(args.cprofile).resolve() if args.cprofile else None
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(benchmark(load, args.rounds, args.concurrency, args.latency,
                                    profile, args.policy, args.distinct_tasks))
    return 0 if report(results, args.concurrency, args.latency, args.policy) else 1


if __name__ == "__main__":
    raise SystemExit(main())
