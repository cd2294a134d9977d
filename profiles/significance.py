"""Is a difference between two models real? Permutation tests, FDR control, effect intervals.

Pure numpy, vectorised over all probes at once, no I/O.

Array conventions (as in :mod:`profiles.similarity`):

- ``codes_a``/``codes_b``: int arrays ``(probes, k_a)`` / ``(probes, k_b)`` of answer codes in
  ``[0, width)``; the caller maps "unparsed" to a code of its own, so it counts as a behaviour.
- ``emb_a``/``emb_b``: ``(probes, k_a, d)`` / ``(probes, k_b, d)`` embeddings of each sample.
- A *split matrix* is ``(probes, 1 + B)``: column 0 is the statistic of the observed split (A's
  samples against B's), columns 1..B of B random re-splits of the pooled samples.
- Domains are ``Mapping[name, probe indices]``; a probe tagged with two domains counts in both.

**What every test here assumes.** Within a probe, each model's samples are independent draws
from that model's answer distribution: separate requests (:mod:`profiles.collect` makes one
request per sample, each with its own seed), so nothing a request shares — a seed, a cache, a
batch — is shared between two samples. Under "A and B behave the same on this probe" the pooled
k_a + k_b samples are then exchangeable and every re-split is as likely as the observed one:
permutations shuffle the model labels *within a probe*, the level at which samples are
independent. Probes are independent of each other given the models (they may be correlated in
difficulty — that is a fixed property of the suite, not noise). If samples were coupled (one
request for all k, a shared seed between models) the null would not hold; the diff refuses
probes whose samples show it (:mod:`profiles.diff`).

**Per-probe statistic.** The excess of cross-model over within-model dissimilarity: for answer
codes, the unbiased U-statistic of ½·Σ_o (p_a(o) − p_b(o))² (cross-model pairs of samples that
differ, minus the mean of the two models' within-model pairs that differ); for ``free`` answers
the same with cosine distance between embeddings, an unbiased estimate of ½‖μ_a − μ_b‖².
Zero in expectation when the models answer alike, whatever their noise.

**Per-probe p-value** (hunks): p = (1 + #{null ≥ observed})/(1 + B) over B random re-splits,
valid for any B. Its least value 1/(1 + B) must lie below BH's first threshold q/m, so the
n probes none of the B re-splits of the domain test reached are given more, up to
:func:`resolution` of m/n in all (what BH needs for the n to pass together), and their p-value
counts every re-split they had (valid: the refined p-value is that of a number of re-splits
the other probes set, and differs from the B-split one only where that one was 1/(1 + B)
already, so P(p ≤ α) ≤ α for every α). With k = 5 samples per model a
single probe cannot reach much below 1/126 (the statistic is symmetric, so a split and its
mirror tie): single probes rarely survive Benjamini–Hochberg; the domain test carries the
decision.

**Domain test** (the flag). The domain statistic is the sum over its probes of each probe's
statistic *studentised by its own permutation distribution* ((x − mean)/sd over the 1 + B
splits, the observed one included; a probe whose every split gives the same value weighs
nothing), plus the absolute sum of the studentised *consensus* statistics (how much more A's
samples than B's agree with the pooled modal answer — for embeddings, the pooled mean
similarity — a signed statistic for "one model consistently strays from the answer both give
most", an alternative the squared distance is weak against); the domain statistic is the
larger of the two sums, each scaled by its sd over the splits. Every transform is a symmetric
function of the 1 + B splits, so the observed split stays exchangeable with the others and the
test stays exact; studentising gives sharp probes, where a shift stands out of little noise,
the weight they deserve. The same B splits of every probe (drawn independently per probe) form B
joint re-splits of the domain, so p = (1 + #{null ≥ observed})/(1 + B) is a valid p-value for
"A and B answer alike on every probe of the domain" (:mod:`profiles.diff` gives a domain
nominally significant on them more joint re-splits, up to :func:`resolution`, when there are
too many domains for 1/(1 + B) to pass BH alone). Domains with fewer than
``MIN_DOMAIN_PROBES`` testable probes are reported as too small and never flagged. Across the
tested domains, Benjamini–Hochberg at ``q_domain`` (default 0.02): under the global null (two
alike models) BH is Simes' test, so a null pair flags any domain with probability ≤ q_domain;
with real differences it controls the share of flagged domains that are false at q_domain.

**Effect size** (what a person reads): the root-mean-square over the domain's probes of the
answer mass that moved, in percentage points: 100·√max(0, mean excess). When every probe moved
δ of mass from one answer to another it reads 100·δ (½Σ(Δp)² = δ²); a shift confined to a
fraction f of the probes reads 100·δ·√f. Its interval is a percentile bootstrap over probes of
the mean excess (level 95 %), mapped through the same √; probes are resampled as units, which
treats them as independent (optimistic if probes share more than their difficulty). The
interval describes the size, the permutation test decides the flag, so a flagged domain's
interval can touch 0 when its evidence is borderline.

**Replication** is a fresh collection (another seed, later requests), tested the same way on the
flagged domains only (BH among them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from profiles.similarity import unit_rows

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
_Excess = Callable[[FloatArray, FloatArray, int], FloatArray]
"""``(split masks (probes, S, m), features, k_a) → (probes, S)``: the excess per split."""

DEFAULT_PERMUTATIONS = 2000
DEFAULT_RESAMPLES = 2000
MIN_DOMAIN_PROBES = 5
"""A domain with fewer testable probes is reported as too small: its bootstrap interval over
probes is meaningless (none is given) and a flag would rest on one or two probes."""
_TIE = 1e-10  # float slack when comparing a null statistic with the observed one
_CELLS = 8_000_000  # max split×sample×feature cells in memory per chunk of probes


class BHResult(NamedTuple):
    """Benjamini–Hochberg outcome: ``rejected`` mask and adjusted ``qvalues`` (NaN stays NaN)."""

    rejected: BoolArray
    qvalues: FloatArray


@dataclass(frozen=True)
class DomainTest:
    """One domain's permutation test and its effect in percentage points.

    ``statistic``: the observed studentised sum; ``pvalue``: its permutation p-value (NaN when
    the domain is too small); ``excess``: mean per-probe excess (the squared scale);
    ``shift``/``shift_low``/``shift_high``: 100·√excess and its bootstrap interval at ``level``.
    """

    n_probes: int
    statistic: float
    pvalue: float
    excess: float
    shift: float
    shift_low: float
    shift_high: float
    level: float

    @property
    def tested(self) -> bool:
        return bool(np.isfinite(self.pvalue))


@dataclass(frozen=True)
class Splits:
    """Two split matrices ``(probes, 1 + B)`` over the same re-splits (column 0 observed).

    ``excess``: the noise-corrected dissimilarity (any difference); ``consensus``: how much
    more A's samples than B's agree with the two models' pooled samples (signed).
    """

    excess: FloatArray
    consensus: FloatArray

    def __len__(self) -> int:
        return int(self.excess.shape[0])

    def rows(self, index: npt.ArrayLike) -> Splits:
        idx = np.asarray(index, dtype=np.int64)
        return Splits(self.excess[idx], self.consensus[idx])

    @classmethod
    def concat(cls, parts: Sequence[Splits], n_permutations: int) -> Splits:
        if not parts:
            empty = np.zeros((0, n_permutations + 1))
            return cls(empty, empty.copy())
        return cls(np.concatenate([p.excess for p in parts]),
                   np.concatenate([p.consensus for p in parts]))


def categorical_splits(codes_a: npt.ArrayLike, codes_b: npt.ArrayLike, width: int, *,
                       n_permutations: int = DEFAULT_PERMUTATIONS,
                       seed: int | np.random.Generator = 0) -> Splits:
    """Both statistics over B random re-splits of answer codes (as one-hot samples)."""
    a, b = _int_samples(codes_a), _int_samples(codes_b)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"codes_a has {a.shape[0]} probes, codes_b {b.shape[0]}")
    pooled = np.concatenate([a, b], axis=1)
    if np.any(pooled < 0) or np.any(pooled >= width):
        raise ValueError(f"answer codes must lie in [0, {width})")
    onehot = (pooled[..., None] == np.arange(width)).astype(np.float64)
    # the pooled modal answer (ties to the lowest code): a function of the pooled samples
    modal = (pooled == onehot.sum(axis=1).argmax(axis=1)[:, None]).astype(np.float64)
    return _splits(onehot, modal, a.shape[1], _categorical_excess, n_permutations, seed)


def embedding_splits(emb_a: npt.ArrayLike, emb_b: npt.ArrayLike, *,
                     n_permutations: int = DEFAULT_PERMUTATIONS,
                     seed: int | np.random.Generator = 0) -> Splits:
    """Both statistics over B random re-splits of sample embeddings (cosine geometry)."""
    a, b = unit_rows(emb_a), unit_rows(emb_b)
    if a.ndim != 3 or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[2]:
        raise ValueError("embeddings must be (probes, k_a, d) and (probes, k_b, d)")
    pooled = np.concatenate([a, b], axis=1)
    gram = pooled @ pooled.transpose(0, 2, 1)  # (probes, m, m) cosine similarities
    return _splits(gram, gram.mean(axis=2), a.shape[1], _embedding_excess, n_permutations,
                   seed)


def probe_pvalues(splits: FloatArray) -> FloatArray:
    """Per-probe permutation p-values ``(probes,)`` from a split matrix (larger = different)."""
    out: FloatArray = (1.0 + exceedances(splits)) / splits.shape[1]
    return out


def exceedances(splits: FloatArray) -> npt.NDArray[np.int64]:
    """Per probe, how many of the random re-splits (columns 1..B) reach the observed one."""
    observed, null = splits[:, 0], splits[:, 1:]
    hits: npt.NDArray[np.int64] = (null >= observed[:, None] - _TIE).sum(axis=1)
    return hits


def resolution(n_probes: int, q: float) -> int:
    """Re-splits a probe needs for Benjamini–Hochberg at ``q`` across ``n_probes`` to be able
    to find it alone: its least p-value 1/(1 + B) at most half the first BH threshold q/m.

    With B = 2,000 and the default suite's 462 probes, 1/2001 is above 0.05/462: a probe whose
    20 answers all changed (exact p ≈ 1e-11) could never be significant alone.
    """
    return int(np.ceil(2 * max(n_probes, 1) / q))


def studentised(splits: FloatArray) -> FloatArray:
    """Each probe's split statistics as (x − mean)/sd over all its 1 + B splits (0 where
    sd = 0): a symmetric function of the splits, so the observed one stays exchangeable with
    the others and the permutation p-value stays exact."""
    mean = splits.mean(axis=1, keepdims=True)
    sd = splits.std(axis=1, keepdims=True)
    out: FloatArray = np.divide(splits - mean, sd, out=np.zeros_like(splits), where=sd > _TIE)
    return out


def domain_statistic(z_excess: FloatArray, z_consensus: FloatArray) -> FloatArray:
    """The domain statistic for every split ``(1 + B,)`` from studentised probe rows.

    max(Σ z_excess, |Σ z_consensus|), each sum scaled by its sd over the splits: large when the
    domain's probes differ in any way, or when one model consistently strays further from
    the pooled answers than the other.
    """
    parts = []
    for total in (z_excess.sum(axis=0), np.abs(z_consensus.sum(axis=0))):
        sd = total.std()  # over all 1 + B splits, for the same reason as studentised()
        parts.append(total / sd if sd > _TIE else np.zeros_like(total))
    out: FloatArray = np.maximum(parts[0], parts[1])
    return out


def domain_tests(splits: Splits, domains: Mapping[str, npt.ArrayLike], *,
                 level: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                 min_probes: int = MIN_DOMAIN_PROBES) -> dict[str, DomainTest]:
    """The domain permutation test and effect interval for every domain (see module doc)."""
    z_excess, z_consensus = studentised(splits.excess), studentised(splits.consensus)
    observed = splits.excess[:, 0]
    members = {n: np.asarray(i, dtype=np.int64).reshape(-1) for n, i in domains.items()}
    streams = np.random.SeedSequence(seed).spawn(max(len(members), 1))
    out = {}
    for (name, idx), stream in zip(members.items(), streams, strict=False):
        est, low, high = bootstrap_mean_ci(observed[idx], level=level, n_resamples=n_resamples,
                                           seed=np.random.default_rng(stream))
        pvalue, statistic = float("nan"), float("nan")
        if idx.size < max(min_probes, 1):
            # too small: a bootstrap over one probe is [x, x], over two it covered 0 % of
            # true shifts; the point estimate stays, with no interval
            low = high = float("nan")
        else:
            stats = domain_statistic(z_excess[idx], z_consensus[idx])
            statistic = float(stats[0])
            pvalue = float((1 + np.sum(stats[1:] >= stats[0] - _TIE)) / stats.size)
        out[name] = DomainTest(int(idx.size), statistic, pvalue, est, shift_points(est),
                               shift_points(low), shift_points(high), level)
    return out


def shift_points(excess: float) -> float:
    """100·√max(0, excess): the squared-scale excess as percentage points of moved mass."""
    if not np.isfinite(excess):
        return float("nan")
    return float(100.0 * np.sqrt(max(0.0, excess)))


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


def _splits(features: FloatArray, to_pool: FloatArray, k_a: int, excess: _Excess,
            n_permutations: int, seed: int | np.random.Generator) -> Splits:
    """``features`` ``(probes, m, f)``: one-hot answers or the Gram matrix of the pooled
    samples, A's first; ``to_pool`` ``(probes, m)``: each sample's agreement with the pooled
    answer (a function of the pooled samples, so the same under every split)."""
    n, m = features.shape[0], features.shape[1]
    if not 2 <= k_a <= m - 2:
        raise ValueError("a noise floor needs at least 2 samples per model and probe")
    if n_permutations < 1:
        raise ValueError("n_permutations must be at least 1")
    rng = np.random.default_rng(seed)
    chunk = max(1, _CELLS // ((n_permutations + 1) * m * features.shape[2]))
    observed = (np.arange(m) < k_a).astype(np.float64)
    excesses, consensus = [], []
    for start in range(0, n, chunk):
        block = features[start:start + chunk]
        null = _random_splits(len(block), n_permutations, m, k_a, rng)
        splits = np.concatenate([np.broadcast_to(observed, (len(block), 1, m)), null], axis=1)
        excesses.append(excess(splits, block, k_a))
        pool = to_pool[start:start + chunk]
        toward = (splits @ pool[:, :, None])[..., 0]  # (probes, S): A's summed agreement
        rest = pool.sum(axis=1)[:, None] - toward
        consensus.append(toward / k_a - rest / (m - k_a))
    if not excesses:
        empty = np.zeros((0, n_permutations + 1))
        return Splits(empty, empty.copy())
    return Splits(np.concatenate(excesses), np.concatenate(consensus))


def _categorical_excess(splits: FloatArray, onehot: FloatArray, k_a: int) -> FloatArray:
    """½(within_a + within_b) − cross agreement of answer codes (unbiased), per split."""
    k_b = onehot.shape[1] - k_a
    counts_a = splits @ onehot  # (probes, S, width)
    counts_b = onehot.sum(axis=1, keepdims=True) - counts_a
    within_a = (counts_a * (counts_a - 1)).sum(axis=2) / (k_a * (k_a - 1))
    within_b = (counts_b * (counts_b - 1)).sum(axis=2) / (k_b * (k_b - 1))
    cross = (counts_a * counts_b).sum(axis=2) / (k_a * k_b)
    out: FloatArray = 0.5 * (within_a + within_b) - cross
    return out


def _embedding_excess(splits: FloatArray, gram: FloatArray, k_a: int) -> FloatArray:
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


def _random_splits(n: int, b: int, m: int, k_a: int, rng: np.random.Generator) -> FloatArray:
    """``b`` independent random splits per probe, as 0/1 masks ``(n, b, m)``."""
    keys = rng.random((n, b, m))
    kth = np.partition(keys, k_a - 1, axis=2)[..., k_a - 1:k_a]
    return (keys <= kth).astype(np.float64)


def _int_samples(answers: npt.ArrayLike) -> IntArray:
    """Answers as an int array ``(probes, k)``; 1-D means one sample per probe."""
    a = np.asarray(answers)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or (a.size and not np.issubdtype(a.dtype, np.integer)):
        raise ValueError("answers must be an integer array of shape (probes, k)")
    return a.astype(np.int64)
