"""Collection: models × probes × k samples, cached and resumable.

Only what the store lacks is requested. Every sample is its own request (``n = 1``) with its own
seed, derived from the decoding seed, the collection round, the probe and the model's cache key
(pool name and identity): the diff's tests assume samples are independent draws, and nothing a
request shares (a seed, a server-side cache, a batch) may be shared between two samples. A
resumed run asks for each missing index with the seed it would have had, so it gets the samples
a whole run would have (on backends that honour seeds).

Two rounds: round 0 is the profile; round 1 (:meth:`Decoding.confirm`, collected after round 0
by :func:`collect_rounds`) is a fresh collection with other seeds on which the diff confirms
what round 0 flags. Transient errors (an exception with ``transient = True``, as the router's
``UpstreamError`` has) are retried with exponential backoff, honouring ``retry_after``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from profiles.probe import REQUEST_FORMAT, Probe
from profiles.protocol import ModelClient, Sample, SampleResult, mix_seed
from profiles.store import Observations, observation_key, stable_hash

DEFAULT_SAMPLES = 20
"""k, from ``benchmarks/diff_quality.py``: the smallest k at which 20-point shifts in one domain
are found with recall ≥ 0.9 (see benchmarks/README.md)."""

ProgressCallback = Callable[[str, int, bool], None]
"""Called as ``(model name, samples just finished, whether they failed)``; the total is known
from :func:`plan`. A probe whose request failed finishes its samples unstored."""


@dataclass(frozen=True, slots=True)
class Decoding:
    """How observations are sampled; part of their cache key."""

    samples: int = DEFAULT_SAMPLES
    temperature: float = 0.7
    seed: int = 0
    round: int = 0
    """0: the profile; 1: the confirm collection (other seeds, later requests)."""

    def key(self) -> str:
        return stable_hash({"temperature": self.temperature, "seed": self.seed,
                            "round": self.round, "request": REQUEST_FORMAT,
                            "requests": "one per sample"})

    def confirm(self) -> Decoding:
        """The decoding of the confirm collection."""
        return dataclasses.replace(self, round=1)

    def sample_seed(self, probe_hash: str, model_key: str, index: int) -> int:
        """The seed of one sample's request.

        The model's key (pool name and identity) is mixed in so that two models never share
        random numbers: with shared seeds, two similar models draw coupled samples, their
        cross-model differences shrink below what re-splitting the pooled samples expects, and
        the noise-floor test loses its calibration. The round is mixed in so the confirm
        collection draws fresh samples.
        """
        return mix_seed(self.seed, self.round, probe_hash, model_key, index)


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
    given_up: list[str] = field(default_factory=list)
    """Models whose remaining probes were not requested (``give_up_after`` failures in a row)."""


def plan(models: Sequence[ModelClient], probes: Sequence[Probe], store: Observations,
         decoding: Decoding) -> tuple[list[Job], CollectReport]:
    """The jobs needed to complete the observations, and how much is already cached."""
    report = CollectReport()
    jobs: list[Job] = []
    for model in models:
        identity = model.identity()
        key = observation_key(model.name, identity)
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


async def _call(job: Job, decoding: Decoding, index: int) -> SampleResult:
    request = job.probe.request(n=1, temperature=decoding.temperature,
                                seed=decoding.sample_seed(job.probe_hash, job.key, index))
    if index > 0:
        # first-token probabilities depend on the prompt only: asked once per probe, with
        # sample 0 (a profile keeps the first sample's), not paid for on every request
        request = dataclasses.replace(request, top_logprobs=0)
    return await job.model.sample(request)


async def _with_retries(job: Job, decoding: Decoding, index: int, retries: int,
                        backoff: float, report: CollectReport,
                        abandoned: Callable[[], bool] = lambda: False) -> SampleResult:
    """One sample's request, retried while its error is transient and its probe still wants
    it (``abandoned()``: another of the probe's requests failed, so none is stored)."""
    for attempt in range(retries + 1):
        report.calls += 1
        try:
            return await _call(job, decoding, index)
        except Exception as exc:
            if attempt == retries or not getattr(exc, "transient", False) or abandoned():
                raise
            report.retries += 1
            delay = getattr(exc, "retry_after", None) or backoff * 2**attempt
            await asyncio.sleep(min(float(delay), 30.0))
            if abandoned():
                raise
    raise AssertionError("unreachable")


@dataclass
class _Filling:
    """A job whose requests are under way: the samples so far, stored when all are in."""

    job: Job
    got: list[tuple[int, Sample]] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency: float = 0.0
    failed: bool = False

    def abandoned(self) -> bool:
        """Whether one of the job's requests failed: its others are no longer wanted."""
        return self.failed

    def add(self, index: int, result: SampleResult) -> bool:
        """Take one request's sample; ``True`` once the job has all of them."""
        if not result.samples:
            raise ValueError("asked for 1 sample, got none")
        self.got.append((index, result.samples[0]))
        self.prompt_tokens += result.usage.prompt_tokens
        self.completion_tokens += result.usage.completion_tokens
        self.latency += result.latency_s
        return len(self.got) == len(self.job.indices)

    def store(self, store: Observations, decoding: Decoding) -> None:
        """All of the job's samples in one transaction."""
        job = self.job
        store.put(job.key, decoding.key(), job.model.name, job.probe.id, job.probe_hash,
                  sorted(self.got, key=lambda item: item[0]), self.prompt_tokens,
                  self.completion_tokens, self.latency)


async def collect(models: Sequence[ModelClient], probes: Sequence[Probe], store: Observations,
                  decoding: Decoding = Decoding(), concurrency: int = 4, retries: int = 3,
                  backoff: float = 0.5, on_progress: ProgressCallback | None = None,
                  limits: Mapping[str, int] | None = None,
                  give_up_after: int | None = None) -> CollectReport:
    """Collect what is missing, with ``concurrency`` requests in flight per model.

    Every sample is its own request. A model's requests go out in probe order, so the ones in
    flight together are mostly of one probe (a local model decodes those together, and reuses
    the evaluated prompt between them); a probe's samples are stored in one transaction once
    all are in, and a probe with a failed request stores none. ``limits`` caps a model's
    requests in flight (its ``max_concurrency``): more gain nothing. ``give_up_after``: once
    that many of a model's probes in a row failed (after their retries), its remaining probes
    are not requested and are reported as failed with the reason (an upstream that is down
    would otherwise cost every probe its retries and their backoff).
    """
    jobs, report = plan(models, probes, store, decoding)
    in_a_row: dict[str, int] = {}
    given_up: dict[str, str] = {}
    queues: dict[str, asyncio.Queue[tuple[_Filling, int]]] = {}
    for job in jobs:
        filling = _Filling(job)
        for index in job.indices:
            queues.setdefault(job.model.name, asyncio.Queue()).put_nowait((filling, index))

    def done(filling: _Filling) -> None:
        if on_progress is not None:
            on_progress(filling.job.model.name, len(filling.job.indices), filling.failed)

    def fail(filling: _Filling, error: str) -> None:
        filling.failed = True
        report.failures.append((filling.job.model.name, filling.job.probe.id, error))
        done(filling)

    async def worker(queue: asyncio.Queue[tuple[_Filling, int]]) -> None:
        while not queue.empty():
            filling, index = queue.get_nowait()
            if filling.failed:
                continue
            job = filling.job
            name = job.model.name
            if name in given_up:
                fail(filling, given_up[name])
                continue
            try:
                result = await _with_retries(job, decoding, index, retries, backoff, report,
                                             filling.abandoned)
                if not filling.add(index, result):
                    continue
                filling.store(store, decoding)
                report.stored_samples += len(filling.got)
                in_a_row[name] = 0
            except Exception as exc:
                if filling.failed:
                    continue
                error = str(exc) or repr(exc)
                fail(filling, error)
                in_a_row[name] = in_a_row.get(name, 0) + 1
                if give_up_after is not None and in_a_row[name] >= give_up_after \
                        and name not in given_up:
                    given_up[name] = (f"not requested: {in_a_row[name]} probes in a row "
                                      f"failed (last: {error})")
                    report.given_up.append(name)
                continue
            done(filling)

    def width(name: str) -> int:
        return max(1, min(concurrency, (limits or {}).get(name, concurrency)))

    workers = [worker(q) for name, q in queues.items() for _ in range(width(name))]
    await asyncio.gather(*workers)
    return report


async def collect_rounds(models: Sequence[ModelClient], probes: Sequence[Probe],
                         store: Observations, decoding: Decoding = Decoding(),
                         confirm: bool = True, concurrency: int = 4,
                         on_progress: ProgressCallback | None = None) -> CollectReport:
    """The profile's collection, then (``confirm``) the confirm collection, in that order."""
    report = await collect(models, probes, store, decoding, concurrency,
                           on_progress=on_progress)
    if confirm:
        report = merge_reports(report, await collect(models, probes, store, decoding.confirm(),
                                                     concurrency, on_progress=on_progress))
    return report


def merge_reports(first: CollectReport, second: CollectReport) -> CollectReport:
    """The counts of two collection runs added up."""
    return CollectReport(
        first.planned_samples + second.planned_samples,
        first.cached_samples + second.cached_samples,
        first.stored_samples + second.stored_samples, first.calls + second.calls,
        first.retries + second.retries, first.failures + second.failures,
        list(dict.fromkeys(first.given_up + second.given_up)))


def with_samples(decoding: Decoding, samples: int) -> Decoding:
    return dataclasses.replace(decoding, samples=samples)
