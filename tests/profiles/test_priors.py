"""Agreement beyond chance and own noise (``profiles.priors``): copies of one model score 1
whatever their noise, independent models 0, opposite ones below 0."""

from __future__ import annotations

import numpy as np

from profiles.priors import (
    pairwise_prior_agreement,
    pairwise_text_similarity,
    self_agreement,
    text_summaries,
)

K = 20


def sampled(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sampled frequencies (probes, options) of K draws from each row of ``p``."""
    return np.stack([rng.multinomial(K, row) / K for row in p])


def test_copies_score_one_and_independent_models_zero() -> None:
    rng = np.random.default_rng(0)
    probes, options = 400, 4
    noisy = rng.dirichlet(np.ones(options) * 0.7, probes)  # a noisy model with opinions
    other = rng.dirichlet(np.ones(options) * 0.7, probes)  # opinions unrelated to those
    opposite = np.roll(noisy, 2, axis=1)  # picks what the first avoids... roughly
    freq = np.stack([sampled(noisy, rng), sampled(noisy, rng), sampled(other, rng),
                     sampled(opposite, rng)])
    seen = np.ones(freq.shape[:2], dtype=bool)
    own = self_agreement(freq, np.full(freq.shape[:2], K), np.zeros(probes, dtype=bool))
    agree = pairwise_prior_agreement(freq, own, seen)
    assert abs(agree[0, 1] - 1.0) < 0.1, agree[0, 1]  # not "agree 60 %": its own noise
    assert abs(agree[0, 2]) < 0.1, agree[0, 2]
    assert agree[0, 3] < agree[0, 2]
    # the raw agreement of the two copies is far below 1: the noise floor is what lifts it
    assert float((freq[0] * freq[1]).sum(-1).mean()) < 0.7


def test_option_probabilities_are_their_own_noise_floor() -> None:
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(3), 50)
    freq = np.stack([p, p, np.roll(p, 1, axis=1)])
    own = self_agreement(freq, np.full(freq.shape[:2], 1), np.ones(50, dtype=bool))
    agree = pairwise_prior_agreement(freq, own, np.ones(freq.shape[:2], dtype=bool))
    assert abs(agree[0, 1] - 1.0) < 1e-9 and agree[0, 2] < 0.5


def test_free_text_copies_score_one_beyond_their_self_similarity() -> None:
    rng = np.random.default_rng(2)
    probes, dim = 60, 32
    centres = rng.normal(size=(probes, dim))
    elsewhere = rng.normal(size=(probes, dim))

    def answers(where: np.ndarray) -> np.ndarray:
        e = where[:, None, :] + rng.normal(scale=1.0, size=(probes, K, dim))
        return e / np.linalg.norm(e, axis=-1, keepdims=True)

    emb = np.stack([answers(centres), answers(centres), answers(elsewhere)])
    means, own = text_summaries(emb, np.ones(emb.shape[:3], dtype=bool))
    sim = pairwise_text_similarity(means, own, np.ones(emb.shape[:2], dtype=bool))
    assert abs(sim[0, 1] - 1.0) < 0.15, sim[0, 1]
    assert abs(sim[0, 2]) < 0.15, sim[0, 2]


def test_measures_stay_within_bounds_where_chance_is_near_the_ceiling() -> None:
    """Three copies of a model that complies with every request but two, which it refuses now
    and then (the shipped refusal probes look like this). Resampled probes put chance close
    to the models' own agreement, and the ratio divided noise by almost nothing: 264 of 300
    draws came out beyond 1 (11.8 on the shipped profiles). Every draw is now within [−1, 1],
    or NaN — no evidence — where the room above chance is below ``MIN_ROOM`` (a draw without
    either of the two probes has none)."""
    rng = np.random.default_rng(3)
    probes, k = 36, 2
    p = np.ones(probes)
    p[:2] = 0.3
    freq = np.stack([np.stack([rng.multinomial(k, [x, 1.0 - x]) / k for x in p])
                     for _ in range(3)])
    seen = np.ones(freq.shape[:2], dtype=bool)
    draws, empty = [], 0
    for _ in range(300):
        cols = rng.choice(probes, probes)
        own = self_agreement(freq[:, cols], np.full((3, probes), k), np.zeros(probes, bool))
        agree = pairwise_prior_agreement(freq[:, cols], own, seen[:, cols])
        draws.append(agree[np.triu_indices(3, 1)])
        empty += int(np.isnan(agree[0, 1]))
    values = np.concatenate(draws)
    assert np.all(np.isnan(values) | (np.abs(values) <= 1.0))
    assert 0 < empty < 100 and np.nanmax(values) == 1.0
    # no room at all (everyone always complies): no evidence, not 0 or a division by ~0
    always = np.zeros((2, probes, 2))
    always[..., 0] = 1.0
    own = self_agreement(always, np.full((2, probes), 20), np.zeros(probes, bool))
    assert np.isnan(pairwise_prior_agreement(always, own, np.ones((2, probes), bool))[0, 1])


def test_copies_that_often_give_no_readable_answer_still_score_one() -> None:
    """A probe with a single readable sample has no second one to agree with: its self
    agreement is unknown, not 1. Counted as 1 it raised the noise floor, and two copies of a
    model readable one sample in five scored 0.4."""
    rng = np.random.default_rng(5)
    probes, options, k = 400, 4, 5
    p = rng.dirichlet(np.ones(options) * 0.7, probes)

    def copy() -> tuple[np.ndarray, np.ndarray]:
        counts = np.stack([rng.multinomial(k, row) for row in p])
        counts = rng.binomial(counts, 0.2).astype(np.float64)  # 4 answers in 5 unreadable
        parsed = counts.sum(-1)
        return counts / np.maximum(parsed, 1)[:, None], parsed

    (fa, na), (fb, nb) = copy(), copy()
    freq, parsed = np.stack([fa, fb]), np.stack([na, nb]).astype(np.int64)
    own = self_agreement(freq, parsed, np.zeros(probes, dtype=bool))
    agree = pairwise_prior_agreement(freq, own, parsed > 0)
    assert abs(agree[0, 1] - 1.0) < 0.15, agree[0, 1]
    assert np.isnan(own[parsed == 1]).all()
