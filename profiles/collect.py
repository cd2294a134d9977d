"""Collection: models × probes × k samples, cached and resumable.

Only what the store lacks is requested. A probe with all k samples missing is one request with
``n = k``; a probe with some missing asks for each missing index alone, with the seed that index
would have had, so a resumed run gets the same samples a whole run would have (on backends that
honour seeds). Transient errors (an exception with ``transient = True``, as the router's
``UpstreamError`` has) are retried with exponential backoff, honouring ``retry_after``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from profiles.probe import REQUEST_FORMAT, Probe
from profiles.protocol import ModelClient, Sample, SampleResult
from profiles.store import Observations, model_key, stable_hash

ProgressCallback = Callable[[str, int], None]
"""Called as ``(model name, samples just finished)``; the total is known from :func:`plan`."""


@dataclass(frozen=True, slots=True)
class Decoding:
    """How observations are sampled; part of their cache key."""

    samples: int = 5
    temperature: float = 0.7
    seed: int = 0

    def key(self) -> str:
        return stable_hash({"temperature": self.temperature, "seed": self.seed,
                            "request": REQUEST_FORMAT})

    def probe_seed(self, probe_hash: str, model_key: str) -> int:
        """The seed of sample 0 of a probe for one model (sample i uses seed + i).

        The model's key is mixed in so that two models never share random numbers: with
        shared seeds, two similar models draw coupled samples, their cross-model differences
        shrink below what re-splitting the pooled samples expects, and the noise-floor test
        loses its calibration.
        """
        return (self.seed * 1_000_003 + int(probe_hash[:8], 16) + int(model_key[:8], 16)) \
            % 2**31


@dataclass(frozen=True, slots=True)
class Job:
    """One request to make: a probe and the sample indices it should fill."""

    model: ModelClient
    key: str
    probe: Probe
    probe_hash: str
    indices: tuple[int, ...]


@dataclass
class CollectReport:
    """What a collection run did."""

    planned_samples: int = 0
    cached_samples: int = 0
    stored_samples: int = 0
    calls: int = 0
    retries: int = 0
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    """(model, probe id, error) of probes that still failed after the retries."""


def plan(models: Sequence[ModelClient], probes: Sequence[Probe], store: Observations,
         decoding: Decoding) -> tuple[list[Job], CollectReport]:
    """The jobs needed to complete the observations, and how much is already cached."""
    report = CollectReport()
    jobs: list[Job] = []
    for model in models:
        identity = model.identity()
        key = model_key(identity)
        store.remember_model(key, model.name, identity)
        have = store.present(key, decoding.key())
        for probe in probes:
            phash = probe.content_hash()
            missing = tuple(i for i in range(decoding.samples) if (phash, i) not in have)
            report.planned_samples += decoding.samples
            report.cached_samples += decoding.samples - len(missing)
            if missing:
                jobs.append(Job(model, key, probe, phash, missing))
    return jobs, report


async def _call(job: Job, decoding: Decoding, n: int, first: int) -> SampleResult:
    request = job.probe.request(n=n, temperature=decoding.temperature,
                                seed=decoding.probe_seed(job.probe_hash, job.key) + first)
    return await job.model.sample(request)


async def _with_retries(job: Job, decoding: Decoding, n: int, first: int, retries: int,
                        backoff: float, report: CollectReport) -> SampleResult:
    for attempt in range(retries + 1):
        report.calls += 1
        try:
            return await _call(job, decoding, n, first)
        except Exception as exc:
            if attempt == retries or not getattr(exc, "transient", False):
                raise
            report.retries += 1
            delay = getattr(exc, "retry_after", None) or backoff * 2**attempt
            await asyncio.sleep(min(float(delay), 30.0))
    raise AssertionError("unreachable")


async def run_job(job: Job, store: Observations, decoding: Decoding, retries: int,
                  backoff: float, report: CollectReport) -> None:
    """Fill one job's sample indices and store them in one transaction."""
    whole = len(job.indices) == decoding.samples
    groups = [(job.indices[0], len(job.indices))] if whole else [(i, 1) for i in job.indices]
    got: list[tuple[int, Sample]] = []
    prompt_tokens = completion_tokens = 0
    latency = 0.0
    for first, n in groups:
        result = await _with_retries(job, decoding, n, first, retries, backoff, report)
        if len(result.samples) < n:
            raise ValueError(f"asked for {n} samples, got {len(result.samples)}")
        got += [(first + j, s) for j, s in enumerate(result.samples[:n])]
        prompt_tokens += result.usage.prompt_tokens
        completion_tokens += result.usage.completion_tokens
        latency += result.latency_s
    store.put(job.key, decoding.key(), job.model.name, job.probe.id, job.probe_hash, got,
              prompt_tokens, completion_tokens, latency)
    report.stored_samples += len(got)


async def collect(models: Sequence[ModelClient], probes: Sequence[Probe], store: Observations,
                  decoding: Decoding = Decoding(), concurrency: int = 4, retries: int = 3,
                  backoff: float = 0.5, on_progress: ProgressCallback | None = None,
                  ) -> CollectReport:
    """Collect what is missing, with ``concurrency`` requests in flight per model."""
    jobs, report = plan(models, probes, store, decoding)
    queues: dict[str, asyncio.Queue[Job]] = {}
    for job in jobs:
        queues.setdefault(job.model.name, asyncio.Queue()).put_nowait(job)

    async def worker(queue: asyncio.Queue[Job]) -> None:
        while not queue.empty():
            job = queue.get_nowait()
            try:
                await run_job(job, store, decoding, retries, backoff, report)
            except Exception as exc:
                report.failures.append((job.model.name, job.probe.id, str(exc) or repr(exc)))
            if on_progress is not None:
                on_progress(job.model.name, len(job.indices))

    workers = [worker(q) for q in queues.values() for _ in range(max(1, concurrency))]
    await asyncio.gather(*workers)
    return report


def with_samples(decoding: Decoding, samples: int) -> Decoding:
    return dataclasses.replace(decoding, samples=samples)
