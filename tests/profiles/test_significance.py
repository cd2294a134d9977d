"""Noise-floor tests, FDR control, domain intervals and replication on simulated answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import false_discovery_control

from profiles.significance import (
    benjamini_hochberg,
    bootstrap_mean_ci,
    choice_test_with_probs,
    domain_effects,
    embedding_permutation_test,
    min_pvalue,
    replicate,
    screen_and_confirm,
    split_halves,
    tv_permutation_test,
)


def sample(rng: np.random.Generator, probs: list[float], probes: int, k: int) -> np.ndarray:
    """k answers per probe drawn from one option distribution."""
    return rng.choice(len(probs), size=(probes, k), p=probs)


def test_identical_answers_give_large_p_and_opposite_answers_the_minimum() -> None:
    a = np.array([[0, 0, 1, 1, 2], [0, 0, 0, 0, 0], [0, 1, 2, -1, 1]])
    b = np.array([[2, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 2, 0, 1, -1]])
    result = tv_permutation_test(a, b, 3)
    assert result.exact and result.n_splits == 252
    assert result.pvalues[0] == 1.0 and result.pvalues[2] == 1.0
    assert result.statistic[1] == 1.0
    # TV is symmetric, so the mirror split ties: the floor is 2/252, as min_pvalue documents
    assert result.pvalues[1] == pytest.approx(2 / 252) == min_pvalue(5, 5)
    assert result.effect[1] > 0.5 and result.effect[0] < 0


def test_monte_carlo_splits_match_exact_enumeration() -> None:
    rng = np.random.default_rng(0)
    a = sample(rng, [0.6, 0.3, 0.1], 40, 5)
    b = sample(rng, [0.3, 0.4, 0.3], 40, 5)
    exact = tv_permutation_test(a, b, 3)
    sampled = tv_permutation_test(a, b, 3, n_permutations=200, seed=1)
    assert not sampled.exact
    np.testing.assert_allclose(sampled.pvalues, exact.pvalues, atol=0.1)
    np.testing.assert_allclose(sampled.null_mean, exact.null_mean, atol=0.05)
    again = tv_permutation_test(a, b, 3, n_permutations=200, seed=1)
    np.testing.assert_array_equal(again.pvalues, sampled.pvalues)  # seeded


def test_null_pvalues_are_valid_and_bh_keeps_false_discoveries_below_q() -> None:
    rng = np.random.default_rng(2)
    probs = [0.5, 0.3, 0.2]
    a, b = sample(rng, probs, 2000, 10), sample(rng, probs, 2000, 10)
    null = tv_permutation_test(a, b, 3, n_permutations=300, seed=3)
    assert not null.exact
    assert np.mean(null.pvalues <= 0.05) <= 0.06  # type I error at most α (loose bound)
    assert benjamini_hochberg(null.pvalues).rejected.mean() <= 0.05
    assert abs(null.effect.mean()) < 0.01  # the effect is centred on zero under the null


def test_bh_false_discovery_proportion_with_planted_probes() -> None:
    rng = np.random.default_rng(4)
    null_a = sample(rng, [0.4, 0.4, 0.2], 1800, 8)
    null_b = sample(rng, [0.4, 0.4, 0.2], 1800, 8)
    planted_a = sample(rng, [0.9, 0.05, 0.05], 200, 8)
    planted_b = sample(rng, [0.05, 0.9, 0.05], 200, 8)
    test = tv_permutation_test(
        np.concatenate([null_a, planted_a]),
        np.concatenate([null_b, planted_b]),
        3,
        n_permutations=1000,
    )
    rejected = benjamini_hochberg(test.pvalues, q=0.05).rejected
    false = rejected[:1800].sum()
    assert rejected[1800:].mean() > 0.5  # k = 8 caps the power: TV 7/8 has p ≈ 0.0014
    assert false / max(rejected.sum(), 1) <= 0.1


def test_embedding_test_sees_shifts_and_not_noise() -> None:
    rng = np.random.default_rng(5)
    centre = rng.normal(size=(200, 1, 8))
    a = centre + 0.5 * rng.normal(size=(200, 5, 8))
    b = centre + 0.5 * rng.normal(size=(200, 5, 8))
    same = embedding_permutation_test(a, b)
    assert same.exact and 0.4 < same.pvalues.mean() < 0.65
    assert np.mean(same.pvalues <= 0.05) <= 0.08
    shifted = embedding_permutation_test(a, -b)
    assert np.all(shifted.pvalues == pytest.approx(min_pvalue(5, 5)))


def test_choice_test_with_probs_reports_probability_tv_as_effect() -> None:
    answers_a = np.array([[0] * 5, [0, 1, 0, 1, 0]])
    answers_b = np.array([[1] * 5, [1, 0, 1, 0, 0]])
    probs_a = np.array([[0.9, 0.1, 0.0], [0.3, 0.3, 0.4]])
    probs_b = np.array([[0.2, 0.8, 0.0], [0.15, 0.15, 0.2]])  # unnormalised: same as row a
    result = choice_test_with_probs(probs_a, probs_b, answers_a, answers_b, [2, 3])
    np.testing.assert_allclose(result.effect, [0.7, 0.0])
    assert result.pvalues[0] == pytest.approx(min_pvalue(5, 5)) and result.pvalues[1] > 0.5


def test_benjamini_hochberg_textbook_example() -> None:
    # Benjamini & Hochberg (1995), section 4: 15 p-values, q = 0.05 → the four smallest
    # (0.0201 moved to the front to check that input order does not matter)
    p = np.array(
        [
            *(0.0201, 0.0001, 0.0004, 0.0019, 0.0095, 0.0278, 0.0298, 0.0344),
            *(0.0459, 0.3240, 0.4262, 0.5719, 0.6528, 0.7590, 1.0000),
        ]
    )
    rejected, qvalues = benjamini_hochberg(p, q=0.05)
    np.testing.assert_array_equal(np.flatnonzero(rejected), [1, 2, 3, 4])
    np.testing.assert_allclose(qvalues, false_discovery_control(p))
    with_nan = benjamini_hochberg(np.append(p, np.nan))
    assert np.isnan(with_nan.qvalues[-1]) and not with_nan.rejected[-1]
    np.testing.assert_allclose(with_nan.qvalues[:-1], qvalues)


def test_bootstrap_interval_covers_the_true_mean() -> None:
    rng = np.random.default_rng(6)
    covered = 0
    for rep in range(40):
        values = rng.normal(0.3, 0.2, 100)
        mean, low, high = bootstrap_mean_ci(values, seed=rep)
        assert low < mean < high
        covered += low <= 0.3 <= high
    assert covered >= 34  # nominal 95 %: 38 of 40 expected


def test_domain_flag_needs_interval_above_zero_and_a_significant_probe() -> None:
    rng = np.random.default_rng(7)
    effect = np.concatenate([rng.normal(0.3, 0.1, 50), rng.normal(0.0, 0.1, 50)])
    significant = np.zeros(100, bool)
    significant[[0, 60]] = True
    domains = {"planted": np.arange(50), "null": np.arange(50, 100), "empty": []}
    result = domain_effects(effect, domains, significant=significant)
    assert result["planted"].flagged and result["planted"].low > 0.2
    assert not result["null"].flagged and result["null"].low < 0 < result["null"].high
    assert result["planted"].level == pytest.approx(1 - 0.05 / 2)  # Bonferroni over 2 domains
    assert not result["empty"].flagged and np.isnan(result["empty"].estimate)
    no_probe = domain_effects(effect, domains, significant=np.zeros(100, bool))
    assert not no_probe["planted"].flagged and no_probe["planted"].low > 0
    loose = domain_effects(effect, domains, require_significant_probe=False)
    assert loose["planted"].flagged
    with pytest.raises(ValueError, match="significant"):
        domain_effects(effect, domains)


def test_replication_confirms_planted_probes_and_not_noise() -> None:
    rng = np.random.default_rng(8)
    alike = [0.5, 0.3, 0.2]
    a = np.concatenate([sample(rng, [0.9, 0.05, 0.05], 30, 20), sample(rng, alike, 270, 20)])
    b = np.concatenate([sample(rng, [0.05, 0.9, 0.05], 30, 20), sample(rng, alike, 270, 20)])
    screen, screened, confirmed = screen_and_confirm(a, b, 3)
    assert screen.pvalues.shape == (300,)
    assert screened.rejected[:30].mean() > 0.9 and screened.rejected[30:].sum() <= 5
    planted = confirmed.probes < 30
    assert confirmed.replicated[planted].mean() > 0.9
    # noise flagged by hand (as a too-eager screen would) fails to replicate on fresh samples
    flagged = np.zeros(300, bool)
    flagged[:30] = flagged[30:130] = True
    fresh_a = np.concatenate([sample(rng, [0.9, 0.05, 0.05], 30, 10), sample(rng, alike, 270, 10)])
    fresh_b = np.concatenate([sample(rng, [0.05, 0.9, 0.05], 30, 10), sample(rng, alike, 270, 10)])
    check = replicate(flagged, fresh_a, fresh_b, 3, seed=9)
    np.testing.assert_array_equal(check.probes, np.flatnonzero(flagged))
    assert check.replicated[:30].mean() > 0.9
    assert check.replicated[30:].mean() <= 0.05


def test_split_halves_and_empty_replication() -> None:
    first, second = split_halves(np.arange(10).reshape(2, 5))
    np.testing.assert_array_equal(first, [[0, 1, 2], [5, 6, 7]])
    np.testing.assert_array_equal(second, [[3, 4], [8, 9]])
    empty = replicate(np.zeros(2, bool), first, first, 10)
    assert empty.probes.size == 0 and empty.replicated.size == 0


def test_unparsed_answers_are_pooled_but_not_counted() -> None:
    a = np.array([[-1, -1, -1], [0, 0, -1]])
    b = np.array([[-1, -1, -1], [1, 1, -1]])
    result = tv_permutation_test(a, b, np.array([0, 2]))  # nothing parsed on probe 0
    assert result.statistic[0] == 0.0 and result.pvalues[0] == 1.0
    assert result.statistic[1] == 1.0 and result.pvalues[1] < 0.3
    with pytest.raises(ValueError, match="one per probe"):
        tv_permutation_test(a, b, np.array([2, 2, 2]))
