"""Is a difference between two models real? Noise-floor tests, FDR control, domain CIs, replication.

Pure numpy, vectorised over all probes of a domain (or a whole suite) at once, no I/O.

Array conventions (as in :mod:`profiles.similarity`):

- ``answers_a``/``answers_b``: int arrays ``(probes, k_a)`` / ``(probes, k_b)`` of option indices
  (or any integer answer codes), ``-1`` = unparsed; ``n_options``: ``(probes,)`` or one int.
- ``emb_a``/``emb_b``: ``(probes, k_a, d)`` / ``(probes, k_b, d)`` embeddings of each sample.
- ``probs_a``/``probs_b``: ``(probes, max_options)`` zero-padded option probabilities.
- Results are arrays of shape ``(probes,)``; domains are ``Mapping[name, probe indices]``, so a
  probe tagged with two domains counts in both.

Per-probe test (the noise floor). The 2k samples of both models are pooled and re-split into
groups of k_a and k_b: if the models behave the same, every split is as likely as the observed
one. The statistic is the total variation distance between the two groups' answer distributions
(categorical) or cross-minus-within cosine distance (embeddings). When the number of distinct
splits C(k_a+k_b, k_a) is at most ``n_permutations`` every split is enumerated (exact p-value,
the observed split counted among them); otherwise ``n_permutations`` random splits per probe
give p = (1 + #{null ≥ observed})/(1 + B).

Resolution limit: both statistics are symmetric in A and B, so with k_a == k_b the mirror of
the observed split ties with it. With k = 5 samples each the smallest attainable p-value is
therefore 2/C(10, 5) = 1/126 ≈ 0.0079, not 1/252. Under Benjamini–Hochberg at q over m probes a
probe can only be discovered alongside ≥ m·p_min/q others (≈ 16 per 100 probes at k = 5): a
lone differing probe in a large family is invisible at k = 5. Use k ≥ 8 (p_min = 1/6435) where
single-probe resolution matters, or rely on the domain-level interval, which aggregates.

The per-probe ``effect`` is the observed statistic minus its mean over the splits (the null
mean, i.e. the noise floor of the statistic for these very samples): zero in expectation when
the models are alike, so it can be averaged over a domain without the small-k upward bias of
raw TV distance.

Choice probes with option probabilities: the probabilities are a deterministic function of the
prompt and carry no sampling noise of their own, so the test is run on the sampled answers (what
users actually see) and the probability TV distance is reported as the effect
(:func:`choice_test_with_probs`).

Domain flag: the mean per-probe effect with a percentile bootstrap interval over probes; the
interval level is Bonferroni-adjusted across the domains tested (1 − α/D), chosen over an
FDR-adjusted interval because D is small (tens) and a flagged domain is a headline claim. A
domain is flagged only if the interval lies above zero (a difference, not a surplus of
agreement) and, by default, it holds ≥ 1 BH-significant probe.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import combinations
from math import comb
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from profiles.similarity import normalise_rows, option_counts, unit_rows

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

DEFAULT_PERMUTATIONS = 2000
DEFAULT_RESAMPLES = 2000
_TIE = 1e-10  # float slack when comparing a null statistic with the observed one
_CELLS = 4_000_000  # max split×sample×feature cells in memory per chunk of probes


@dataclass(frozen=True)
class ProbeTests:
    """Per-probe test results, every array of shape ``(probes,)``.

    ``statistic``: observed statistic; ``null_mean``: its mean over re-splits; ``effect``: the
    size of the difference (statistic − null_mean, unless the test says otherwise); ``pvalues``;
    ``n_splits``: splits used; ``exact``: whether they were enumerated.
    """

    statistic: FloatArray
    null_mean: FloatArray
    effect: FloatArray
    pvalues: FloatArray
    n_splits: int
    exact: bool


class BHResult(NamedTuple):
    """Benjamini–Hochberg outcome: ``rejected`` mask and adjusted ``qvalues`` (NaN stays NaN)."""

    rejected: BoolArray
    qvalues: FloatArray


@dataclass(frozen=True)
class DomainEffect:
    """One domain: mean per-probe effect, its bootstrap interval at ``level``, and the flag."""

    estimate: float
    low: float
    high: float
    level: float
    n_probes: int
    n_significant: int
    flagged: bool


@dataclass(frozen=True)
class Replication:
    """Confirmation of screened probes: ``probes`` (indices), ``replicated`` and ``pvalues``."""

    probes: IntArray
    replicated: BoolArray
    pvalues: FloatArray


def min_pvalue(k_a: int, k_b: int, n_permutations: int = DEFAULT_PERMUTATIONS) -> float:
    """The smallest p-value the per-probe tests can return for these sample counts."""
    splits = comb(k_a + k_b, k_a)
    if splits > n_permutations:
        return 1.0 / (1 + n_permutations)
    return (2 if k_a == k_b else 1) / splits


def tv_permutation_test(
    answers_a: npt.ArrayLike,
    answers_b: npt.ArrayLike,
    n_options: npt.ArrayLike,
    *,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int | np.random.Generator = 0,
) -> ProbeTests:
    """Per-probe permutation test of the TV distance between two models' sampled answers.

    Unparsed answers (-1) are pooled and re-split like the others but ignored by the statistic;
    a group left without a parsed answer contributes TV = 0. To count "unparsed" as a behaviour,
    map it to an extra option index before calling.
    """
    a, b = _int_samples(answers_a), _int_samples(answers_b)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"answers_a has {a.shape[0]} probes, answers_b {b.shape[0]}")
    n_opt = option_counts(n_options, a.shape[0], minimum=0)
    pooled = np.concatenate([a, b], axis=1)
    if np.any(pooled < -1) or np.any(pooled >= n_opt[:, None]):
        raise ValueError("answers must be -1 (unparsed) or an option index below n_options")
    width = max(int(n_opt.max()), 1) if n_opt.size else 1
    onehot = (pooled[..., None] == np.arange(width)).astype(np.float64)
    return _permutation_test(onehot, a.shape[1], _tv_of_splits, n_permutations, seed)


def embedding_permutation_test(
    emb_a: npt.ArrayLike,
    emb_b: npt.ArrayLike,
    *,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int | np.random.Generator = 0,
) -> ProbeTests:
    """Per-probe permutation test for ``free`` answers on the pooled sample embeddings.

    The statistic is the semantic divergence excess of :mod:`profiles.similarity`: cross-model
    mean cosine distance minus the mean of both within-model distances.
    """
    a, b = unit_rows(emb_a), unit_rows(emb_b)
    if a.ndim != 3 or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[2]:
        raise ValueError("embeddings must be (probes, k_a, d) and (probes, k_b, d)")
    if a.shape[1] < 2 or b.shape[1] < 2:
        raise ValueError("a noise floor needs at least 2 samples per model")
    pooled = np.concatenate([a, b], axis=1)
    gram = pooled @ pooled.transpose(0, 2, 1)  # (probes, m, m) cosine similarities
    return _permutation_test(gram, a.shape[1], _excess_of_splits, n_permutations, seed)


def choice_test_with_probs(
    probs_a: npt.ArrayLike,
    probs_b: npt.ArrayLike,
    answers_a: npt.ArrayLike,
    answers_b: npt.ArrayLike,
    n_options: npt.ArrayLike,
    *,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int | np.random.Generator = 0,
) -> ProbeTests:
    """Choice probes with option probabilities: p-value from the sampled answers, effect = TV
    distance between the (renormalised) probability rows ``(probes, max_options)``."""
    pa = normalise_rows(np.asarray(probs_a, dtype=np.float64))
    pb = normalise_rows(np.asarray(probs_b, dtype=np.float64))
    if pa.shape != pb.shape or pa.ndim != 2:
        raise ValueError("probs_a and probs_b must be (probes, max_options) of equal shape")
    test = tv_permutation_test(
        answers_a, answers_b, n_options, n_permutations=n_permutations, seed=seed
    )
    if pa.shape[0] != test.pvalues.shape[0]:
        raise ValueError("probabilities and answers cover different numbers of probes")
    tv: FloatArray = 0.5 * np.abs(pa - pb).sum(axis=1)
    return ProbeTests(test.statistic, test.null_mean, tv, test.pvalues, test.n_splits, test.exact)


def benjamini_hochberg(pvalues: npt.ArrayLike, q: float = 0.05) -> BHResult:
    """Benjamini–Hochberg step-up at FDR level ``q``; NaN p-values are not tested."""
    p = np.asarray(pvalues, dtype=np.float64)
    tested = np.isfinite(p)
    qvalues = np.full(p.shape, np.nan)
    m = int(tested.sum())
    if m:
        order = np.argsort(p[tested], kind="stable")
        ranked = p[tested][order] * m / np.arange(1, m + 1)
        adjusted = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
        inner = np.empty(m)
        inner[order] = adjusted
        qvalues[tested] = inner
    return BHResult(rejected=np.asarray(np.nan_to_num(qvalues, nan=2.0) <= q), qvalues=qvalues)


def bootstrap_mean_ci(
    values: npt.ArrayLike,
    *,
    level: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int | np.random.Generator = 0,
) -> tuple[float, float, float]:
    """(mean, low, high): percentile bootstrap interval of the mean over the given values."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    chunk = max(1, _CELLS // x.size)
    means = np.concatenate(
        [
            x[rng.integers(0, x.size, (min(chunk, n_resamples - start), x.size))].mean(axis=1)
            for start in range(0, n_resamples, chunk)
        ]
    )
    tail = (1.0 - level) / 2
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(x.mean()), float(low), float(high)


def domain_effects(
    effect: npt.ArrayLike,
    domains: Mapping[str, npt.ArrayLike],
    *,
    significant: npt.ArrayLike | None = None,
    level: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    require_significant_probe: bool = True,
) -> dict[str, DomainEffect]:
    """Per-domain effect size (mean per-probe effect) with a Bonferroni-adjusted bootstrap CI.

    ``domains`` maps a name to its probe indices; ``significant`` is the BH mask over all probes
    (required when ``require_significant_probe``). Each domain is resampled with its own stream
    spawned from ``seed`` in mapping order.
    """
    eff = np.asarray(effect, dtype=np.float64)
    sig = np.zeros(eff.shape, bool) if significant is None else np.asarray(significant, bool)
    if require_significant_probe and significant is None:
        raise ValueError("pass significant= (BH mask) or require_significant_probe=False")
    members = {name: np.asarray(idx, dtype=np.int64).reshape(-1) for name, idx in domains.items()}
    tested = sum(1 for idx in members.values() if idx.size)
    adjusted = 1.0 - (1.0 - level) / max(tested, 1)
    streams = np.random.SeedSequence(seed).spawn(len(members))
    result = {}
    for (name, idx), stream in zip(members.items(), streams, strict=True):
        est, low, high = bootstrap_mean_ci(
            eff[idx], level=adjusted, n_resamples=n_resamples, seed=np.random.default_rng(stream)
        )
        n_sig = int(sig[idx].sum())
        flagged = bool(low > 0) and (n_sig > 0 or not require_significant_probe)
        result[name] = DomainEffect(est, low, high, adjusted, int(idx.size), n_sig, flagged)
    return result


def split_halves(answers: npt.ArrayLike) -> tuple[IntArray, IntArray]:
    """Split ``(probes, k)`` samples into a screening half (first ⌈k/2⌉) and a held-out half."""
    a = _int_samples(answers)
    if a.shape[1] < 2:
        raise ValueError("splitting needs at least 2 samples per probe")
    half = (a.shape[1] + 1) // 2
    return a[:, :half], a[:, half:]


def replicate(
    flagged: npt.ArrayLike,
    confirm_a: npt.ArrayLike,
    confirm_b: npt.ArrayLike,
    n_options: npt.ArrayLike,
    *,
    q: float = 0.05,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int | np.random.Generator = 0,
) -> Replication:
    """Re-test the flagged probes on held-out answers (a split half or fresh samples).

    ``flagged`` is a boolean mask or index array over the probes; the confirm answers must not
    have been used to flag them. A probe replicates if it is BH-significant at ``q`` among the
    flagged probes' confirmation p-values (the family is only the flagged ones).
    """
    a, b = _int_samples(confirm_a), _int_samples(confirm_b)
    probes = _indices(flagged, a.shape[0])
    n_opt = option_counts(n_options, a.shape[0], minimum=0)
    if probes.size == 0:
        return Replication(probes, np.zeros(0, bool), np.zeros(0))
    test = tv_permutation_test(
        a[probes], b[probes], n_opt[probes], n_permutations=n_permutations, seed=seed
    )
    return Replication(probes, benjamini_hochberg(test.pvalues, q).rejected, test.pvalues)


def screen_and_confirm(
    answers_a: npt.ArrayLike,
    answers_b: npt.ArrayLike,
    n_options: npt.ArrayLike,
    *,
    q: float = 0.05,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
) -> tuple[ProbeTests, BHResult, Replication]:
    """Split-half replication: screen (test + BH) on the first halves, confirm on the rest."""
    screen_a, confirm_a = split_halves(answers_a)
    screen_b, confirm_b = split_halves(answers_b)
    screen_rng, confirm_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2)
    )
    screen = tv_permutation_test(
        screen_a, screen_b, n_options, n_permutations=n_permutations, seed=screen_rng
    )
    screened = benjamini_hochberg(screen.pvalues, q)
    confirmed = replicate(
        screened.rejected,
        confirm_a,
        confirm_b,
        n_options,
        q=q,
        n_permutations=n_permutations,
        seed=confirm_rng,
    )
    return screen, screened, confirmed


def _permutation_test(
    pooled: FloatArray,
    k_a: int,
    statistic: Callable[[FloatArray, FloatArray, int], FloatArray],
    n_permutations: int,
    seed: int | np.random.Generator,
) -> ProbeTests:
    """Shared machinery: ``pooled`` is ``(probes, m, features)`` with A's samples first.

    ``statistic(splits, pooled_chunk, k_a)`` maps split masks ``(probes|1, S, m)`` to ``(probes,
    S)``. The observed split is evaluated as split 0 of every chunk, so it goes through exactly
    the same arithmetic as the null splits.
    """
    n, m = pooled.shape[0], pooled.shape[1]
    if not 1 <= k_a < m:
        raise ValueError("both models need at least one sample per probe")
    rng = np.random.default_rng(seed)
    exact = comb(m, k_a) <= n_permutations
    shared = _all_splits(m, k_a)[None] if exact else None
    n_splits = comb(m, k_a) if exact else n_permutations
    chunk = max(1, _CELLS // ((n_splits + 1) * m * max(pooled.shape[2], 1)))
    parts = []
    for start in range(0, n, chunk):
        block = pooled[start : start + chunk]
        null = _random_splits(len(block), n_splits, m, k_a, rng) if shared is None else shared
        parts.append(statistic(_with_observed(null, k_a), block, k_a))
    values = np.concatenate(parts, axis=0) if parts else np.zeros((0, n_splits + 1))
    observed, null_values = values[:, 0], values[:, 1:]
    hits = (null_values >= observed[:, None] - _TIE).sum(axis=1)
    pvalues = hits / n_splits if exact else (1 + hits) / (1 + n_permutations)
    null_mean = null_values.mean(axis=1)
    return ProbeTests(observed, null_mean, observed - null_mean, pvalues, n_splits, exact)


def _with_observed(null: FloatArray, k_a: int) -> FloatArray:
    """Prepend the observed split (A's samples first) to null split masks ``(b, S, m)``."""
    m = null.shape[2]
    observed = np.broadcast_to((np.arange(m) < k_a).astype(np.float64), (null.shape[0], 1, m))
    return np.concatenate([observed, null], axis=1)


def _tv_of_splits(splits: FloatArray, onehot: FloatArray, k_a: int) -> FloatArray:
    """TV distance between group A and group B answer frequencies for every split."""
    del k_a  # group sizes in parsed answers vary per split; counted from the data
    counts_a = splits @ onehot  # (probes, S, options)
    total = onehot.sum(axis=1, keepdims=True)
    counts_b = total - counts_a
    n_a = counts_a.sum(axis=2, keepdims=True)
    n_b = counts_b.sum(axis=2, keepdims=True)
    usable = (n_a > 0) & (n_b > 0)
    freq_a = np.divide(counts_a, n_a, out=np.zeros_like(counts_a), where=usable)
    freq_b = np.divide(counts_b, n_b, out=np.zeros_like(counts_b), where=usable)
    tv: FloatArray = 0.5 * np.abs(freq_a - freq_b).sum(axis=2)
    return tv


def _excess_of_splits(splits: FloatArray, gram: FloatArray, k_a: int) -> FloatArray:
    """Cross minus mean within cosine distance for every split, from the pooled Gram matrix."""
    k_b = gram.shape[1] - k_a
    self_sim = np.diagonal(gram, axis1=1, axis2=2)[:, :, None]  # 1 for unit vectors
    within_a = ((splits @ gram) * splits).sum(axis=2)
    a_to_all = (splits @ gram.sum(axis=2)[:, :, None])[..., 0]
    cross_sum = a_to_all - within_a
    within_b = gram.sum(axis=(1, 2))[:, None] - within_a - 2 * cross_sum
    diag_a = (splits @ self_sim)[..., 0]
    diag_b = self_sim.sum(axis=1) - diag_a
    cross = 1.0 - cross_sum / (k_a * k_b)
    floor_a = 1.0 - (within_a - diag_a) / (k_a * (k_a - 1))
    floor_b = 1.0 - (within_b - diag_b) / (k_b * (k_b - 1))
    excess: FloatArray = cross - (floor_a + floor_b) / 2
    return excess


def _all_splits(m: int, k_a: int) -> FloatArray:
    """Every way to pick group A's k_a of m pooled samples, as 0/1 masks ``(S, m)``."""
    chosen = np.array(list(combinations(range(m), k_a)), dtype=np.int64)
    masks = np.zeros((len(chosen), m))
    np.put_along_axis(masks, chosen, 1.0, axis=1)
    return masks


def _random_splits(n: int, b: int, m: int, k_a: int, rng: np.random.Generator) -> FloatArray:
    """``b`` independent random splits per probe, as 0/1 masks ``(n, b, m)``."""
    keys = rng.random((n, b, m))
    kth = np.partition(keys, k_a - 1, axis=2)[..., k_a - 1 : k_a]
    return (keys <= kth).astype(np.float64)


def _int_samples(answers: npt.ArrayLike) -> IntArray:
    """Answers as an int array ``(probes, k)``; 1-D means one sample per probe."""
    a = np.asarray(answers)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or (a.size and not np.issubdtype(a.dtype, np.integer)):
        raise ValueError("answers must be an integer array of shape (probes, k)")
    return a.astype(np.int64)


def _indices(selection: npt.ArrayLike, n: int) -> IntArray:
    """A boolean mask of length n or an index array, as sorted unique indices."""
    s = np.asarray(selection)
    if s.dtype == np.bool_:
        if s.shape != (n,):
            raise ValueError(f"flagged mask must have length {n}")
        return np.flatnonzero(s).astype(np.int64)
    idx = np.unique(s.astype(np.int64).reshape(-1))
    if idx.size and (idx[0] < 0 or idx[-1] >= n):
        raise ValueError("flagged indices out of range")
    return idx
