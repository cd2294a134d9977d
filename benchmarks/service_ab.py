"""Two versions of diffroute against each other: server CPU per request, A/B in one run.

``benchmarks/service.py`` measures diffroute against minimal baselines; across two versions of
the code its ratios move with the machine's load as much as with the change (on the shared
2-core machine the same tree gave 0.22× and 0.30× CPU ratios on the audit path ten minutes
apart). Here the two versions run side by side instead: two source trees (e.g. ``git archive``
exports of two commits), each served by its own child process as ``benchmarks.service`` serves
diffroute, both on the same fake upstream and pinned to the same CPU, and every round measures
both under the same ``wrk`` load, in alternating order. The figures are B's server CPU per
request over A's (and its throughput over A's): the median over rounds, with the sign test's
interval.

    python -m benchmarks.service_ab TREE_A TREE_B [--rounds 5] [--duration 4]
                                     [--cases route,audit,plain]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from pathlib import Path

from benchmarks._common import (
    ServerProcess,
    median,
    median_interval,
    print_table,
    process_cpu_seconds,
    spawn_server,
)
from benchmarks._wrk import find_wrk
from benchmarks.service import ROUTE_BODY, Case, WrkLoad, chat_body

CASES = {"route": ("/v1/route", ROUTE_BODY),
         "audit": ("/v1/chat/completions", chat_body("audit:alpha")),
         "plain": ("/v1/chat/completions", chat_body("alpha"))}
"""The cases of ``benchmarks.service`` (b), (c) and (a), each at concurrency 64."""


def child(tree: Path, argv: Sequence[str]) -> AbstractAsyncContextManager[ServerProcess]:
    """``python -m benchmarks.service --child …`` run from ``tree``, with ``tree`` on the
    path (so the child imports that version of ``router``)."""
    return spawn_server(["-m", "benchmarks.service", *argv], cwd=tree,
                        env={**os.environ, "PYTHONPATH": str(tree)}, start_timeout_s=120.0)


async def measure(load: WrkLoad, server: ServerProcess, case: Case,
                  duration_s: float) -> tuple[float, float]:
    """(requests per second, server CPU ms per request) of one run after a 1 s warm-up."""
    url = server.url + case.path
    await load.run(url, case, 1.0)
    before = process_cpu_seconds(server.process.pid)
    result = await load.run(url, case, duration_s)
    cpu = process_cpu_seconds(server.process.pid) - before
    return result.throughput, cpu * 1000 / max(1, result.ok)


async def run(args: argparse.Namespace) -> dict[str, list[tuple[float, float, float, float]]]:
    """Per case and round: A's and B's (req/s, CPU ms/req)."""
    base = ["--latency", "0.002", "--policy", "real"]
    cpus = sorted(os.sched_getaffinity(0))
    servers_cpu, others = cpus[-1:], cpus[:-1] or cpus
    results: dict[str, list[tuple[float, float, float, float]]] = {c: [] for c in args.cases}
    async with AsyncExitStack() as stack:
        upstream = await stack.enter_async_context(
            child(args.tree_a, [*base, "--child", "upstream"]))
        servers = [await stack.enter_async_context(
            child(tree, [*base, "--child", "diffroute", "--upstream", upstream.url]))
            for tree in (args.tree_a, args.tree_b)]
        os.sched_setaffinity(upstream.process.pid, others)
        for server in servers:
            os.sched_setaffinity(server.process.pid, servers_cpu)
        load = WrkLoad(find_wrk() or "wrk", others)
        for number in range(args.rounds):
            for name in args.cases:
                path, body = CASES[name]
                order = (0, 1) if number % 2 == 0 else (1, 0)
                runs = {i: await measure(load, servers[i], Case(name, "", path, body, 64),
                                         args.duration) for i in order}
                results[name].append((*runs[0], *runs[1]))
            print(f"round {number + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    return results


def interval(values: list[float]) -> str:
    low, high, coverage = median_interval(values)
    return f"{median(values):.3f} [{low:.3f}, {high:.3f}] ({coverage:.0%})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tree_a", type=Path, help="the baseline version's source tree")
    parser.add_argument("tree_b", type=Path, help="the version measured against it")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per run")
    parser.add_argument("--cases", type=lambda text: text.split(","),
                        default=["route", "audit", "plain"])
    args = parser.parse_args()
    results = asyncio.run(run(args))
    rows = [[name, f"{median([r[1] for r in runs]):.4f}", f"{median([r[3] for r in runs]):.4f}",
             interval([r[3] / r[1] for r in runs]), interval([r[2] / r[0] for r in runs])]
            for name, runs in results.items()]
    print_table(["case, c=64", "A CPU ms/req", "B CPU ms/req", "B/A CPU per request",
                 "B/A req/s"], rows)


if __name__ == "__main__":
    main()
