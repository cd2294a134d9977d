"""How alike two models behave: chance-adjusted agreement, error consistency, semantic divergence.

Pure numpy, vectorised, no I/O. The diff engine calls these on whole domains at once.

Array conventions (shared with :mod:`profiles.significance`):

- ``probs``: one model's option probabilities on one probe, a 1-D non-negative array of length
  ``n_options`` (≥ 2). Rows need not sum to one (logprob top-k truncation loses mass); they are
  renormalised here. A *padded* pool array ``P`` has shape ``(models, probes, max_options)``
  with zeros past each probe's ``n_options``; an all-zero row means "not observed" and is left
  out of every pair it belongs to.
- ``answers``: integer option indices, ``(probes, k)`` for one model with k samples per probe,
  ``(models, probes, k)`` for a pool; ``-1`` marks an unparsed answer, which is excluded.
- ``gold``: index of the correct option per probe, shape ``(probes,)``.
- ``n_options``: option count per probe, shape ``(probes,)``, or one int for every probe.
- ``labels``: integer codes of any answer type (e.g. from ``np.unique(..., return_inverse=True)``),
  shape ``(probes,)``; a negative code means missing.
- ``correct``: boolean per probe, ``(probes,)`` or ``(models, probes)`` for a pool.
- embeddings: ``(k, d)`` per model and probe, or ``(probes, k, d)`` batched; rows are
  renormalised to unit length.

Chance-corrected scores are all κ = (obs − exp)/(1 − exp). When exp == 1 there is no room above
chance (both models always right, or always wrong on two-option probes) and κ is defined as
1.0 if obs == 1 else 0.0. When no probe is usable (everything excluded) the result is NaN;
malformed input raises ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

_EPS = 1e-12


@dataclass(frozen=True)
class DivergenceResult:
    """Semantic divergence of two models on one probe (cosine distances, 0 = same direction).

    ``cross`` is the mean distance between a sample of A and a sample of B; ``floor_a`` and
    ``floor_b`` are each model's mean distance between two of its own distinct samples (its
    noise floor); ``excess = cross − (floor_a + floor_b)/2``. The *mean* of the floors is used,
    not the max, because it makes ``excess`` an unbiased estimate of ½‖μ_a − μ_b‖² (μ = mean
    embedding): zero in expectation when both models sample from the same distribution, however
    noisy, and positive only by a real shift. The max would hide a shift behind one noisy model.
    """

    cross: float
    floor_a: float
    floor_b: float
    excess: float


@dataclass(frozen=True)
class DivergenceArrays:
    """:class:`DivergenceResult` for many probes at once; every field has shape ``(probes,)``."""

    cross: FloatArray
    floor_a: FloatArray
    floor_b: FloatArray
    excess: FloatArray


def chance_kappa(observed: FloatArray | float, expected: FloatArray | float) -> FloatArray:
    """κ = (obs − exp)/(1 − exp), elementwise, with the exp == 1 convention of this module."""
    obs = np.asarray(observed, dtype=np.float64)
    exp = np.asarray(expected, dtype=np.float64)
    room = 1.0 - exp
    safe = np.where(room > _EPS, room, 1.0)
    degenerate = np.where(obs >= 1.0 - _EPS, 1.0, 0.0)
    return np.where(room > _EPS, (obs - exp) / safe, degenerate)


def pad_probabilities(rows: Sequence[npt.ArrayLike]) -> tuple[FloatArray, IntArray]:
    """Stack ragged option-probability rows into ``(probes, max_options)`` plus ``n_options``."""
    arrays = [np.asarray(r, dtype=np.float64) for r in rows]
    for i, a in enumerate(arrays):
        if a.ndim != 1 or a.size < 2:
            raise ValueError(f"probe {i}: option probabilities must be 1-D with ≥ 2 options")
    n_options = np.array([a.size for a in arrays], dtype=np.int64)
    width = int(n_options.max()) if arrays else 2
    padded = np.zeros((len(arrays), width))
    for i, a in enumerate(arrays):
        padded[i, : a.size] = a
    return padded, n_options


def normalise_rows(p: FloatArray) -> FloatArray:
    """Rescale the last axis to sum to one; all-zero rows (not observed) stay zero."""
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError("probabilities must be finite and non-negative")
    total = p.sum(axis=-1, keepdims=True)
    out: FloatArray = np.divide(p, total, out=np.zeros_like(p), where=total > 0)
    return out


def answer_frequencies(answers: npt.ArrayLike, n_options: npt.ArrayLike) -> FloatArray:
    """Empirical answer distribution per probe from k sampled answers.

    ``answers`` has shape ``(..., probes, k)`` (``-1`` = unparsed, excluded); the result has shape
    ``(..., probes, max_options)``. A probe with no parsed answer gets an all-zero row.
    """
    ans = np.asarray(answers)
    if ans.ndim < 2 or not np.issubdtype(ans.dtype, np.integer):
        raise ValueError("answers must be an integer array of shape (..., probes, k)")
    n_opt = option_counts(n_options, ans.shape[-2])
    if np.any(ans < -1) or np.any(ans >= n_opt[:, None]):
        raise ValueError("answers must be -1 (unparsed) or an option index below n_options")
    onehot = ans[..., None] == np.arange(int(n_opt.max()))
    return normalise_rows(onehot.sum(axis=-2).astype(np.float64))


def capa(
    probs_a: Sequence[npt.ArrayLike], probs_b: Sequence[npt.ArrayLike], gold: npt.ArrayLike
) -> float:
    """κp (CAPA, Goel et al. 2025) of two models from their option probabilities.

    ``probs_a[i]`` and ``probs_b[i]`` are the two models' probabilities over probe i's options
    (lengths may differ between probes; rows are renormalised), ``gold[i]`` the correct option.
    c_obs = mean Σ_o p_a(o)p_b(o); c_exp = ā·b̄ + (1−ā)(1−b̄)·mean(1/(|options|−1)), ā and b̄ the
    mean probabilities on the correct option; κp = (c_obs − c_exp)/(1 − c_exp).
    """
    if len(probs_a) != len(probs_b):
        raise ValueError(f"probs_a has {len(probs_a)} probes, probs_b {len(probs_b)}")
    pa, n_a = pad_probabilities(probs_a)
    pb, n_b = pad_probabilities(probs_b)
    if not np.array_equal(n_a, n_b):
        bad = int(np.flatnonzero(n_a != n_b)[0])
        raise ValueError(f"probe {bad}: {n_a[bad]} options in probs_a, {n_b[bad]} in probs_b")
    pa, pb = normalise_rows(pa), normalise_rows(pb)
    if np.any(pa.sum(-1) == 0) or np.any(pb.sum(-1) == 0):
        raise ValueError("every probe needs some probability mass on its options")
    return _capa_rows(pa, pb, _gold(gold, n_a), n_a)


def capa_discrete(
    answers_a: npt.ArrayLike,
    answers_b: npt.ArrayLike,
    gold: npt.ArrayLike,
    n_options: npt.ArrayLike,
) -> float:
    """κp from sampled answers: the empirical answer frequencies stand in for probabilities.

    ``answers_*`` are ``(probes, k)`` (or ``(probes,)`` for one answer each) with ``-1`` for
    unparsed answers; with k = 1 this is the paper's one-hot variant. A probe is used only if both
    models have at least one parsed answer on it.
    """
    a, b = _as_samples(answers_a), _as_samples(answers_b)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"answers_a has {a.shape[0]} probes, answers_b {b.shape[0]}")
    n_opt = option_counts(n_options, a.shape[0])
    fa, fb = answer_frequencies(a, n_opt), answer_frequencies(b, n_opt)
    keep = (fa.sum(-1) > 0) & (fb.sum(-1) > 0)
    return _capa_rows(fa[keep], fb[keep], _gold(gold, n_opt)[keep], n_opt[keep])


def pairwise_capa(P: npt.ArrayLike, gold: npt.ArrayLike, n_options: npt.ArrayLike) -> FloatArray:
    """κp for every pair of models at once: an ``(M, M)`` symmetric matrix.

    ``P`` is ``(models, probes, max_options)``, zero-padded; rows are renormalised and all-zero
    rows (not observed) drop that probe from that model's pairs, so entry (a, b) equals
    ``capa`` on the probes both observed. c_obs for all pairs is one matrix product over the
    flattened (probe, option) axis. The diagonal is each model's κp with itself (1 only for
    one-hot rows). NaN where a pair shares no probe.
    """
    p = np.asarray(P, dtype=np.float64)
    if p.ndim != 3:
        raise ValueError("P must have shape (models, probes, max_options)")
    n_opt = option_counts(n_options, p.shape[1])
    g = _gold(gold, n_opt)
    if int(n_opt.max()) > p.shape[2] or np.any(p[:, np.arange(p.shape[2]) >= n_opt[:, None]]):
        raise ValueError("P must be zero past each probe's n_options")
    p = normalise_rows(p)
    seen = (p.sum(-1) > 0).astype(np.float64)
    flat = p.reshape(p.shape[0], -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        shared = seen @ seen.T
        c_obs = (flat @ flat.T) / shared
        on_gold = p[:, np.arange(p.shape[1]), g]
        a_bar = (on_gold @ seen.T) / shared  # [a, b]: A's mean gold probability on shared probes
        w_bar = ((seen / (n_opt - 1)) @ seen.T) / shared
        c_exp = a_bar * a_bar.T + (1 - a_bar) * (1 - a_bar.T) * w_bar
        kappa = chance_kappa(c_obs, c_exp)
    return np.where(shared > 0, kappa, np.nan)


def pairwise_capa_discrete(
    answers: npt.ArrayLike, gold: npt.ArrayLike, n_options: npt.ArrayLike
) -> FloatArray:
    """:func:`pairwise_capa` from sampled answers ``(models, probes, k)``, ``-1`` = unparsed."""
    ans = np.asarray(answers)
    if ans.ndim != 3:
        raise ValueError("answers must have shape (models, probes, k)")
    return pairwise_capa(answer_frequencies(ans, n_options), gold, n_options)


def error_consistency(correct_a: npt.ArrayLike, correct_b: npt.ArrayLike) -> float:
    """Error consistency (Geirhos et al. 2020): agreement on right/wrong beyond chance.

    c_obs is the share of probes where both are right or both wrong; c_exp = p_a·p_b +
    (1−p_a)(1−p_b) with p the accuracies; κ = (c_obs − c_exp)/(1 − c_exp).
    """
    a, b = _as_bool_pair(correct_a, correct_b)
    if a.size == 0:
        return float("nan")
    p_a, p_b = a.mean(), b.mean()
    c_exp = p_a * p_b + (1 - p_a) * (1 - p_b)
    return float(chance_kappa(float(np.mean(a == b)), float(c_exp)))


def pairwise_error_consistency(
    correct: npt.ArrayLike, valid: npt.ArrayLike | None = None
) -> FloatArray:
    """Error consistency for every pair of models: ``(M, M)`` from ``correct`` ``(M, probes)``.

    ``valid`` (same shape, optional) marks observed entries; each pair uses the probes both
    observed, matching :func:`error_consistency` on that subset. NaN where a pair shares none.
    """
    c = np.asarray(correct)
    if c.ndim != 2 or c.dtype != np.bool_:
        raise ValueError("correct must be a boolean array of shape (models, probes)")
    v = np.ones(c.shape) if valid is None else np.asarray(valid, dtype=np.float64)
    if v.shape != c.shape:
        raise ValueError(f"valid has shape {v.shape}, correct {c.shape}")
    right, wrong = c * v, (~c) * v
    with np.errstate(invalid="ignore", divide="ignore"):
        shared = v @ v.T
        c_obs = (right @ right.T + wrong @ wrong.T) / shared
        p = (right @ v.T) / shared  # [a, b]: A's accuracy on the probes shared with B
        c_exp = p * p.T + (1 - p) * (1 - p.T)
        kappa = chance_kappa(c_obs, c_exp)
    return np.where(shared > 0, kappa, np.nan)


def agreement(labels_a: npt.ArrayLike, labels_b: npt.ArrayLike) -> float:
    """Plain agreement: the share of probes, among those both answered, with the same label."""
    a, b = _label_pair(labels_a, labels_b)
    return float(np.mean(a == b)) if a.size else float("nan")


def cohens_kappa(labels_a: npt.ArrayLike, labels_b: npt.ArrayLike) -> float:
    """Cohen's κ of two label sequences (no gold needed); negative labels are missing.

    p_o is the plain agreement, p_e = Σ_c p_a(c)·p_b(c) from each model's label marginals over
    the probes both answered.
    """
    a, b = _label_pair(labels_a, labels_b)
    if a.size == 0:
        return float("nan")
    size = int(max(a.max(), b.max())) + 1
    marg_a = np.bincount(a, minlength=size) / a.size
    marg_b = np.bincount(b, minlength=size) / b.size
    return float(chance_kappa(float(np.mean(a == b)), float(marg_a @ marg_b)))


def semantic_divergence(emb_a: npt.ArrayLike, emb_b: npt.ArrayLike) -> DivergenceResult:
    """Cross-model vs within-model cosine distance of k samples each (see DivergenceResult)."""
    a, b = np.asarray(emb_a, dtype=np.float64), np.asarray(emb_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError("embeddings must have shape (k, d)")
    batch = semantic_divergences(a[None], b[None])
    return DivergenceResult(
        cross=float(batch.cross[0]),
        floor_a=float(batch.floor_a[0]),
        floor_b=float(batch.floor_b[0]),
        excess=float(batch.excess[0]),
    )


def semantic_divergences(emb_a: npt.ArrayLike, emb_b: npt.ArrayLike) -> DivergenceArrays:
    """:func:`semantic_divergence` for many probes: ``(probes, k_a, d)`` vs ``(probes, k_b, d)``.

    For unit vectors Σ_ij a_i·b_j = (Σ a_i)·(Σ b_j), so every mean is computed from the sample
    sums in O(probes·k·d) without forming the k×k similarity matrices.
    """
    a, b = unit_rows(emb_a), unit_rows(emb_b)
    if a.ndim != 3 or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[2]:
        raise ValueError("embeddings must be (probes, k_a, d) and (probes, k_b, d)")
    k_a, k_b = a.shape[1], b.shape[1]
    if k_a < 2 or k_b < 2:
        raise ValueError("a noise floor needs at least 2 samples per model")
    sum_a, sum_b = a.sum(axis=1), b.sum(axis=1)
    cross = 1.0 - np.einsum("nd,nd->n", sum_a, sum_b) / (k_a * k_b)
    floor_a = _within_distance(sum_a, k_a)
    floor_b = _within_distance(sum_b, k_b)
    return DivergenceArrays(cross, floor_a, floor_b, cross - (floor_a + floor_b) / 2)


def unit_rows(emb: npt.ArrayLike) -> FloatArray:
    """Scale every vector (last axis) to unit length; a zero vector is an error."""
    e = np.asarray(emb, dtype=np.float64)
    norm = np.linalg.norm(e, axis=-1, keepdims=True)
    if not np.all(np.isfinite(e)) or np.any(norm == 0):
        raise ValueError("embeddings must be finite and non-zero")
    unit: FloatArray = e / norm
    return unit


def _within_distance(sums: FloatArray, k: int) -> FloatArray:
    """Mean cosine distance over distinct pairs of k unit vectors, from their sum."""
    off_diagonal: FloatArray = np.einsum("nd,nd->n", sums, sums) - k  # Σ_{i≠j} x_i·x_j
    return 1.0 - off_diagonal / (k * (k - 1))


def _capa_rows(pa: FloatArray, pb: FloatArray, gold: IntArray, n_options: IntArray) -> float:
    """κp from normalised padded rows of the probes to use."""
    if pa.shape[0] == 0:
        return float("nan")
    rows = np.arange(pa.shape[0])
    c_obs = float(np.einsum("no,no->n", pa, pb).mean())
    a_bar, b_bar = float(pa[rows, gold].mean()), float(pb[rows, gold].mean())
    wrong_match = float(np.mean(1.0 / (n_options - 1)))
    c_exp = a_bar * b_bar + (1 - a_bar) * (1 - b_bar) * wrong_match
    return float(chance_kappa(c_obs, c_exp))


def option_counts(n_options: npt.ArrayLike, n_probes: int, minimum: int = 2) -> IntArray:
    """``n_options`` (one int or one per probe) as an int array ``(probes,)``, each ≥ minimum."""
    n = np.asarray(n_options)
    if n.ndim > 1 or (n.ndim == 1 and n.shape[0] != n_probes):
        raise ValueError(f"n_options must be one int or {n_probes} ints, one per probe")
    if (n.size and not np.issubdtype(n.dtype, np.integer)) or np.any(n < minimum):
        raise ValueError(f"n_options must be integers ≥ {minimum}")
    return np.broadcast_to(n, (n_probes,)).astype(np.int64)


def _gold(gold: npt.ArrayLike, n_options: IntArray) -> IntArray:
    """Validated gold indices, shape ``(probes,)``."""
    g = np.asarray(gold)
    if g.shape != n_options.shape or (g.size and not np.issubdtype(g.dtype, np.integer)):
        raise ValueError(f"gold must be {n_options.shape[0]} integer option indices")
    if np.any(g < 0) or np.any(g >= n_options):
        raise ValueError("gold must index one of the probe's options")
    return g.astype(np.int64)


def _as_samples(answers: npt.ArrayLike) -> IntArray:
    """Answers as ``(probes, k)``; a 1-D array is one sample per probe."""
    a = np.asarray(answers)
    return a[:, None] if a.ndim == 1 else a


def _as_bool_pair(a: npt.ArrayLike, b: npt.ArrayLike) -> tuple[BoolArray, BoolArray]:
    x, y = np.asarray(a), np.asarray(b)
    if x.ndim != 1 or x.shape != y.shape or x.dtype != np.bool_ or y.dtype != np.bool_:
        raise ValueError("correct_a and correct_b must be boolean arrays of equal length")
    return x, y


def _label_pair(a: npt.ArrayLike, b: npt.ArrayLike) -> tuple[IntArray, IntArray]:
    """Integer labels of the probes both sides answered (negative = missing)."""
    x, y = np.asarray(a), np.asarray(b)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError("labels must be 1-D arrays of equal length")
    if x.size and not (np.issubdtype(x.dtype, np.integer) and np.issubdtype(y.dtype, np.integer)):
        raise ValueError("labels must be integer codes")
    both = (x >= 0) & (y >= 0)
    return x[both].astype(np.int64), y[both].astype(np.int64)
