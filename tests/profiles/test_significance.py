"""Permutation tests, the domain test, FDR control and the effect scale on simulated answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import false_discovery_control

from profiles.significance import (
    benjamini_hochberg,
    bootstrap_mean_ci,
    categorical_splits,
    domain_tests,
    embedding_splits,
    probe_pvalues,
    shift_points,
    studentised,
)


def sample(rng: np.random.Generator, probs: list[float], probes: int, k: int) -> np.ndarray:
    """k answers per probe drawn from one option distribution."""
    return rng.choice(len(probs), size=(probes, k), p=probs)


def test_categorical_excess_is_the_embedding_excess_of_one_hot_answers() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4, (30, 6)), rng.integers(0, 4, (30, 5))
    cat = categorical_splits(a, b, 4, n_permutations=200, seed=1)
    emb = embedding_splits(np.eye(4)[a], np.eye(4)[b], n_permutations=200, seed=1)
    np.testing.assert_allclose(cat.excess, emb.excess, atol=1e-12)
    assert cat.excess.shape == (30, 201)


def test_excess_is_unbiased_for_half_the_squared_distance() -> None:
    rng = np.random.default_rng(1)
    p, q = [0.7, 0.2, 0.1], [0.5, 0.4, 0.1]
    same = categorical_splits(sample(rng, p, 3000, 5), sample(rng, p, 3000, 5), 3,
                              n_permutations=20, seed=2)
    moved = categorical_splits(sample(rng, p, 3000, 5), sample(rng, q, 3000, 5), 3,
                               n_permutations=20, seed=2)
    assert abs(same.excess[:, 0].mean()) < 0.005
    # ½Σ(p − q)² = ½(0.2² + 0.2²) = 0.04, i.e. 20 points of answer mass moved
    assert moved.excess[:, 0].mean() == pytest.approx(0.04, abs=0.005)
    assert shift_points(moved.excess[:, 0].mean()) == pytest.approx(20, abs=1.5)


def test_null_probe_pvalues_are_valid_and_bh_keeps_false_discoveries_below_q() -> None:
    rng = np.random.default_rng(2)
    probs = [0.5, 0.3, 0.2]
    null = categorical_splits(sample(rng, probs, 2000, 10), sample(rng, probs, 2000, 10), 3,
                              n_permutations=300, seed=3)
    pvalues = probe_pvalues(null.excess)
    assert np.mean(pvalues <= 0.05) <= 0.06  # type I error at most α (loose bound)
    assert benjamini_hochberg(pvalues).rejected.mean() <= 0.05


def test_domain_test_is_calibrated_under_the_null_and_finds_a_shift() -> None:
    rng = np.random.default_rng(4)
    probs = [0.6, 0.2, 0.1, 0.1]
    domains = {f"d{i}": list(range(20 * i, 20 * i + 20)) for i in range(100)}
    null = categorical_splits(sample(rng, probs, 2000, 5), sample(rng, probs, 2000, 5), 4,
                              n_permutations=400, seed=5)
    tests = domain_tests(null, domains, n_resamples=50)
    pvalues = np.array([t.pvalue for t in tests.values()])
    assert 0.0 < np.mean(pvalues <= 0.1) <= 0.17  # 100 null domains: about 10 % at α = 0.1
    shifted = categorical_splits(sample(rng, probs, 20, 20),
                                 sample(rng, [0.4, 0.4, 0.1, 0.1], 20, 20), 4,
                                 n_permutations=400, seed=6)
    found = domain_tests(shifted, {"d": range(20)}, n_resamples=200)["d"]
    assert found.pvalue == pytest.approx(1 / 401)
    assert found.shift_low < 20 < found.shift_high  # 20 points moved, inside the interval


def test_too_small_domains_are_not_tested() -> None:
    splits = categorical_splits(np.zeros((4, 5), int), np.ones((4, 5), int), 2,
                                n_permutations=100)
    test = domain_tests(splits, {"tiny": range(4)}, min_probes=5)["tiny"]
    assert not test.tested and np.isnan(test.pvalue)
    assert test.shift == pytest.approx(100.0)  # the effect is still reported
    # ... without a "95 %" interval: over one probe it read [x, x], over two it never held
    # the true shift
    assert np.isnan(test.shift_low) and np.isnan(test.shift_high)
    one = domain_tests(splits, {"one": [0]}, min_probes=5)["one"]
    assert one.shift == pytest.approx(100.0) and np.isnan(one.shift_low)


def test_a_probe_whose_every_split_is_alike_weighs_nothing() -> None:
    splits = categorical_splits(np.zeros((1, 5), int), np.zeros((1, 5), int), 2,
                                n_permutations=50)
    assert np.all(studentised(splits.excess) == 0)


def test_embedding_excess_detects_a_semantic_shift() -> None:
    rng = np.random.default_rng(7)
    base = rng.normal(size=(10, 1, 8))
    a = base + 0.1 * rng.normal(size=(10, 6, 8))
    b = base + 0.1 * rng.normal(size=(10, 6, 8)) + 1.0
    alike = base + 0.1 * rng.normal(size=(10, 6, 8))
    shifted = embedding_splits(a, b, n_permutations=300, seed=1)
    same = embedding_splits(a, alike, n_permutations=300, seed=1)
    assert np.all(probe_pvalues(shifted.excess) < 0.02)  # C(12, 6)/2 = 462 distinct splits
    assert np.mean(probe_pvalues(same.excess)) > 0.2


def test_benjamini_hochberg_matches_scipy_and_skips_nan() -> None:
    rng = np.random.default_rng(8)
    p = rng.uniform(0, 0.2, 50)
    ours = benjamini_hochberg(p, 0.05)
    np.testing.assert_allclose(ours.qvalues, false_discovery_control(p), rtol=1e-12)
    with_nan = benjamini_hochberg(np.r_[p, np.nan], 0.05)
    assert np.isnan(with_nan.qvalues[-1]) and not with_nan.rejected[-1]


def test_bootstrap_interval_covers_the_mean() -> None:
    rng = np.random.default_rng(9)
    covered = 0
    for rep in range(100):
        values = rng.normal(0.3, 1.0, 80)
        _, low, high = bootstrap_mean_ci(values, seed=rep, n_resamples=500)
        covered += low <= 0.3 <= high
    assert covered >= 88


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="at least 2 samples"):
        categorical_splits(np.zeros((2, 1), int), np.zeros((2, 5), int), 2)
    with pytest.raises(ValueError, match="answer codes"):
        categorical_splits(np.full((2, 3), 2), np.zeros((2, 3), int), 2)
