"""The dashboard's live page with a lot of history: server time of its first render.

A data dir is filled with 100,000 stored live diffs (``--diffs``) and the comparisons they came
from (a disagreement rate of ``--rate``, so 100,000 / 0.3 ≈ 333,000 comparison rows), spread
over the last ``--hours`` hours across 12 pairs × 4 domains — straight into the live store's
SQLite file, as the service would have written them. The real service then opens it (scripted
pool, the tests' ``FamilyDecider``: the live routes read no profile) and the live page's first
render is replayed as the browser issues it: the page and its 7 assets, then its three data
requests in parallel —

* ``GET /v1/diffs?order=desc&limit=25`` (the feed's first page, newest first),
* ``GET /v1/stats/disagreements/series?window=3600&buckets=30`` (rates over time),
* ``GET /v1/drift?limit=20`` (alarms) —

and the SSE stream it opens next (not timed: it waits for new diffs). *Server time* is what the
service's own request observer measures per request (the duration of the handler, middleware
included), summed over the render's requests issued one at a time (issued together they share
one event loop and the store's one reader connection, so each would also count the others'
time); the client's wall time is measured separately with the requests issued as a browser
issues them. Baseline: a hello-world route of the same app,
measured in the same run. Also timed: the feed's 2,000th page (``cursor`` deep in the history)
and the rates over the whole history (``window`` = all of it).

    python -m benchmarks.ui [--diffs 100000] [--rate 0.3] [--hours 24] [--renders 30]

Run it from the repository root (it imports ``tests``). Target: the first render under 300 ms
of server time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from benchmarks._common import median, percentile, print_table, ratio
from router.logging import configure_logging
from router.service.middleware import REQUEST_OBSERVERS
from router.store.sqlite import DB_NAME, SqliteStore
from tests.e2e.harness import Running, make_settings, scripted, serve

MODELS = ["alpha", "beta", "gamma", "delta"]
DOMAINS = ["arithmetic", "geography", "code", "values"]
ASSETS = ["style.css", "app.js", "api.js", "dom.js", "pool.js", "diff.js", "pairings.js",
          "live.js"]
DATA = ["/v1/diffs?order=desc&limit=25",
        "/v1/stats/disagreements/series?window=3600&buckets=30",
        "/v1/drift?limit=20"]
ANSWER_A = "The answer is 391, because 17 times 23 is 391. " * 3
ANSWER_B = "The answer is 381: 17 × 23 = 381, as I computed step by step. " * 3


def fill(data_dir: Path, diffs: int, rate: float, hours: float, seed: int = 0) -> int:
    """Write ``diffs`` live diffs and their comparisons; the number of comparison rows."""
    SqliteStore(data_dir).open().close_now()  # the schema, as the service creates it
    rng = random.Random(seed)
    pairs = [(a, b) for a in MODELS for b in MODELS if a != b]
    now, span = time.time(), hours * 3600
    comparisons = int(diffs / rate)
    prompt = json.dumps([{"role": "user", "content": "What is 17 * 23? Show your work."}])
    db = sqlite3.connect(data_dir / DB_NAME)
    with db:
        db.executemany(
            "INSERT INTO comparisons (at, primary_model, partner, role, domain, flagged) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            ((now - span + span * i / comparisons, *rng.choice(pairs), "audit",
              rng.choice(DOMAINS), int(i % round(1 / rate) == 0)) for i in range(comparisons)))
        db.executemany(
            "INSERT INTO live_diffs (id, created_at, request_id, primary_model, partner, role, "
            "answered_by, mode, domains, prompt_digest, prompt, primary_text, partner_text, "
            "agreement, divergence, threshold, method, unified_diff, reason, redacted) "
            "VALUES (?, ?, ?, ?, ?, 'audit', ?, 'concurrent', ?, 'sha256:x', ?, ?, ?, 0.4, 0.6,"
            " 0.35, 'semantic', NULL, 'beyond the noise floor', 0)",
            ((f"ld_{i:032x}", now - span + span * i / diffs, f"req-{i}", a, b, a,
              json.dumps([rng.choice(DOMAINS)]), prompt, ANSWER_A, ANSWER_B)
             for i in range(diffs) for a, b in [rng.choice(pairs)]))
    db.close()
    return comparisons


class ServerTimes:
    """The service's own measure of each request (a request observer), by path and query."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = {}
        self.recording = True

    def observe(self, request: web.Request, route: str, status: int, seconds: float,
                error: BaseException | None) -> None:
        if status == 200 and self.recording:
            self.seconds.setdefault(request.path_qs, []).append(seconds)


async def hello(request: web.Request) -> web.Response:
    return web.json_response({"hello": "world"})


def add_hello(app: web.Application) -> None:
    app.router.add_get("/bench/hello", hello)


async def render(http: aiohttp.ClientSession, running: Running, parallel: bool) -> float:
    """One first render of the live page; its wall time at the client, in seconds.

    ``parallel``: as a browser issues it (the assets together, then the data together);
    otherwise one request at a time, so that each one's server time is its own and not time
    spent waiting for the others (they share one event loop and the store's reader).
    """
    started = time.perf_counter()

    async def get(path: str) -> None:
        async with http.get(running.url + path) as resp:
            await resp.read()
            assert resp.status == 200, (path, resp.status)

    await get("/ui/")
    for group in ([f"/ui/{a}" for a in ASSETS], DATA):
        if parallel:
            await asyncio.gather(*(get(p) for p in group))
        else:
            for path in group:
                await get(path)
    return time.perf_counter() - started


def ms(values: Sequence[float], q: float = 50) -> str:
    return f"{percentile(values, q) * 1000:.2f}"


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryFile() as log:
        configure_logging("json", stream=log)
        root = Path(tmp)
        started = time.perf_counter()
        comparisons = fill(root / "data", args.diffs, args.rate, args.hours)
        print(f"filled {args.diffs:,} live diffs and {comparisons:,} comparisons in "
              f"{time.perf_counter() - started:.1f} s")
        models = [scripted(m, m, "ok") for m in MODELS]
        settings = make_settings(root, models)
        times = ServerTimes()
        async with serve(settings, route_modules=[add_hello]) as running, \
                aiohttp.ClientSession() as http:
            running.app[REQUEST_OBSERVERS].append(times.observe)
            first = await api_json(http, running, "/v1/diffs?order=desc&limit=1")
            assert first["data"][0]["seq"] == args.diffs, "the store holds every diff"
            for _ in range(args.renders):
                await render(http, running, parallel=False)
                async with http.get(running.url + "/bench/hello") as resp:
                    await resp.read()
            times.recording = False
            walls = [await render(http, running, parallel=True) for _ in range(args.renders)]
            times.recording = True
            deep = f"/v1/diffs?order=desc&limit=25&cursor={max(1, args.diffs - 2000 * 25)}"
            whole = f"/v1/stats/disagreements/series?window={args.hours * 3600 + 60:.0f}" \
                    "&buckets=30"
            for path in (deep, whole):
                for _ in range(args.renders // 3 or 1):
                    async with http.get(running.url + path) as resp:
                        await resp.read()
        report(times, walls, deep, whole)


async def api_json(http: aiohttp.ClientSession, running: Running, path: str) -> dict[str, Any]:
    async with http.get(running.url + path) as resp:
        data: dict[str, Any] = await resp.json()
        return data


def report(times: ServerTimes, walls: list[float], deep: str, whole: str) -> None:
    s = times.seconds
    hello_ = s["/bench/hello"]
    page = ["/ui/", *(f"/ui/{a}" for a in ASSETS), *DATA]
    renders = [sum(s[p][i] for p in page) for i in range(len(hello_))]
    rows = [["hello world (baseline)", ms(hello_), ms(hello_, 95), "1.00×"]]
    for path in page:
        if path.startswith("/ui/") and path != "/ui/":
            continue
        rows.append([path, ms(s[path]), ms(s[path], 95), ratio(median(s[path]), median(hello_))])
    assets = [sum(s[f"/ui/{a}"][i] for a in ASSETS) for i in range(len(hello_))]
    rows.append(["the 8 assets together", ms(assets), ms(assets, 95),
                 ratio(median(assets), median(hello_))])
    rows.append(["first render: server time, all 12 requests", ms(renders), ms(renders, 95),
                 ratio(median(renders), median(hello_))])
    rows.append(["first render: wall time at the client, issued as a browser does", ms(walls),
                 ms(walls, 95), ""])
    rows.append([f"older page deep in history ({deep.split('?')[1]})", ms(s[deep]),
                 ms(s[deep], 95), ratio(median(s[deep]), median(hello_))])
    rows.append(["rates over the whole history (window = all)", ms(s[whole]), ms(s[whole], 95),
                 ratio(median(s[whole]), median(hello_))])
    print_table(["request", "median ms", "p95 ms", "vs hello"], rows)
    verdict = "met" if percentile(renders, 95) < 0.3 else "NOT met"
    print(f"\nfirst render under 300 ms of server time (p95 {ms(renders, 95)} ms): {verdict}")


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--diffs", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=0.3, help="disagreement rate")
    parser.add_argument("--hours", type=float, default=24.0, help="history spread over")
    parser.add_argument("--renders", type=int, default=30)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
