"""What one upstream call costs the caller: ``router.backends.http1`` against aiohttp's session.

Every plain call diffroute proxies, and each side of a paired call, is one JSON ``POST`` read
whole. This runs the same call — the benchmark's chat body to the fake OpenAI upstream
(``tests.fakes.FakeUpstream`` in a child process, ``--latency`` per call) — through

* aiohttp: one ``ClientSession`` with an unlimited ``TCPConnector``, ``post`` + ``read`` (what
  diffroute used before, and the baselines of ``benchmarks/service.py`` with
  ``--baseline-client aiohttp``);
* ``Http1Client.post`` with the headers and timeouts the OpenAI backend uses;

alternating, in rounds, at ``--concurrency`` (64) from this process, and reports this
process's CPU per call (``time.process_time``) and the throughput, each as the median over
rounds of the paired ratio against aiohttp's in the same round.

    python -m benchmarks.upstream_client [--rounds 5] [--duration 2] [--latency 0.002]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack

import aiohttp

from benchmarks._common import median, print_table, run_load, spawn_server
from benchmarks.service import CHAT, ROOT, chat_body
from router.backends.http1 import Endpoint, Http1Client, HttpTimeouts, encode_headers

JSON_HEADERS = {"Content-Type": "application/json"}
TIMEOUTS = HttpTimeouts(connect=5, read=60, total=120)  # router.config.Timeouts' defaults


async def measure(send: Callable[[], Awaitable[None]], concurrency: int,
                  duration: float) -> tuple[float, float]:
    """(calls per second, CPU ms per call of this process) over one closed-loop run."""
    await run_load(send, concurrency=concurrency, duration_s=0.3, max_requests=10**7)
    cpu = time.process_time()
    result = await run_load(send, concurrency=concurrency, duration_s=duration,
                            max_requests=10**7)
    if result.errors:
        raise SystemExit(f"{result.errors} failed calls: {result.first_error}")
    calls = len(result.latencies)
    return calls / result.elapsed_s, (time.process_time() - cpu) / calls * 1000


async def run(args: argparse.Namespace) -> None:
    async with AsyncExitStack() as stack:
        upstream = await stack.enter_async_context(spawn_server(
            ["-m", "benchmarks.service", "--latency", str(args.latency), "--child", "upstream"],
            cwd=ROOT))
        session = await stack.enter_async_context(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))
        client = Http1Client()
        stack.push_async_callback(client.aclose)
        url = upstream.url + CHAT
        endpoint = Endpoint.parse(url)
        head = encode_headers(JSON_HEADERS)
        body = chat_body("fake-a")

        async def via_aiohttp() -> None:
            async with session.post(url, data=body, headers=JSON_HEADERS) as response:
                payload = await response.read()
                if response.status != 200:
                    raise RuntimeError(f"status {response.status}")
            json.loads(payload)

        async def via_http1() -> None:
            reply = await client.post(endpoint, head, body, TIMEOUTS)
            if reply.status != 200:
                raise RuntimeError(f"status {reply.status}")
            json.loads(reply.body)

        rows: dict[str, list[tuple[float, float]]] = {"aiohttp ClientSession": [],
                                                      "http1 Http1Client": []}
        for _ in range(args.rounds):
            for name, send in zip(rows, (via_aiohttp, via_http1), strict=True):
                rows[name].append(await measure(send, args.concurrency, args.duration))
        base = rows["aiohttp ClientSession"]
        table = []
        for name, runs in rows.items():
            throughput = median([r[0] for r in runs])
            cpu = median([r[1] for r in runs])
            speed = median([r[0] / b[0] for r, b in zip(runs, base, strict=True)])
            cost = median([r[1] / b[1] for r, b in zip(runs, base, strict=True)])
            table.append([name, f"{throughput:,.0f}", f"{cpu:.3f}", f"{speed:.2f}×",
                          f"{cost:.2f}×"])
        print(f"fake upstream latency {args.latency * 1000:g} ms, concurrency "
              f"{args.concurrency}, {args.rounds} rounds of {args.duration:g} s\n")
        print_table(["client", "calls/s", "caller CPU ms/call", "calls/s vs aiohttp",
                     "CPU/call vs aiohttp"], table)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.002,
                        help="seconds the fake upstream takes per call")
    asyncio.run(run(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
