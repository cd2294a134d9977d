"""Collection is cached and resumable: only what is missing reaches the model."""

from __future__ import annotations

import asyncio
from pathlib import Path

from profiles.collect import Decoding, collect, collect_rounds
from profiles.probe import Probe
from profiles.profile import from_store
from profiles.protocol import SampleRequest, SampleResult
from profiles.store import ObservationStore, observation_key
from profiles.suite import Suite, SuiteManifest
from router.backends.params import ScriptedParams
from router.backends.scripted import ScriptedBackend


def probes(count: int, prefix: str = "q") -> list[Probe]:
    return [
        Probe(id=f"{prefix}-{i:03d}", domains=("sim",), type="choice",
              messages=({"role": "user", "content": f"Question {i}?\nA. x\nB. y"},),  # type: ignore[arg-type]
              options=("x", "y"), gold="A")
        for i in range(count)
    ]


def model(name: str = "m", **kw: object) -> ScriptedBackend:
    return ScriptedBackend(name, ScriptedParams(kind="scripted", options=("A", "B"), **kw))  # type: ignore[arg-type]


async def test_rerun_with_everything_cached_makes_no_call(tmp_path: Path) -> None:
    store = ObservationStore.in_data_dir(tmp_path)
    m = model()
    first = await collect([m], probes(20), store, Decoding(samples=5))
    assert first.stored_samples == 100 and first.calls == 100 and not first.failures
    assert m.calls == 100
    second = await collect([m], probes(20), store, Decoding(samples=5))
    assert m.calls == 100 and second.calls == 0
    assert second.cached_samples == 100
    assert store.count() == 100


async def test_interrupted_collection_resumes_without_recalling(tmp_path: Path) -> None:
    store = ObservationStore.in_data_dir(tmp_path)
    m = model(latency_ms=10)
    task = asyncio.create_task(collect([m], probes(40), store, Decoding(samples=5),
                                       concurrency=2))
    while store.count() < 50:  # noqa: ASYNC110 - polling a SQLite file, no event to wait on
        await asyncio.sleep(0.005)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    stored = store.count()
    assert 50 <= stored < 200 and stored % 5 == 0  # whole probes only, no partial writes
    calls_before = m.calls
    resumed = await collect([m], probes(40), store, Decoding(samples=5))
    assert resumed.cached_samples == stored
    assert resumed.calls == 200 - stored  # one request per missing sample
    assert m.calls - calls_before == resumed.calls
    assert store.count() == 200


async def test_changed_probe_text_recollects_only_that_probe(tmp_path: Path) -> None:
    store = ObservationStore.in_data_dir(tmp_path)
    m = model()
    base = probes(10)
    await collect([m], base, store, Decoding(samples=3))
    changed = list(base)
    changed[4] = Probe.model_validate({**changed[4].model_dump(), "messages": [
        {"role": "user", "content": "A different question?\nA. x\nB. y"}]})
    report = await collect([m], changed, store, Decoding(samples=3))
    assert report.calls == 3 and report.stored_samples == 3
    assert report.cached_samples == 27


async def test_two_pool_names_never_share_samples_and_a_changed_identity_recollects(
        tmp_path: Path) -> None:
    store = ObservationStore.in_data_dir(tmp_path)
    await collect([model("a")], probes(5), store, Decoding(samples=4))
    copy = await collect([model("b")], probes(5), store, Decoding(samples=4))
    assert copy.calls == 20  # same settings, another pool name: another model, own samples
    texts = {name: [s.sample.text for s in store.samples(*_keys(name))] for name in "ab"}
    assert texts["a"] != texts["b"]  # own seeds: independent, not identical, samples
    again = await collect([model("a")], probes(5), store, Decoding(samples=4))
    assert again.calls == 0
    other = await collect([model("a", prior="other")], probes(5), store, Decoding(samples=4))
    assert other.calls == 20


async def test_every_sample_is_its_own_request_with_its_own_seed(tmp_path: Path) -> None:
    seen: list[SampleRequest] = []
    m = model()
    original = m.sample

    async def spy(request: SampleRequest) -> SampleResult:
        seen.append(request)
        return await original(request)

    m.sample = spy  # type: ignore[method-assign]
    await collect([m], probes(3), ObservationStore.in_data_dir(tmp_path), Decoding(samples=5))
    assert len(seen) == 15 and all(r.n == 1 for r in seen)
    assert len({r.seed for r in seen}) == 15
    assert sum(r.top_logprobs > 0 for r in seen) == 3  # option probabilities once per probe


async def test_a_model_gets_no_more_workers_than_it_serves_at_once(tmp_path: Path) -> None:
    """``limits`` (the pool's max_concurrency) caps a model's workers: with one, the requests
    of one probe follow each other (a local model reuses the evaluated prompt between them)."""
    order: dict[str, list[str]] = {"m": [], "wide": []}
    busy: dict[str, int] = {"m": 0, "wide": 0}
    peak: dict[str, int] = {"m": 0, "wide": 0}
    models = [model("m", latency_ms=2), model("wide", latency_ms=2)]
    for m in models:
        original = m.sample

        async def spy(request: SampleRequest, name: str = m.name,
                      original: object = original) -> SampleResult:
            busy[name] += 1
            peak[name] = max(peak[name], busy[name])
            order[name].append(request.messages[0]["content"])
            try:
                return await original(request)  # type: ignore[operator,no-any-return]
            finally:
                busy[name] -= 1

        m.sample = spy  # type: ignore[method-assign]
    report = await collect(models, probes(6), ObservationStore.in_data_dir(tmp_path),
                           Decoding(samples=3), concurrency=4, limits={"m": 1})
    assert report.stored_samples == 36 and not report.failures
    assert peak == {"m": 1, "wide": 4}
    runs = [prompt for i, prompt in enumerate(order["m"]) if i == 0 or prompt != order["m"][i - 1]]
    assert len(runs) == 6  # each probe's three requests back to back


async def test_the_confirm_round_is_a_fresh_collection(tmp_path: Path) -> None:
    store = ObservationStore.in_data_dir(tmp_path)
    suite = Suite(SuiteManifest(name="t", version="1"), tuple(probes(30)))
    m = model(sharpness=0.5)
    report = await collect_rounds([m], suite.probes, store, Decoding(samples=4))
    assert report.stored_samples == 240 and report.calls == 240
    profile = from_store(m, suite, store, Decoding(samples=4))
    assert len(profile.records) == len(profile.confirm_records) == 30
    first = [r.texts for r in profile.records.values()]
    fresh = [profile.confirm_records[pid].texts for pid in profile.records]
    assert first != fresh  # other seeds: other samples


async def test_partial_probe_fills_missing_indices_with_the_same_samples(tmp_path: Path) -> None:
    whole_store = ObservationStore(tmp_path / "whole.sqlite3")
    await collect([model()], probes(6), whole_store, Decoding(samples=4))
    part_store = ObservationStore(tmp_path / "part.sqlite3")
    await collect([model()], probes(6), part_store, Decoding(samples=2))
    report = await collect([model()], probes(6), part_store, Decoding(samples=4))
    assert report.calls == 12  # two missing indices per probe, one call each
    whole = [(s.probe_hash, s.index, s.sample.text) for s in whole_store.samples(*_keys())]
    part = [(s.probe_hash, s.index, s.sample.text) for s in part_store.samples(*_keys())]
    assert whole and whole == part


def _keys(name: str = "m") -> tuple[str, str]:
    return observation_key(name, model(name).identity()), Decoding().key()


async def test_transient_failures_are_retried_and_permanent_ones_reported(tmp_path: Path) -> None:
    store = ObservationStore.in_data_dir(tmp_path)
    flaky = model(failure_rate=0.3, seed=3)
    report = await collect([flaky], probes(20), store, Decoding(samples=2), retries=8,
                           backoff=0.0)
    assert report.retries > 0
    assert not report.failures and store.count() == 40
    dead = model("dead", failure_rate=1.0, prior="x")
    progress: list[tuple[str, int, bool]] = []
    report = await collect([dead], probes(3), store, Decoding(samples=2), retries=1, backoff=0.0,
                           concurrency=1, on_progress=lambda *a: progress.append(a))
    # a probe stops at its first failure: its other request is never sent
    assert len(report.failures) == 3 and report.calls == 6
    # the progress says they failed (a bar showed them as collected, at 10^5 samples/s)
    assert progress == [("dead", 2, True)] * 3
    assert all("scripted failure" in f[2] for f in report.failures)
