"""The audit path's throughput with live-diff recording on vs off, in one run.

Against one fake OpenAI upstream (``tests.fakes.FakeUpstream``, ``--latency`` per call) where
the two models always disagree — every comparison is a flagged live diff, the worst case for
recording. Two instances of the service run side by side in this process with the same pool,
the same decider (the tests' ``FamilyDecider``) and the same noise-aware comparer:

* **on** — the default durable sink: SQLite WAL, ``synchronous=FULL``, group commit, and the
  response waits for its live diff's commit (``ack_records``), as ``diffroute serve`` runs;
* **off** — a sink that drops every record (the baseline).

Rounds alternate on/off so that a noisy neighbour hurts both alike; the ratio is the median
throughput of "on" over the median of "off" (target ≥ 0.9).

    python -m benchmarks.live [--duration 2] [--rounds 3] [--concurrency 32] [--latency 0.002]

Run it from the repository root (it imports ``tests``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks._common import print_table, ratio, run_load
from router.logging import configure_logging
from router.paired.compare import NoiseAwareComparer
from router.paired.record import LiveDiffRecord
from tests.e2e.harness import Running, make_settings, remote, serve
from tests.fakes import FakeUpstream

BODY: dict[str, Any] = {"model": "audit:alpha",
                        "messages": [{"role": "user", "content": "What is the capital?"}]}


class NullSink:
    """Recording off: every record is dropped."""

    async def record(self, record: LiveDiffRecord) -> str | None:
        return None


@asynccontextmanager
async def null_sink(_settings: object) -> AsyncIterator[NullSink]:
    yield NullSink()


async def measure(http: aiohttp.ClientSession, running: Running, args: argparse.Namespace
                  ) -> float:
    url = running.base_url + "/chat/completions"

    async def send() -> None:
        async with http.post(url, json=BODY) as resp:
            await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"status {resp.status}")

    result = await run_load(send, concurrency=args.concurrency, duration_s=args.duration,
                            max_requests=10**9)
    if result.errors:
        raise RuntimeError(f"{result.errors} failed requests")
    return result.throughput


async def main(args: argparse.Namespace) -> None:
    answers = {"up-alpha": "Paris is the capital of France.", "up-beta": "Lyon, surely."}
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryFile() as log:
        configure_logging("json", stream=log)  # as `diffroute serve` runs, into a file
        async with FakeUpstream(answers=answers, models=list(answers),
                                latency=args.latency) as fake:
            models = [remote("alpha", "a", fake.base_url, "up-alpha"),
                      remote("beta", "b", fake.base_url, "up-beta")]
            on_settings = make_settings(Path(tmp) / "on", models)
            live = on_settings.live.model_copy(update={"synchronous": args.synchronous})
            on_settings = on_settings.model_copy(update={"live": live})
            off_settings = make_settings(Path(tmp) / "off", models)
            comparer = NoiseAwareComparer()
            async with serve(on_settings, comparer=comparer) as on, \
                    serve(off_settings, comparer=comparer, sink_factory=null_sink) as off, \
                    aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
                await measure(http, on, argparse.Namespace(**{**vars(args), "duration": 0.5}))
                runs: dict[str, list[float]] = {"on": [], "off": []}
                for _ in range(args.rounds):
                    runs["off"].append(await measure(http, off, args))
                    runs["on"].append(await measure(http, on, args))
    on_rps, off_rps = statistics.median(runs["on"]), statistics.median(runs["off"])
    print_table(["recording", "req/s (median)", "rounds", "vs off"], [
        ["off (baseline)", f"{off_rps:.0f}", " ".join(f"{x:.0f}" for x in runs["off"]), "1.00×"],
        ["on (durable, acked)", f"{on_rps:.0f}", " ".join(f"{x:.0f}" for x in runs["on"]),
         ratio(on_rps, off_rps)],
    ])
    print(f"synchronous={args.synchronous}")
    print(f"target: on/off >= 0.9 -> {'met' if on_rps >= 0.9 * off_rps else 'NOT met'}")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL",
                        help="live.synchronous of the recording service")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.002,
                        help="fake upstream latency per call (s)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
