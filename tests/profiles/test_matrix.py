"""The pool matrix compares like with like: sampled answers unless every model has logprobs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from profiles.collect import Decoding
from profiles.matrix import PoolMatrix, pool_matrix, tempered
from profiles.probe import Probe
from profiles.profile import ProbeRecord, Profile
from profiles.suite import Suite, SuiteManifest


def suite(n: int) -> Suite:
    probes = tuple(
        Probe(id=f"p-{i:03d}", domains=("d",), type="choice",
              messages=({"role": "user", "content": f"Question {i}?"},),  # type: ignore[arg-type]
              options=("x", "y", "z"), gold="B")
        for i in range(n))
    return Suite(SuiteManifest(name="t", version="1"), probes)


def profile(name: str, s: Suite, values: tuple[str, ...],
            probs: tuple[float, ...] | None = None, temperature: float = 0.7) -> Profile:
    records = {p.id: ProbeRecord(p.id, p.id, values, values, probs) for p in s.probes}
    return Profile(name, name, s.name, s.version, Decoding(samples=len(values),
                                                           temperature=temperature), records)


def test_probabilities_stand_in_only_when_every_model_has_them() -> None:
    s = suite(10)
    # A samples B four times out of four but its first token spreads over the options
    with_probs = profile("a", s, ("B",) * 4, probs=(0.3, 0.4, 0.3))
    without = profile("b", s, ("B",) * 4)
    mixed = pool_matrix([with_probs, without], s, bootstrap=0).domains["d"]
    # both compared on sampled answers: always the same answer
    assert mixed.agreement[0, 1] == pytest.approx(1.0)
    both = pool_matrix([with_probs, profile("c", s, ("B",) * 4, probs=(0.3, 0.4, 0.3))], s,
                       bootstrap=0).domains["d"]
    expected = tempered((0.3, 0.4, 0.3), 0.7)
    assert both.agreement[0, 1] == pytest.approx(float(expected @ expected))


def test_tempered_probabilities_follow_the_sampling_temperature() -> None:
    np.testing.assert_allclose(tempered((0.2, 0.8), 1.0), [0.2, 0.8])
    np.testing.assert_allclose(tempered((0.2, 0.8), 0.5), [0.04 / 0.68, 0.64 / 0.68])
    np.testing.assert_allclose(tempered((0.2, 0.8), 0.0), [0.0, 1.0])


def test_modal_ties_are_broken_at_random_not_towards_option_a() -> None:
    s = suite(300)
    # every probe: A twice, B (gold) twice; argmax alone would call both models always wrong
    a = profile("a", s, ("A", "A", "B", "B"))
    b = profile("b", s, ("A", "A", "B", "B"))
    m = pool_matrix([a, b], s, bootstrap=0, seed=1).domains["d"]
    assert abs(m.error_consistency[0, 1]) < 0.2  # independent tie-breaks: no shared "errors"


def varied(name: str, s: Suite, rng: np.random.Generator, spread: float) -> Profile:
    """Four samples per probe, drawn from a probe-specific distribution over A, B (gold), C."""
    records = {}
    for p in s.probes:
        weights = rng.dirichlet(np.full(3, spread))
        values = tuple(str(v) for v in rng.choice(["A", "B", "C"], 4, p=weights))
        records[p.id] = ProbeRecord(p.id, p.id, values, values, None)
    return Profile(name, name, s.name, s.version, Decoding(samples=4), records)


def test_audit_rates_count_every_pair_of_calls() -> None:
    """catch = P(auditor differs | primary wrong), false alarm = P(differs | primary right),
    over every pairing of the two models' samples (two independent calls)."""
    s, rng = suite(60), np.random.default_rng(3)
    models = [varied("p", s, rng, 0.5), varied("q", s, rng, 2.0)]
    m = pool_matrix(models, s, bootstrap=0).domains["d"]
    assert m.catch is not None and m.false_alarm is not None
    for i, j in ((0, 1), (1, 0)):
        wrong = caught = right = alarms = 0.0
        for probe in s.probes:
            xs = models[i].records[probe.id].values
            ys = models[j].records[probe.id].values
            for x in xs:
                for y in ys:
                    w = 1 / (len(xs) * len(ys))
                    if x == "B":
                        right, alarms = right + w, alarms + w * (y != x)
                    else:
                        wrong, caught = wrong + w, caught + w * (y != x)
        assert m.catch[i, j] == pytest.approx(caught / wrong)
        assert m.false_alarm[i, j] == pytest.approx(alarms / right)


def test_audit_rates_of_each_half_are_those_of_its_probes() -> None:
    """``catch_even`` / ``false_alarm_odd``…: the rates on alternate gold probes (suite order),
    the same as a matrix of that half alone; a domain too small to halve has none."""
    s, rng = suite(60), np.random.default_rng(5)
    models = [varied("p", s, rng, 0.5), varied("q", s, rng, 2.0), varied("r", s, rng, 1.0)]
    m = pool_matrix(models, s, bootstrap=0).domains["d"]
    for name, probes in (("even", s.probes[0::2]), ("odd", s.probes[1::2])):
        half = Suite(s.manifest, probes)
        alone = pool_matrix(models, half, bootstrap=0).domains["d"]
        assert alone.catch is not None and alone.false_alarm is not None
        np.testing.assert_allclose(getattr(m, f"catch_{name}"), alone.catch)
        np.testing.assert_allclose(getattr(m, f"false_alarm_{name}"), alone.false_alarm)
    assert not np.allclose(m.catch_even, m.catch_odd)  # type: ignore[arg-type]
    back = PoolMatrix.from_json(pool_matrix(models, s, bootstrap=0).to_json()).domains["d"]
    np.testing.assert_allclose(back.false_alarm_odd, m.false_alarm_odd, atol=1e-5)  # type: ignore[arg-type]
    small = pool_matrix(models, Suite(s.manifest, s.probes[:7]), bootstrap=0).domains["d"]
    assert small.catch is not None and small.catch_even is None and small.false_alarm_odd is None


def test_an_auditor_with_the_same_blind_spots_catches_nothing() -> None:
    s = suite(40)
    primary = profile("p", s, ("A", "B", "B", "B"))
    twin = profile("twin", s, ("A", "A", "A", "A"))  # wrong exactly where p is wrong
    oracle = profile("oracle", s, ("B", "B", "B", "B"))
    m = pool_matrix([primary, twin, oracle], s, bootstrap=0).domains["d"]
    assert m.catch is not None and m.false_alarm is not None
    assert m.catch[0, 1] == pytest.approx(0.0) and m.false_alarm[0, 1] == pytest.approx(1.0)
    assert m.catch[0, 2] == pytest.approx(1.0) and m.false_alarm[0, 2] == pytest.approx(0.0)
    # the JSON form keeps them
    back = PoolMatrix.from_json(pool_matrix([primary, twin, oracle], s, bootstrap=0).to_json())
    assert back.domains["d"].catch is not None
    np.testing.assert_allclose(back.domains["d"].catch, m.catch, atol=1e-5)


def test_the_evidence_counted_is_the_probes_observed_not_the_suites() -> None:
    """Two models observed on 11 of 40 probes (an unfinished build): κp rests on 11 probes,
    and says so (it said 40)."""
    s = suite(40)
    rng = np.random.default_rng(4)
    full = [varied(name, s, rng, 0.8) for name in ("a", "b")]
    cut = [dataclasses.replace(p, records=dict(list(p.records.items())[:11])) for p in full]
    m = pool_matrix(cut, s, bootstrap=20).domains["d"]
    assert (m.n_kappa, m.n_gold) == (11, 11)
    assert np.isfinite(m.kappa[0, 1]) and m.kappa_low[0, 1] <= m.kappa[0, 1] <= m.kappa_high[0, 1]
    assert pool_matrix(full, s, bootstrap=0).domains["d"].n_kappa == 40


def test_an_answer_that_could_not_be_read_is_not_a_right_one() -> None:
    """Accuracy counted right answers among the *parsed* samples: a model that answered one
    probe in four readably (and right) and the rest with no readable answer showed 1.0, as a
    model right on every sample did; and a probe left wholly unread did not count at all."""
    s = suite(8)
    always = profile("always", s, ("B",) * 4)
    mostly_unread = profile("unread", s, ("B", None, None, None))  # type: ignore[arg-type]
    blank = Profile("blank", "blank", s.name, s.version, Decoding(samples=4), {
        p.id: ProbeRecord(p.id, p.id, ("",) * 4, (None,) * 4 if i < 4 else ("B",) * 4)
        for i, p in enumerate(s.probes)})
    m = pool_matrix([always, mostly_unread, blank], s, bootstrap=0).domains["d"]
    assert m.accuracy.tolist() == pytest.approx([1.0, 0.25, 0.5])
    # the modal answer of "B, ?, ?, ?" is "no readable answer", not a right one: wrong where
    # the other model is wrong, right where it is right (error consistency 1; it was 0 when
    # "B, ?, ?, ?" counted as right)
    def halves(name: str, first: tuple[str | None, ...]) -> Profile:
        return Profile(name, name, s.name, s.version, Decoding(samples=4), {
            p.id: ProbeRecord(p.id, p.id, ("",) * 4, first if i < 4 else ("B",) * 4)
            for i, p in enumerate(s.probes)})
    m = pool_matrix([halves("x", ("B", None, None, None)), halves("y", ("A",) * 4)], s,
                    bootstrap=0).domains["d"]
    assert m.error_consistency[0, 1] == pytest.approx(1.0)
    summary = mostly_unread.summary(s)
    assert summary["accuracy"] == 0.25 and summary["parse_failure_rate"] == 0.75


def test_accuracy_counts_the_probes_only_one_model_could_read() -> None:
    """Two models; A read on half the gold probes (right on them) and unreadable on the rest.
    The matrix kept only probes *two* models answered readably, so A's accuracy read 1.0
    (the diff showed it) where `profile show` says 0.5, and wholly unreadable answers read
    no accuracy at all instead of 0. Error consistency counts "no readable answer" as the
    wrong answer it is."""
    s = suite(8)

    def rows(name: str, first: tuple[str | None, ...], rest: tuple[str | None, ...],
             cut: int = 4) -> Profile:
        return Profile(name, name, s.name, s.version, Decoding(samples=4), {
            p.id: ProbeRecord(p.id, p.id, ("",) * 4, first if i < cut else rest)
            for i, p in enumerate(s.probes)})

    half = rows("half", ("B",) * 4, (None,) * 4)  # type: ignore[arg-type]
    right = rows("right", ("B",) * 4, ("B",) * 4)
    m = pool_matrix([half, right], s, bootstrap=0).domains["d"]
    assert m.accuracy.tolist() == pytest.approx([half.summary(s)["accuracy"], 1.0])
    assert m.accuracy[0] == pytest.approx(0.5) and m.n_gold == 8
    unread = rows("unread", (None,) * 4, (None,) * 4)  # type: ignore[arg-type]
    m = pool_matrix([unread, right], s, bootstrap=0).domains["d"]
    assert m.accuracy.tolist() == pytest.approx([0.0, 1.0])
    # "half" is right four times, then wrong four times; "other" right twice, then wrong:
    # both wrong on 4 of 8, both right on 2: κ = (0.75 − 0.5)/(1 − 0.5) = 0.5 (read on the
    # first four only, it was 0)
    other = rows("other", ("B",) * 4, ("A",) * 4, cut=2)
    assert pool_matrix([half, other], s, bootstrap=0).domains["d"].error_consistency[
        0, 1] == pytest.approx(0.5)


def test_kappa_has_no_interval_on_fewer_than_five_probes() -> None:
    """A percentile bootstrap over two probes (three distinct draws) held the true κp about
    half the time; from five probes on it holds it about 95 % of the time."""
    rng = np.random.default_rng(6)
    for n, has_interval in ((2, False), (4, False), (5, True)):
        s = suite(n)
        pair = [varied(name, s, rng, 0.8) for name in ("a", "b")]
        m = pool_matrix(pair, s, bootstrap=50).domains["d"]
        assert np.isfinite(m.kappa[0, 1])
        assert np.isfinite(m.kappa_low[0, 1]) == has_interval, (n, m.kappa_low[0, 1])
