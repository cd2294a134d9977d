"""The durable live-diff sink over each store engine: counting, recording, redaction,
retention, floors."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from router.config import LiveSettings as LiveConfig
from router.errors import StorageError
from router.live.baseline import ProfileBaseline
from router.live.rates import wilson_interval
from router.live.sink import DurableLiveDiffSink
from router.paired.compare import Comparison, NoiseAwareComparer
from router.paired.record import LiveDiffRecord, new_live_diff_id, prompt_digest
from router.store import DiffQuery, Retention, Store
from router.store.sqlite import SqliteStore

MESSAGES = ({"role": "user", "content": "What is the capital of France?"},)


def record(primary_text: str, partner_text: str, comparison: Comparison,
           created_at: float | None = None, domains: tuple[str, ...] = ("geography",)
           ) -> LiveDiffRecord:
    return LiveDiffRecord(
        id=new_live_diff_id(), created_at=time.time() if created_at is None else created_at,
        request_id="req1", primary="alpha", partner="beta", role="audit", answered_by="alpha",
        mode="concurrent", domains=domains, prompt_digest=prompt_digest(MESSAGES),
        messages=MESSAGES, primary_text=primary_text, partner_text=partner_text,
        comparison=comparison, reason="test")


def compared(a: str, b: str) -> LiveDiffRecord:
    return record(a, b, NoiseAwareComparer()(a, b, ["geography"], pair=("alpha", "beta")))


async def ids(store: Store) -> set[str]:
    return {d["id"] for d in await store.diffs(DiffQuery(limit=1000))}


async def test_agreements_are_counted_but_not_recorded(store: Store) -> None:
    sink = DurableLiveDiffSink(store)
    assert await sink.record(compared("Paris.", "Paris.")) is None
    stored = await sink.record(compared("Paris is the capital.", "Lyon."))
    assert stored is not None
    await store.flush()  # a barrier: the fire-and-forget counts are committed
    assert await ids(store) == {stored}
    assert await store.counts(0) == [("alpha", "beta", "geography", 2, 1)]


async def test_flagged_record_keeps_prompt_answers_and_diff(store: Store) -> None:
    sink = DurableLiveDiffSink(store)
    stored = await sink.record(compared("Paris is the capital.", "Lyon."))
    [diff] = await store.diffs(DiffQuery())
    assert diff["id"] == stored and diff["primary_text"] == "Paris is the capital."
    assert diff["messages"] == [dict(MESSAGES[0])] and diff["partner_text"] == "Lyon."
    assert "-Paris is the capital." in diff["unified_diff"]
    assert diff["divergence"] > diff["threshold"] and diff["prompt_digest"].startswith("sha256:")
    assert diff["domains"] == ["geography"] and diff["redacted"] is False


async def test_redaction_keeps_only_the_digest(store: Store) -> None:
    sink = DurableLiveDiffSink(store, LiveConfig(redact=True))
    await sink.record(compared("Paris is the capital.", "Lyon."))
    [diff] = await store.diffs(DiffQuery())
    assert diff["redacted"] is True and diff["prompt_digest"] == prompt_digest(MESSAGES)
    assert diff["messages"] is None and diff["primary_text"] is None
    assert diff["partner_text"] is None and diff["unified_diff"] is None


async def test_redaction_leaves_no_trace_in_the_sqlite_files(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path).open()
    try:
        sink = DurableLiveDiffSink(store, LiveConfig(redact=True))
        await sink.record(compared("Paris is the capital.", "Lyon."))
        files = [store.path, store.path.with_name(store.path.name + "-wal")]
        assert not any(b"capital" in f.read_bytes() for f in files if f.exists())
    finally:
        await store.close()


async def test_retention_counts_what_it_deleted_while_diffs_keep_coming(store: Store) -> None:
    """Rows before less rows after counted the inserts made meanwhile against the deletes
    (a log once said `deleted=-3`)."""
    sink = DurableLiveDiffSink(store)
    now = time.time()
    for _ in range(3):
        await sink.record(record("a", "b", Comparison(0, True, 1, .5, "d"), now - 1000))
    fresh = [sink.record(record("a", "b", Comparison(0, True, 1, .5, "d"), now))
             for _ in range(6)]
    deleted, *_ = await asyncio.gather(
        store.enforce(Retention(max_age_s=500, max_records=None), time.time), *fresh)
    assert deleted == 3 and await store.count_diffs() == 6


async def test_retention_by_age_and_count(store: Store) -> None:
    sink = DurableLiveDiffSink(store)
    now = time.time()
    old = [await sink.record(record("a", "b", Comparison(0, True, 1, .5, "d"), now - 1000))
           for _ in range(3)]
    new = [await sink.record(record("a", "b", Comparison(0, True, 1, .5, "d"), now))
           for _ in range(5)]
    assert await store.enforce(Retention(max_age_s=500, max_records=None), time.time) == 3
    assert await ids(store) == set(new) and not set(old) & await ids(store)
    assert await store.enforce(Retention(max_age_s=None, max_records=2), time.time) == 3
    assert await ids(store) == set(new[-2:])
    assert await store.counts(0) == [("alpha", "beta", "geography", 5, 5)]


async def test_filters_and_cursor_pages(store: Store) -> None:
    sink = DurableLiveDiffSink(store)
    ids_ = [await sink.record(record("a", "b", Comparison(0, True, 1, .5, "d"),
                                     domains=(d,))) for d in ("x", "y", "x", "x")]
    page = await store.diffs(DiffQuery(domain="x", limit=2))
    assert [d["id"] for d in page] == [ids_[0], ids_[2]]
    rest = await store.diffs(DiffQuery(domain="x", limit=2, after=page[-1]["seq"]))
    assert [d["id"] for d in rest] == [ids_[3]]
    assert await store.diffs(DiffQuery(primary="nobody")) == []
    newest = await store.diffs(DiffQuery(newest_first=True, limit=3))
    assert [d["id"] for d in newest] == ids_[::-1][:3]
    before = await store.diffs(DiffQuery(newest_first=True, after=newest[-1]["seq"]))
    assert [d["id"] for d in before] == [ids_[0]]


class Floors:
    def __init__(self, floor: float) -> None:
        self.floor = floor

    def semantic_threshold(self, pair: tuple[str, str], domain: str) -> float | None:
        return self.floor if domain == "geography" else None


def test_noise_below_the_floor_is_not_flagged() -> None:
    a, b = "Paris is the capital.", "The capital is Paris, of course."
    noisy = NoiseAwareComparer(Floors(0.6))(a, b, ["geography"], pair=("alpha", "beta"))
    tight = NoiseAwareComparer(Floors(0.1))(a, b, ["geography"], pair=("alpha", "beta"))
    assert noisy.divergence == pytest.approx(tight.divergence)
    assert 0.1 < noisy.divergence < 0.6
    assert not noisy.flagged and noisy.threshold == 0.6
    assert tight.flagged


    assert tight.flagged


def test_profile_baseline_floors_and_prediction() -> None:
    base = ProfileBaseline(agreement={("alpha", "beta", "all"): 0.9},
                           floors={("alpha", "geography"): 0.3, ("beta", "geography"): 0.4})
    assert base.semantic_threshold(("alpha", "beta"), "geography") == 0.4
    assert base.semantic_threshold(("alpha", "beta"), "history") is None
    assert base.predicted_disagreement("alpha", "beta", "geography") == pytest.approx(0.1)
    assert base.predicted_disagreement("alpha", "gamma", "geography") is None


def test_typed_answers_compare_values_not_wording() -> None:
    comparer = NoiseAwareComparer(types={"arithmetic": "numeric", "safety": "refusal"})
    same = comparer("The answer is 42.", "42", ["arithmetic"])
    assert not same.flagged and same.method == "typed:numeric"
    assert comparer("The answer is 42.", "41", ["arithmetic"]).flagged
    refusal = comparer("I'm sorry, but I can't help with that.", "Sure: step one...",
                       ["safety"])
    assert refusal.flagged and refusal.method == "typed:refusal"


def test_wilson_interval() -> None:
    low, high = wilson_interval(0, 10)
    assert low == 0 and 0.25 < high < 0.35
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_closing_waits_for_a_read_still_running_in_a_worker_thread(tmp_path: Path) -> None:
    """At shutdown a cancelled task's read can still be running in its thread: closing the
    connection under it crashed the process (seen as a segmentation fault in CI)."""
    import threading

    store = SqliteStore(tmp_path).open()
    started, result = threading.Event(), {}

    def slow_read() -> None:
        started.set()
        result["rows"] = store.read("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 "
                                    "FROM c WHERE x < 2000000) SELECT count(*) FROM c")

    reader = threading.Thread(target=slow_read)
    reader.start()
    started.wait()
    time.sleep(0.05)  # the query is under way
    store.close_now()
    reader.join()
    assert result["rows"][0][0] == 2_000_000
    with pytest.raises(StorageError, match="closed"):
        store.read("SELECT 1")


async def test_the_follower_sees_comparisons_after_retention_emptied_the_table(
        store: Store) -> None:
    sink = DurableLiveDiffSink(store)
    await sink.replay()
    for k in range(3):
        await sink.record(record("a", "b", Comparison(0, True, 1, .5, "d"), 1000.0 + k))
    await store.flush()
    await sink.catch_up()
    key = ("alpha", "beta", "geography")
    assert sink.monitor.pairs[key].comparisons == 3
    await store.enforce(Retention(max_age_s=60, max_records=None), time.time)
    await sink.record(compared("Paris.", "Paris."))  # the table's only row now
    await store.flush()
    await sink.catch_up()
    assert sink.monitor.pairs[key].comparisons == 4


async def test_a_baseline_reload_that_fails_keeps_the_baseline_in_use(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Profiles rebuilt while the `openai` embedder was away: the reload's failure was
    swallowed into an empty baseline, which replaced the one in use — no predicted rates and
    no noise floors until the next build or a restart. The baseline stays; the reload is
    tried again."""
    from profiles.embed import EmbeddingError

    monkeypatch.setattr("router.live.sink.RELOAD_RETRY_S", 0.0)
    old = ProfileBaseline({("alpha", "beta", "geography"): 0.8}, {("alpha", "all"): 0.1},
                          version="v1")
    new = ProfileBaseline({("alpha", "beta", "geography"): 0.6}, version="v2")
    reads = [EmbeddingError("http://127.0.0.1:9/v1/embeddings answered 503"), new]

    def reload() -> ProfileBaseline:
        found = reads.pop(0)
        if isinstance(found, Exception):
            raise found
        return found

    sink = DurableLiveDiffSink(store, baseline=old, reload=reload)
    sink.changed("profiles")
    await sink.reload_baseline()
    assert sink.baseline.version == "v1"
    assert sink.baseline.predicted_disagreement("alpha", "beta", "geography") == \
        pytest.approx(0.2)
    await sink.reload_baseline()  # tried again: the embedder is back
    assert sink.baseline.version == "v2" and not reads


async def test_rebuilt_profiles_reset_the_drift_baselines_as_a_restart_would(
        store: Store) -> None:
    """A pair compared before `diffroute profile build` kept what it had at first sight
    after the build: unprofiled (a Beta(1, 1) blend, a burnt-in CUSUM rate) while
    `/v1/stats/disagreements` showed the new profile's predicted rate beside it — and after
    a restart the same history was judged against that prediction. A reload replays the
    stored comparisons against the new predictions, as a restart does."""
    key = ("alpha", "beta", "geography")
    new = ProfileBaseline({key: 0.9}, version="v2")
    sink = DurableLiveDiffSink(store, baseline=ProfileBaseline(), reload=lambda: new)
    await sink.replay()
    for k in range(120):
        await sink.record(record("a", "b", Comparison(0, k % 2 == 0, 1, .5, "d")))
    await store.flush()
    await sink.catch_up()
    assert sink.monitor.pairs[key].predicted is None  # unprofiled: burnt in
    monitor = sink.monitor
    sink.changed("profiles")
    await sink.reload_baseline()
    await sink.catch_up()
    restarted = DurableLiveDiffSink(store, baseline=new)
    await restarted.replay()
    pair, fresh = sink.monitor.pairs[key], restarted.monitor.pairs[key]
    assert sink.monitor is monitor  # the policy holds this one
    assert pair.predicted == pytest.approx(0.1) == fresh.predicted
    assert (pair.comparisons, pair.state, pair.blended_agreement()) == \
        (fresh.comparisons, fresh.state, fresh.blended_agreement())
    assert (pair.cusum and pair.cusum.p0) == (fresh.cusum and fresh.cusum.p0)
