"""Shared priors where no answer is right: agreement measured against each model's own noise.

On a probe without gold (an opinion, an identity question, whether to refuse, a free-text
answer) κp has no "correct" to adjust for. What can be said is how often two models answer
alike compared with how often each answers like *itself* across its own samples — the noise
floor the diff uses. For answer distributions f_a, f_b on one probe:

* cross agreement  c_ab = Σ_o f_a(o)·f_b(o): the chance a sample of A equals a sample of B;
* self agreement   s_a: the chance two *distinct* samples of A are equal, (k·Σf² − 1)/(k − 1)
  from k sampled answers (unbiased for Σ_o p_a(o)², which is what c_aa estimates), Σp² exactly
  where the answers are option probabilities;
* chance           e_ab = Σ_o π_a(o)·π_b(o), π the model's answer distribution pooled over the
  probes (a model that always says "A" agrees with another that does by chance alone).

``prior agreement = (c̄_ab − ē_ab) / (√(s̄_a·s̄_b) − ē_ab)`` with bars for means over the probes
both models answered, clipped to [−1, 1], and no evidence (NaN) where the denominator is below
:data:`MIN_ROOM`. Two copies of one model score 1 in expectation whatever their sampling
noise (c̄ and s̄ estimate the same Σp²); models answering independently of each other score 0;
models that consistently pick opposite options score below 0. It is a κ whose ceiling is the
models' own consistency instead of 1.

Free text is the same computation on unit embeddings: cross = mean cosine between a sample of
A and one of B, self = mean cosine between two distinct samples of one model (the diff's noise
floor for ``free`` probes, as a similarity), chance = mean cosine between answers of A and B to
*different* probes. All pairs of a pool at once, by matrix products.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
MIN_ROOM = 0.01
"""Least room between chance and the models' own agreement for a measure to say anything.
Where both models nearly always give the answer everyone gives (comply with a harmless
request, say yes), chance is close to the ceiling, and the ratio divides noise by almost
nothing: on the shipped profiles' refusal probes a bootstrap draw reached 11.8. Below this
the pair has no evidence from the measure (NaN), as a κ has none without variation."""


def self_agreement(freq: FloatArray, samples: npt.NDArray[np.int64],
                   exact: BoolArray) -> FloatArray:
    """(M, P) chance that two distinct samples of a model agree on a probe.

    ``freq`` (M, P, C) answer distributions; ``samples`` (M, P) parsed answers behind them;
    ``exact`` (P,) where ``freq`` are probabilities rather than sampled frequencies. NaN where
    fewer than two sampled answers could be read: one answer has no second to agree with (read
    as Σf² = 1 it made two copies of a model that is often unreadable score 0.4, not 1).
    """
    squared = (freq ** 2).sum(-1)
    k = samples.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        unbiased = np.where(k > 1, (k * squared - 1.0) / np.maximum(k - 1.0, 1.0), np.nan)
    result: FloatArray = np.where(exact[None, :], squared, unbiased)
    return result


def pairwise_prior_agreement(freq: FloatArray, self_agree: FloatArray,
                             seen: BoolArray) -> FloatArray:
    """(M, M) agreement beyond chance, scaled by the models' own agreement (module docstring).

    NaN for a pair without a shared probe or without room above chance. A NaN self agreement
    (a probe with one readable sample) leaves that probe out of the model's s̄ only.
    """
    observed = seen.astype(np.float64)
    known = (seen & np.isfinite(self_agree)).astype(np.float64)
    flat = freq.reshape(freq.shape[0], -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        shared = observed @ observed.T
        cross = (flat @ flat.T) / shared
        # s̄_a over the probes b saw too (and where a's own agreement can be estimated)
        own = (np.where(known > 0, self_agree, 0.0) @ observed.T) / (known @ observed.T)
        ceiling = np.sqrt(np.clip(own * own.T, 0.0, None))
        pooled = freq.sum(1) / np.maximum(observed.sum(1), 1.0)[:, None]
        chance = pooled @ pooled.T
        room = ceiling - chance
        out = np.where((shared > 0) & (room > MIN_ROOM), (cross - chance) / room, np.nan)
    return bounded(out)


def pairwise_text_similarity(means: FloatArray, self_sim: FloatArray,
                             seen: BoolArray) -> FloatArray:
    """(M, M) free-text similarity beyond self-similarity, from each model's mean unit
    embedding per probe ``means`` (M, P, d) and mean own-sample cosine ``self_sim`` (M, P)."""
    observed = seen.astype(np.float64)
    m, p, _ = means.shape
    flat = means.reshape(m, -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        shared = observed @ observed.T
        same_probe = flat @ flat.T  # Σ_p m_a[p]·m_b[p]
        cross = same_probe / shared
        total = means.sum(1)  # Σ_p m_a[p]
        other = (total @ total.T - same_probe) / np.maximum(
            observed.sum(1)[:, None] * observed.sum(1)[None, :] - shared, 1.0)
        own = (self_sim * observed) @ observed.T / shared
        ceiling = np.sqrt(np.clip(own * own.T, 0.0, None))
        room = ceiling - other
        out = np.where((shared > 0) & (room > MIN_ROOM) & (p > 1), (cross - other) / room,
                       np.nan)
    return bounded(out)


def bounded(values: FloatArray) -> FloatArray:
    """Clipped to [−1, 1] (NaN kept). With exact answer distributions the measure cannot
    exceed 1 (Cauchy–Schwarz: Σf_a·f_b ≤ √(Σf_a²·Σf_b²)); past it, and below −1, is sampling
    noise in the estimates of the two self agreements."""
    out: FloatArray = np.clip(values, -1.0, 1.0)
    return out


def text_summaries(embeddings: FloatArray, valid: BoolArray) -> tuple[FloatArray, FloatArray]:
    """Per model and probe, the mean unit embedding and the mean cosine between two distinct
    samples, from ``embeddings`` (M, P, k, d) with ``valid`` (M, P, k) samples."""
    weights = valid.astype(np.float64)[..., None]
    sums = (embeddings * weights).sum(2)
    k = valid.sum(2).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(k[..., None] > 0, sums / np.maximum(k, 1.0)[..., None], 0.0)
        own = np.where(k > 1, ((sums ** 2).sum(-1) - k) / (k * (k - 1)), np.nan)
    return means, own
