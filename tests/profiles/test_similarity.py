"""Similarity statistics against hand-computed cases and brute-force pairwise loops."""

from __future__ import annotations

import numpy as np
import pytest

from profiles.similarity import (
    agreement,
    answer_frequencies,
    capa,
    capa_discrete,
    cohens_kappa,
    error_consistency,
    pairwise_capa,
    pairwise_capa_discrete,
    pairwise_error_consistency,
    semantic_divergence,
    semantic_divergences,
)


def one_hot(answers: list[int], n_options: int) -> list[np.ndarray]:
    return [np.eye(n_options)[a] for a in answers]


def test_capa_is_one_for_identical_one_hot_answers_with_errors() -> None:
    answers = [0, 0, 1, 2]  # gold is 0 everywhere: two right, two wrong, so c_exp = 0.375 < 1
    rows = one_hot(answers, 3)
    assert capa(rows, rows, [0, 0, 0, 0]) == pytest.approx(1.0)


def test_capa_is_about_zero_for_independent_models_at_equal_accuracy() -> None:
    rng = np.random.default_rng(7)
    n, n_options, accuracy = 20_000, 4, 0.6

    def model() -> np.ndarray:
        wrong = rng.integers(1, n_options, n)  # uniform over the wrong options (gold = 0)
        return np.where(rng.random(n) < accuracy, 0, wrong)

    a, b = model(), model()
    gold = np.zeros(n, dtype=np.int64)
    assert capa(one_hot(list(a), n_options), one_hot(list(b), n_options), gold) == pytest.approx(
        0.0, abs=0.02
    )
    assert capa_discrete(a, b, gold, n_options) == pytest.approx(0.0, abs=0.02)


def test_capa_ragged_options_by_hand() -> None:
    probs_a = [[0.8, 0.2], [0.5, 0.25, 0.25], [0.1, 0.7, 0.1, 0.1]]
    probs_b = [[0.6, 0.4], [0.2, 0.6, 0.2], [0.25, 0.25, 0.25, 0.25]]
    gold = [0, 1, 1]
    # c_obs = mean(0.48 + 0.08, 0.10 + 0.15 + 0.05, 0.25) = (0.56 + 0.30 + 0.25) / 3 = 0.37
    # ā = (0.8 + 0.25 + 0.7)/3 = 0.58333…, b̄ = (0.6 + 0.6 + 0.25)/3 = 0.48333…
    # mean(1/(|O|−1)) = (1 + 1/2 + 1/3)/3 = 0.61111…
    # c_exp = 0.281944 + 0.215278 · 0.611111 = 0.413503; κp = −0.043503 / 0.586497 = −0.074174
    a_bar, b_bar, w = 1.75 / 3, 1.45 / 3, (1 + 1 / 2 + 1 / 3) / 3
    c_exp = a_bar * b_bar + (1 - a_bar) * (1 - b_bar) * w
    expected = (0.37 - c_exp) / (1 - c_exp)
    assert expected == pytest.approx(-0.074174, abs=1e-6)
    assert capa(probs_a, probs_b, gold) == pytest.approx(expected)


def test_capa_renormalises_truncated_rows() -> None:
    probs_a = [[0.8, 0.2], [0.5, 0.25, 0.25]]
    probs_b = [[0.6, 0.4], [0.2, 0.6, 0.2]]
    truncated = [[0.4, 0.1], [0.25, 0.125, 0.125]]  # half the mass lost, same shape
    assert capa(truncated, probs_b, [0, 1]) == pytest.approx(capa(probs_a, probs_b, [0, 1]))


def test_capa_degenerate_expected_agreement() -> None:
    right = one_hot([0, 0], 2)
    wrong = one_hot([1, 1], 2)
    assert capa(right, right, [0, 0]) == 1.0  # c_exp = 1 and c_obs = 1
    assert capa(wrong, wrong, [0, 0]) == 1.0  # always wrong on binary probes: c_exp = 1 too
    soft = [np.array([0.0, 1.0]), np.array([0.0, 1.0])]
    half = [np.array([0.5, 0.5])] * 2
    assert capa(soft, half, [1, 1]) != 1.0  # not degenerate: a normal value


@pytest.mark.parametrize(
    ("probs_a", "probs_b", "gold", "message"),
    [
        ([[0.5, 0.5]], [[0.5, 0.5], [1, 0]], [0], "probes"),
        ([[0.5, 0.5]], [[0.3, 0.3, 0.4]], [0], "options"),
        ([[0.5, -0.5]], [[0.5, 0.5]], [0], "non-negative"),
        ([[1.0]], [[1.0]], [0], "≥ 2 options"),
        ([[0.5, 0.5]], [[0.5, 0.5]], [2], "gold"),
        ([[0.0, 0.0]], [[0.5, 0.5]], [0], "mass"),
    ],
)
def test_capa_rejects_malformed_input(
    probs_a: list[list[float]], probs_b: list[list[float]], gold: list[int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        capa(probs_a, probs_b, gold)


def test_capa_discrete_uses_frequencies_and_drops_unparsed() -> None:
    answers_a = np.array([[0, 0, 1, -1], [1, 1, 1, 1], [-1, -1, -1, -1]])
    answers_b = np.array([[0, 1, 1, 1], [1, 0, -1, -1], [0, 0, 0, 0]])
    n_options = np.array([2, 3, 2])
    freqs = answer_frequencies(answers_a, n_options)
    np.testing.assert_allclose(freqs[0], [2 / 3, 1 / 3, 0])
    np.testing.assert_allclose(freqs[2], [0, 0, 0])  # nothing parsed: not observed
    by_hand = capa([[2 / 3, 1 / 3], [0, 1, 0]], [[1 / 4, 3 / 4], [1 / 2, 1 / 2, 0]], [0, 1])
    assert capa_discrete(answers_a, answers_b, [0, 1, 0], n_options) == pytest.approx(by_hand)
    with pytest.raises(ValueError, match="option index"):
        capa_discrete(answers_a, answers_b + 2, [0, 1, 0], n_options)


def test_error_consistency_hand_cases() -> None:
    # c_obs = 3/4, accuracies 3/4 and 1/2 → c_exp = 3/8 + 1/8 = 1/2 → κ = 1/2
    assert error_consistency(
        np.array([True, True, True, False]), np.array([True, True, False, False])
    ) == pytest.approx(0.5)
    # c_obs = 1/2 = c_exp → 0
    assert error_consistency(
        np.array([True, True, False, False]), np.array([True, False, False, True])
    ) == pytest.approx(0.0)
    # opposite errors: c_obs = 0, c_exp = 1/2 → −1
    assert error_consistency(np.array([True, False]), np.array([False, True])) == pytest.approx(-1)
    assert error_consistency(np.array([True, True]), np.array([True, True])) == 1.0


def test_cohens_kappa_matches_the_textbook_example() -> None:
    # 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15 → p_o = 0.7, p_e = 0.5, κ = 0.4
    a = np.array([1] * 20 + [1] * 5 + [0] * 10 + [0] * 15)
    b = np.array([1] * 20 + [0] * 5 + [1] * 10 + [0] * 15)
    assert cohens_kappa(a, b) == pytest.approx(0.4)
    assert agreement(a, b) == pytest.approx(0.7)


def test_missing_labels_are_left_out() -> None:
    a = np.array([0, 1, 2, -1])
    b = np.array([0, 2, -1, 1])
    assert agreement(a, b) == pytest.approx(0.5)  # only the first two probes count
    assert np.isnan(agreement(np.array([-1]), np.array([0])))


def test_pairwise_capa_agrees_with_capa_for_every_pair() -> None:
    rng = np.random.default_rng(3)
    models, probes = 4, 30
    n_options = rng.integers(2, 6, probes)
    gold = rng.integers(0, 2, probes)
    p = rng.random((models, probes, 5)) * (np.arange(5) < n_options[:, None])
    p[2, :4] = 0.0  # model 2 did not observe the first four probes
    matrix = pairwise_capa(p, gold, n_options)
    for i in range(models):
        for j in range(models):
            shared = (p[i].sum(1) > 0) & (p[j].sum(1) > 0)
            rows_i = [p[i, n, : n_options[n]] for n in np.flatnonzero(shared)]
            rows_j = [p[j, n, : n_options[n]] for n in np.flatnonzero(shared)]
            assert matrix[i, j] == pytest.approx(capa(rows_i, rows_j, gold[shared]))


def test_pairwise_discrete_and_error_consistency_agree_with_pairwise_loops() -> None:
    rng = np.random.default_rng(4)
    n_options = rng.integers(2, 5, 40)
    gold = np.zeros(40, dtype=np.int64)
    answers = (rng.random((3, 40, 5)) * n_options[:, None]).astype(np.int64)
    answers[1, ::7] = -1
    matrix = pairwise_capa_discrete(answers, gold, n_options)
    correct = answers[:, :, 0] == 0
    ec = pairwise_error_consistency(correct)
    for i in range(3):
        for j in range(3):
            expected = capa_discrete(answers[i], answers[j], gold, n_options)
            assert matrix[i, j] == pytest.approx(expected)
            assert ec[i, j] == pytest.approx(error_consistency(correct[i], correct[j]))


def test_pairwise_error_consistency_respects_valid_mask() -> None:
    correct = np.array([[True, True, False, True], [True, False, False, False]])
    valid = np.array([[True, True, True, False], [True, True, True, True]])
    matrix = pairwise_error_consistency(correct, valid)
    assert matrix[0, 1] == pytest.approx(error_consistency(correct[0, :3], correct[1, :3]))


def test_pairwise_capa_rejects_mass_past_the_options() -> None:
    p = np.full((2, 1, 3), 1 / 3)
    with pytest.raises(ValueError, match="zero past"):
        pairwise_capa(p, [0], [2])


def test_semantic_divergence_hand_cases() -> None:
    e1, e2 = np.eye(2)
    apart = semantic_divergence(np.array([e1, e1]), np.array([e2, e2]))
    assert (apart.cross, apart.floor_a, apart.floor_b, apart.excess) == pytest.approx((1, 0, 0, 1))
    mixed = semantic_divergence(np.array([e1, e2]), np.array([e1, e2]))
    # cross pairs: (e1,e1)=0 (e1,e2)=1 (e2,e1)=1 (e2,e2)=0 → 0.5; floors: one pair at distance 1
    assert (mixed.cross, mixed.floor_a, mixed.excess) == pytest.approx((0.5, 1.0, -0.5))
    scaled = semantic_divergence(np.array([3 * e1, e1]), np.array([e2, 2 * e2]))
    assert scaled.excess == pytest.approx(1.0)  # vectors are renormalised


def test_semantic_divergence_excess_is_centred_on_same_distribution() -> None:
    rng = np.random.default_rng(5)
    centre = rng.normal(size=16)
    same_a = centre + rng.normal(size=(400, 5, 16))
    same_b = centre + rng.normal(size=(400, 5, 16))
    shifted = same_b + 2.0 * np.eye(16)[0]
    assert semantic_divergences(same_a, same_b).excess.mean() == pytest.approx(0.0, abs=0.01)
    assert semantic_divergences(same_a, shifted).excess.mean() > 0.05
    with pytest.raises(ValueError, match="2 samples"):
        semantic_divergence(np.ones((1, 3)), np.ones((2, 3)))
