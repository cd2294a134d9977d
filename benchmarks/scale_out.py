"""Scale-out: paired audit throughput of 1, 2 and 4 ``diffroute serve`` instances on one
PostgreSQL database, against one SQLite instance; and the p99 of recording a live diff.

Each instance is a real ``diffroute serve`` process (``python -m router serve``) with its own
data dir; the pool is two ``kind: openai`` models behind one fake upstream in this process
(``tests.fakes.FakeUpstream``, ``--latency`` per call) that always disagree, so every request
records an acknowledged live diff — the worst case for the store. The load (closed loop,
``--concurrency`` clients) is spread evenly over the instances. The baseline, measured in the
same run, is one instance on the embedded SQLite store; each PostgreSQL configuration gets a
fresh database.

The second table records live diffs straight through the durable sink (no HTTP, no model),
``--records`` of them from 16 concurrent tasks, on each engine: the latency of ``record()``,
which is what a paired response waits for.

    DIFFROUTE_TEST_PG_DSN=postgresql://user:pw@127.0.0.1:5432/postgres \\
        python -m benchmarks.scale_out [--duration 8] [--concurrency 32] [--latency 0.002]

The DSN names a role that may create databases (``.ci/run`` sets one up). Run it from the
repository root (it imports ``tests``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from benchmarks._common import percentile, print_table, ratio, run_load
from router.config import Settings
from router.live.sink import DurableLiveDiffSink
from router.paired.compare import Comparison
from router.store import open_store
from tests.e2e.harness import remote
from tests.e2e.test_live_crash import free_port, ready
from tests.fakes import FakeUpstream
from tests.router.live.test_live_store import record
from tests.stores import fresh_database, on_postgres, plain_settings

ROOT = Path(__file__).resolve().parents[1]
BODY: dict[str, Any] = {"model": "audit:alpha", "diffroute": {"partner": "beta"},
                        "messages": [{"role": "user", "content": "What is the capital?"}]}


def config(root: Path, name: str, models: list[dict[str, Any]], postgres: bool) -> Path:
    data: dict[str, Any] = {"data_dir": f"data-{name}", "live": {"profiles": False},
                            "server": {"log_format": "json"}, "models": models}
    if postgres:
        data["store"] = {"kind": "postgres", "dsn": "env:DIFFROUTE_DATABASE_URL"}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def spawn(path: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "router", "serve", "--config", str(path),
                             "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(20)


@asynccontextmanager
async def instances(root: Path, models: list[dict[str, Any]], count: int, dsn: str | None
                    ) -> AsyncIterator[list[str]]:
    """``count`` serving processes (on ``dsn``'s database, else SQLite); their urls."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DIFFROUTE_DATABASE_URL": dsn or ""}
    procs, urls = [], []
    try:
        for k in range(count):
            port = free_port()
            path = config(root, f"{'pg' if dsn else 'lite'}{count}-{k}", models, dsn is not None)
            procs.append(spawn(path, port, env))
            urls.append(f"http://127.0.0.1:{port}")
        await asyncio.gather(*(ready(url, 60) for url in urls))
        yield urls
    finally:
        stop(procs)


async def throughput(urls: list[str], args: argparse.Namespace) -> tuple[float, float]:
    """Requests per second over all instances, and the p99 latency (ms)."""
    turn = 0

    async def send() -> None:
        nonlocal turn
        url = urls[turn % len(urls)] + "/v1/chat/completions"
        turn += 1
        async with http.post(url, json=BODY) as resp:
            body = await resp.json()
            if resp.status != 200 or not body["diffroute"]["live_diff_id"]:
                raise RuntimeError(f"status {resp.status}: {body}")

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        await run_load(send, concurrency=args.concurrency, duration_s=1.0, max_requests=10**9)
        result = await run_load(send, concurrency=args.concurrency, duration_s=args.duration,
                                max_requests=10**9)
    if result.errors:
        raise RuntimeError(f"{result.errors} failed requests: {result.first_error}")
    return result.throughput, result.latency_ms(99)


async def recording_latency(settings: Settings, records: int) -> list[float]:
    """Seconds each ``record()`` of a flagged comparison waited, 16 tasks at once."""
    latencies: list[float] = []
    async with open_store(settings) as store:
        sink = DurableLiveDiffSink(store)
        todo = iter(range(records))

        async def worker() -> None:
            for _ in todo:
                one = record("Paris.", "Lyon.", Comparison(0.0, True, 0.9, 0.35, "-P\n"))
                started = time.perf_counter()
                await sink.record(one)
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker() for _ in range(16)))
    return latencies


async def main(args: argparse.Namespace) -> None:
    answers = {"up-alpha": "Paris is the capital of France.", "up-beta": "Lyon, surely."}
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        async with FakeUpstream(answers=answers, models=list(answers),
                                latency=args.latency) as fake:
            models = [remote("alpha", "a", fake.base_url, "up-alpha"),
                      remote("beta", "b", fake.base_url, "up-beta")]
            async with instances(root, models, 1, None) as urls:
                base, base_p99 = await throughput(urls, args)
            rows.append(["1 × SQLite (baseline)", f"{base:.0f}", f"{base_p99:.1f}", "1.00×"])
            for count in args.instances:
                async with fresh_database() as dsn, instances(root, models, count, dsn) as urls:
                    rps, p99 = await throughput(urls, args)
                rows.append([f"{count} × PostgreSQL", f"{rps:.0f}", f"{p99:.1f}",
                             ratio(rps, base)])
        print_table(["instances", "paired req/s", "p99 ms", "vs 1 × SQLite"], rows)
        lite = await recording_latency(plain_settings(root / "rec"), args.records)
        async with fresh_database() as dsn:
            pg = await recording_latency(on_postgres(plain_settings(root / "rec-pg"), dsn),
                                         args.records)
    print_table(["engine", "record() p50 ms", "p99 ms", "p99 vs SQLite"], [
        ["SQLite (FULL)", f"{percentile(lite, 50) * 1e3:.2f}",
         f"{percentile(lite, 99) * 1e3:.2f}", "1.00×"],
        ["PostgreSQL", f"{percentile(pg, 50) * 1e3:.2f}", f"{percentile(pg, 99) * 1e3:.2f}",
         ratio(percentile(pg, 99), percentile(lite, 99))]])
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"cores: {os.cpu_count()}, load average {load} (the instances, the upstream, the "
          "load generator and the database all share them)")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per configuration")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.002,
                        help="fake upstream latency per call (s)")
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--records", type=int, default=2000,
                        help="live diffs recorded per engine for the latency table")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
