"""The durable live-diff sink and store: counting, recording, redaction, retention, floors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from router.config import LiveSettings as LiveConfig
from router.live.baseline import ProfileBaseline
from router.live.rates import wilson_interval
from router.live.sink import DurableLiveDiffSink
from router.live.store import ComparisonRow, DiffQuery, LiveStore, Retention
from router.paired.compare import Comparison, NoiseAwareComparer
from router.paired.record import LiveDiffRecord, new_live_diff_id, prompt_digest

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


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LiveStore]:
    opened = LiveStore.in_data_dir(tmp_path).open()
    yield opened
    opened.close()


def compared(a: str, b: str) -> LiveDiffRecord:
    return record(a, b, NoiseAwareComparer()(a, b, ["geography"], pair=("alpha", "beta")))


async def test_agreements_are_counted_but_not_recorded(store: LiveStore) -> None:
    sink = DurableLiveDiffSink(store)
    assert await sink.record(compared("Paris.", "Paris.")) is None
    stored = await sink.record(compared("Paris is the capital.", "Lyon."))
    assert stored is not None
    await store.write("SELECT 1", ())  # a barrier: the fire-and-forget counts are committed
    assert store.ids() == {stored}
    assert store.counts(0) == [("alpha", "beta", "geography", 2, 1)]


async def test_comparisons_of_one_loop_turn_are_written_as_one_statement(
        store: LiveStore) -> None:
    for i in range(5):
        store.add_comparison(ComparisonRow(1e9 + i, "alpha", "beta", "audit", "general",
                                           i == 3))
    await store.write("SELECT 1", ())  # handed over before it, so committed with it
    assert store.batches == 1
    rows = store.comparisons(0)
    assert [(r.at, r.flagged) for r in rows] == [(1e9 + i, i == 3) for i in range(5)]
    store.add_comparison(ComparisonRow(2e9, "alpha", "beta", "audit", "general", False))
    await asyncio.sleep(0)  # the end of the turn hands the row over on its own
    await store.write("SELECT 1", ())
    assert len(store.comparisons(0)) == 6


def test_comparisons_without_an_event_loop_are_written_at_once(tmp_path: Path) -> None:
    store = LiveStore.in_data_dir(tmp_path).open()
    store.add_comparison(ComparisonRow(1e9, "alpha", "beta", "audit", "general", True))
    store.close()  # flushes what is queued
    reopened = LiveStore.in_data_dir(tmp_path).open_reader()
    try:
        assert [r.flagged for r in reopened.comparisons(0)] == [True]
    finally:
        reopened.close()


async def test_flagged_record_keeps_prompt_answers_and_diff(store: LiveStore) -> None:
    sink = DurableLiveDiffSink(store)
    stored = await sink.record(compared("Paris is the capital.", "Lyon."))
    [diff] = store.diffs(DiffQuery())
    assert diff["id"] == stored and diff["primary_text"] == "Paris is the capital."
    assert diff["messages"] == [dict(MESSAGES[0])] and diff["partner_text"] == "Lyon."
    assert "-Paris is the capital." in diff["unified_diff"]
    assert diff["divergence"] > diff["threshold"] and diff["prompt_digest"].startswith("sha256:")


async def test_redaction_keeps_only_the_digest(store: LiveStore) -> None:
    sink = DurableLiveDiffSink(store, LiveConfig(redact=True))
    await sink.record(compared("Paris is the capital.", "Lyon."))
    [diff] = store.diffs(DiffQuery())
    assert diff["redacted"] is True and diff["prompt_digest"] == prompt_digest(MESSAGES)
    assert diff["messages"] is None and diff["primary_text"] is None
    assert diff["partner_text"] is None and diff["unified_diff"] is None
    raw = (store.path.read_bytes() + store.path.with_name(store.path.name + "-wal").read_bytes())
    assert b"capital" not in raw


async def test_retention_by_age_and_count(store: LiveStore) -> None:
    sink = DurableLiveDiffSink(store)
    now = time.time()
    old = [await sink.record(record("a", "b", Comparison(0, True, 1, .5, "d"), now - 1000))
           for _ in range(3)]
    new = [await sink.record(record("a", "b", Comparison(0, True, 1, .5, "d"), now))
           for _ in range(5)]
    assert await store.enforce(Retention(max_age_s=500, max_records=None)) == 3
    assert store.ids() == set(new) and not set(old) & store.ids()
    assert await store.enforce(Retention(max_age_s=None, max_records=2)) == 3
    assert store.ids() == set(new[-2:])
    assert store.counts(0) == [("alpha", "beta", "geography", 5, 5)]


async def test_filters_and_cursor_pages(store: LiveStore) -> None:
    sink = DurableLiveDiffSink(store)
    ids = [await sink.record(record("a", "b", Comparison(0, True, 1, .5, "d"),
                                    domains=(d,))) for d in ("x", "y", "x", "x")]
    page = store.diffs(DiffQuery(domain="x", limit=2))
    assert [d["id"] for d in page] == [ids[0], ids[2]]
    rest = store.diffs(DiffQuery(domain="x", limit=2, after=page[-1]["seq"]))
    assert [d["id"] for d in rest] == [ids[3]]
    assert store.diffs(DiffQuery(primary="nobody")) == []


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
    import sqlite3
    import threading

    store = LiveStore(tmp_path / "live.sqlite3").open()
    started, result = threading.Event(), {}

    def slow_read() -> None:
        started.set()
        result["rows"] = store.read("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 "
                                    "FROM c WHERE x < 2000000) SELECT count(*) FROM c")

    reader = threading.Thread(target=slow_read)
    reader.start()
    started.wait()
    time.sleep(0.05)  # the query is under way
    store.close()
    reader.join()
    assert result["rows"][0][0] == 2_000_000
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        store.read("SELECT 1")
