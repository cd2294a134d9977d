"""The behavioral diff of two profiles: where two models part beyond their own noise.

The pipeline, for the probes both profiles observed:

1. **Noise floor first.** Each probe's k samples of A and B are pooled and re-split
   (:mod:`profiles.significance`): categorical answers (``choice``, ``numeric``, ``refusal``)
   by the TV distance of the answer distributions, ``free`` answers by the semantic excess
   divergence of their embeddings. The per-probe *effect* is the observed statistic minus its
   mean over re-splits, so it is zero in expectation for two models that only differ by noise.
2. **Screen, then confirm.** With k ≥ 8 samples, the first half of each model's samples screens
   and the second half — held out — confirms; with fewer, all samples screen and replication is
   reported as not tested (``null``).
3. **False discovery rate.** Benjamini–Hochberg at ``q`` over every screened probe.
4. **Domains.** Mean per-probe effect with a Bonferroni-adjusted bootstrap interval; a domain is
   flagged only if its interval excludes zero and it holds a BH-significant probe, and it is
   replicated if the held-out half's interval also excludes zero.

k is the sample count most probes have. A probe that cannot be scored — fewer than k samples
on one side, an answer the embedder rejects or embeds as a zero or non-finite vector — is left
out of every step above, listed in ``left_out`` with the reason and named in ``notes``; it
never stops the diff. Option probabilities that are not usable (non-finite, negative, no mass)
are ignored for that probe, whose sampled answers still count, and a note says so.

The result is a JSON-serialisable :class:`Diff` (schema ``diffroute.diff/1``, documented in the
README) that also carries κp, agreement and error consistency per domain (from
:func:`profiles.matrix.pool_matrix`) and the hunks: significant probes ranked by effect.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from profiles.embed import Embedder, EmbeddingError, HashEmbedder, usable_rows
from profiles.matrix import ALL, pool_matrix, usable_option_probs
from profiles.probe import Probe
from profiles.profile import ProbeRecord, Profile
from profiles.significance import (
    DEFAULT_PERMUTATIONS,
    ProbeTests,
    benjamini_hochberg,
    domain_effects,
    embedding_permutation_test,
    tv_permutation_test,
)
from profiles.suite import Suite

SCHEMA = "diffroute.diff/1"
REPLICATION_MIN_SAMPLES = 8
CATEGORICAL_STATISTIC = "excess"
"""``excess`` (cross minus within disagreement, an unbiased U-statistic) or ``tv``."""
EMPTY_ANSWER = "(no answer)"
"""Stands in for an empty response, which would embed as the zero vector: empty answers are
alike among themselves and unlike any real answer."""
MIN_SAMPLES = 2
"""A probe needs this many samples of each model: a noise floor is a distance between two."""
REJECTED_INPUT = frozenset({400, 413, 422})
"""Statuses with which an embedding endpoint refuses an input (rather than failing itself):
then each probe is embedded alone, so that only the probes it refuses are left out."""
FloatArray = npt.NDArray[np.float64]


@dataclass
class LeftOut:
    """A probe the diff could not score, and why."""

    probe_id: str
    reason: str


@dataclass
class AnswerSummary:
    """One model's answers to one probe: the typical one and the distribution."""

    typical: str
    distribution: dict[str, float]
    unparsed: int
    samples: int


@dataclass
class Hunk:
    """A probe where the two models differ beyond noise."""

    probe_id: str
    domains: list[str]
    type: str
    prompt: str
    effect: float
    pvalue: float
    qvalue: float
    significant: bool
    """Significant on its own after Benjamini–Hochberg across all probes."""
    replicated: bool | None
    a: AnswerSummary
    b: AnswerSummary
    logprob_tv: float | None = None


@dataclass
class DomainDiff:
    """Per-domain similarity and divergence, with intervals."""

    name: str
    n_probes: int
    divergence: float
    divergence_low: float
    divergence_high: float
    interval_level: float
    n_significant: int
    flagged: bool
    replicated: bool | None
    kappa_p: float | None
    kappa_p_low: float | None
    kappa_p_high: float | None
    agreement: float | None
    error_consistency: float | None
    accuracy_a: float | None
    accuracy_b: float | None
    n_kappa_probes: int = 0


@dataclass
class Diff:
    """The behavioral diff of model A and model B on one suite."""

    a: str
    b: str
    suite: str
    suite_version: str
    profile_versions: dict[str, str]
    settings: dict[str, Any]
    overall: DomainDiff
    domains: list[DomainDiff]
    flagged_domains: list[str]
    hunks: list[Hunk]
    n_probes_tested: int
    n_significant: int
    schema: str = SCHEMA
    notes: list[str] = field(default_factory=list)
    left_out: list[LeftOut] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = _clean(asdict(self))
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Diff:
        """The diff back from :meth:`to_json` (raises ``KeyError``/``TypeError`` otherwise)."""
        def hunk(h: dict[str, Any]) -> Hunk:
            return Hunk(**{**h, "a": AnswerSummary(**h["a"]), "b": AnswerSummary(**h["b"])})

        return cls(**{**data, "overall": DomainDiff(**data["overall"]),
                      "domains": [DomainDiff(**d) for d in data["domains"]],
                      "hunks": [hunk(h) for h in data["hunks"]]})

    def domain(self, name: str) -> DomainDiff:
        for d in self.domains:
            if d.name == name:
                return d
        raise KeyError(name)


def _clean(value: Any) -> Any:
    """Floats rounded, NaN → None, so the JSON is compact and valid."""
    if isinstance(value, float):
        return None if value != value else round(value, 5)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


@dataclass
class _Probes:
    probes: list[Probe]
    tests: ProbeTests
    confirm: ProbeTests | None


def _codes(probe: Probe, ra: ProbeRecord, rb: ProbeRecord, k: int
           ) -> tuple[list[int], list[int], int]:
    cats = list(probe.labels) if probe.type == "choice" else sorted(
        {v for v in (*ra.values[:k], *rb.values[:k]) if v is not None})
    index = {c: i for i, c in enumerate(cats)}

    def code(values: tuple[str | None, ...]) -> list[int]:
        return [index.get(v, -1) if v is not None else -1 for v in values[:k]]

    return code(ra.values), code(rb.values), max(2, len(cats))


def _halves(k: int) -> tuple[slice, slice | None]:
    if k >= REPLICATION_MIN_SAMPLES:
        half = k // 2
        return slice(0, half), slice(half, k)
    return slice(0, k), None


def _test_categorical(probes: list[Probe], a: Profile, b: Profile, k: int, n_perm: int,
                      seed: int) -> _Probes:
    rows = [_codes(p, a.records[p.id], b.records[p.id], k) for p in probes]
    ans_a = np.array([r[0] for r in rows], dtype=np.int64).reshape(len(rows), k)
    ans_b = np.array([r[1] for r in rows], dtype=np.int64).reshape(len(rows), k)
    n_opt = np.array([r[2] for r in rows], dtype=np.int64)
    screen, confirm = _halves(k)
    if CATEGORICAL_STATISTIC == "tv":
        tests = tv_permutation_test(ans_a[:, screen], ans_b[:, screen], n_opt,
                                    n_permutations=n_perm, seed=seed)
        conf = None if confirm is None else tv_permutation_test(
            ans_a[:, confirm], ans_b[:, confirm], n_opt, n_permutations=n_perm, seed=seed + 1)
        return _Probes(probes, tests, conf)
    onehot = _one_hot(ans_a, ans_b, int(n_opt.max()))
    emb_a, emb_b = onehot[:, :k], onehot[:, k:]
    tests = embedding_permutation_test(emb_a[:, screen], emb_b[:, screen],
                                       n_permutations=n_perm, seed=seed)
    conf = None if confirm is None else embedding_permutation_test(
        emb_a[:, confirm], emb_b[:, confirm], n_permutations=n_perm, seed=seed + 1)
    return _Probes(probes, tests, conf)


def _one_hot(ans_a: npt.NDArray[np.int64], ans_b: npt.NDArray[np.int64],
             width: int) -> FloatArray:
    """Answers as one-hot vectors ``(probes, 2k, width + 1)``; the last slot is "unparsed".

    With one-hot vectors the cross-minus-within distance of the embedding test is
    ½·Σ_o (p_a(o) − p_b(o))² estimated from all sample pairs: unbiased, zero in expectation
    when the two models answer alike, and an unparsed answer counts as a behaviour.
    """
    pooled = np.concatenate([ans_a, ans_b], axis=1)
    codes = np.where(pooled < 0, width, pooled)
    onehot: FloatArray = (codes[..., None] == np.arange(width + 1)).astype(np.float64)
    return onehot


def _answer_texts(probe: Probe, a: Profile, b: Profile, k: int) -> list[str]:
    """A's then B's first k answers to ``probe``, as the embedder gets them."""
    return [t.strip() or EMPTY_ANSWER
            for r in (a.records[probe.id], b.records[probe.id]) for t in r.texts[:k]]


def _embed_probes(probes: list[Probe], a: Profile, b: Profile, k: int, embedder: Embedder,
                  left_out: list[LeftOut]) -> tuple[list[Probe], FloatArray]:
    """Embeddings ``(probes, 2, k, d)`` of the probes that can be scored; the others are
    appended to ``left_out``. One batch; per probe only when the endpoint refuses an input."""
    texts = [_answer_texts(p, a, b, k) for p in probes]
    try:
        batches = [embedder.embed([t for ts in texts for t in ts])]
    except EmbeddingError as exc:
        if exc.status not in REJECTED_INPUT:
            raise
        batches = []
        for probe, ts in zip(probes, texts, strict=True):
            try:
                batches.append(embedder.embed(ts))
            except EmbeddingError as one:
                if one.status not in REJECTED_INPUT:
                    raise
                left_out.append(LeftOut(probe.id, f"the embedder ({embedder.name}) refused "
                                                  f"its answers: {one} {one.body[:200]}".strip()))
    kept = [p for p in probes if p.id not in {x.probe_id for x in left_out}]
    if not kept:
        return [], np.zeros((0, 2, k, 0))
    emb = np.concatenate(batches).astype(np.float64).reshape(len(kept), 2, k, -1)
    usable = usable_rows(emb).reshape(len(kept), -1)
    for probe, ok in zip(kept, usable, strict=True):
        if not ok.all():
            left_out.append(LeftOut(probe.id, f"{int((~ok).sum())} of its {ok.size} answers "
                                              f"embed to a zero or non-finite vector "
                                              f"({embedder.name})"))
    good = np.asarray(usable.all(axis=1), dtype=bool)
    return [p for p, g in zip(kept, good.tolist(), strict=True) if g], emb[good]


def _test_free(probes: list[Probe], a: Profile, b: Profile, k: int, embedder: Embedder,
               n_perm: int, seed: int, left_out: list[LeftOut]) -> _Probes | None:
    probes, emb = _embed_probes(probes, a, b, k, embedder, left_out)
    if not probes:
        return None
    screen, confirm = _halves(k)
    tests = embedding_permutation_test(emb[:, 0, screen], emb[:, 1, screen],
                                       n_permutations=n_perm, seed=seed)
    conf = None if confirm is None else embedding_permutation_test(
        emb[:, 0, confirm], emb[:, 1, confirm], n_permutations=n_perm, seed=seed + 1)
    return _Probes(probes, tests, conf)


def _summary(probe: Probe, record: ProbeRecord) -> AnswerSummary:
    parsed = [v for v in record.values if v is not None]
    counts = Counter(parsed)
    total = max(1, len(parsed))
    if probe.type == "free":
        typical = min(record.texts, key=len) if record.texts else ""
        typical = Counter(record.texts).most_common(1)[0][0] if record.texts else typical
    else:
        typical = counts.most_common(1)[0][0] if counts else "(unparsed)"
    if probe.type == "choice" and typical in probe.labels and probe.options:
        typical = f"{typical}. {probe.options[probe.labels.index(typical)]}"
    dist = {} if probe.type == "free" else {
        v: round(c / total, 4) for v, c in counts.most_common()}
    return AnswerSummary(typical.strip()[:400], dist, len(record.values) - len(parsed),
                         len(record.values))


def _logprob_tv(ra: ProbeRecord, rb: ProbeRecord) -> float | None:
    if not ra.option_probs or not rb.option_probs or len(ra.option_probs) != len(
            rb.option_probs):
        return None
    if usable_option_probs(ra.option_probs) is None or \
            usable_option_probs(rb.option_probs) is None:
        return None
    pa, pb = np.array(ra.option_probs), np.array(rb.option_probs)
    return float(0.5 * np.abs(pa / pa.sum() - pb / pb.sum()).sum())


def _prompt(probe: Probe) -> str:
    return probe.messages[-1].content.strip()


def _finite(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def compute_diff(a: Profile, b: Profile, suite: Suite, *, embedder: Embedder | None = None,
                 q: float = 0.05, n_permutations: int = DEFAULT_PERMUTATIONS,
                 n_resamples: int = 2000, seed: int = 0, domain: str | None = None) -> Diff:
    """Diff two profiles of the same suite (optionally one domain only)."""
    if domain is not None and domain not in suite.domains():
        raise ValueError(f"domain '{domain}' is not in suite '{suite.name}' "
                         f"(domains: {', '.join(suite.domains())})")
    shared = [p for p in suite.probes if p.id in a.records and p.id in b.records
              and (domain is None or domain in p.domains)]
    k = _common_samples(shared, a, b)
    if k < MIN_SAMPLES:
        raise ValueError(f"both profiles need at least {MIN_SAMPLES} samples per probe on "
                         f"shared probes")
    left_out = [LeftOut(p.id, _too_few(p, a, b, k)) for p in shared if _samples(p, a, b) < k]
    shared = [p for p in shared if _samples(p, a, b) >= k]
    embedder = embedder or HashEmbedder()
    groups = []
    cat = [p for p in shared if p.type != "free"]
    free = [p for p in shared if p.type == "free"]
    if cat:
        groups.append(_test_categorical(cat, a, b, k, n_permutations, seed))
    if free:
        tested = _test_free(free, a, b, k, embedder, n_permutations, seed + 7, left_out)
        groups.extend([tested] if tested is not None else [])
    if not groups:
        raise ValueError("no shared probe could be scored: "
                         + "; ".join(f"{x.probe_id}: {x.reason}" for x in left_out[:5]))
    probes = [p for g in groups for p in g.probes]
    effect = np.concatenate([g.tests.effect for g in groups])
    pvalues = np.concatenate([g.tests.pvalues for g in groups])
    bh = benjamini_hochberg(pvalues, q)
    names = sorted({d for p in probes for d in p.domains})
    members = {d: [i for i, p in enumerate(probes) if d in p.domains] for d in names}
    # A domain is flagged on its own interval: per-probe tests at small k cannot reach BH
    # significance alone (p >= 1/126 at k = 5), while the domain mean of noise-centred effects
    # aggregates over its probes. The interval is Bonferroni-adjusted across domains.
    effects = domain_effects(effect, members, significant=bh.rejected,
                             n_resamples=n_resamples, seed=seed,
                             require_significant_probe=False)
    overall_effect = domain_effects(effect, {ALL: list(range(len(probes)))},
                                    significant=bh.rejected, n_resamples=n_resamples, seed=seed,
                                    require_significant_probe=False)
    flagged_names = [n for n in names if effects[n].flagged]
    shown = _hunk_probes(probes, pvalues, effect, bh.rejected, members, flagged_names, q)
    replicated_probe, replicated_domain = _replication(
        groups, shown, {n: members[n] for n in flagged_names}, q, n_resamples, seed)
    matrix = pool_matrix([a, b], suite.filter(domains=[domain]) if domain else suite,
                         bootstrap=min(n_resamples, 500), seed=seed)

    def domain_diff(name: str, eff: Any, replicated: bool | None) -> DomainDiff:
        dm = matrix.domains.get(name)

        def pair(x: FloatArray | None) -> float | None:
            return None if x is None else _finite(float(x[0, 1]))

        return DomainDiff(
            name, eff.n_probes, eff.estimate, eff.low, eff.high, eff.level, eff.n_significant,
            eff.flagged, replicated if eff.flagged else None,
            pair(dm.kappa if dm else None), pair(dm.kappa_low if dm else None),
            pair(dm.kappa_high if dm else None), pair(dm.agreement if dm else None),
            pair(dm.error_consistency if dm else None),
            _finite(float(dm.accuracy[0])) if dm else None,
            _finite(float(dm.accuracy[1])) if dm else None,
            dm.n_kappa if dm else 0)

    domains = [domain_diff(n, effects[n], replicated_domain.get(n)) for n in names]
    overall = domain_diff(ALL, overall_effect[ALL], None)
    flagged = sorted((d for d in domains if d.flagged), key=lambda d: -d.divergence)
    hunks = [
        Hunk(p.id, list(p.domains), p.type, _prompt(p), float(effect[i]), float(pvalues[i]),
             float(bh.qvalues[i]), bool(bh.rejected[i]), replicated_probe.get(i),
             _summary(p, a.records[p.id]), _summary(p, b.records[p.id]),
             _logprob_tv(a.records[p.id], b.records[p.id]))
        for i, p in enumerate(probes) if i in shown
    ]
    hunks.sort(key=lambda h: (-h.effect, h.pvalue, h.probe_id))
    screen, confirm = _halves(k)
    notes = [] if confirm else [
        f"replication not tested: needs >= {REPLICATION_MIN_SAMPLES} samples per probe, "
        f"profiles have {k}"]
    notes += [f"probe {x.probe_id} left out: {x.reason}" for x in left_out]
    notes += _option_prob_notes(cat, a, b)
    return Diff(
        a.model, b.model, suite.name, suite.version,
        {a.model: a.version, b.model: b.version},
        {"q": q, "permutations": n_permutations, "resamples": n_resamples, "seed": seed,
         "samples": k, "screen_samples": screen.stop - (screen.start or 0),
         "confirm_samples": 0 if confirm is None else k - (confirm.start or 0),
         "domain": domain},
        overall, domains, [d.name for d in flagged], hunks, len(probes),
        int(bh.rejected.sum()), notes=notes, left_out=left_out)


def _samples(probe: Probe, a: Profile, b: Profile) -> int:
    """Samples of ``probe`` both profiles can offer."""
    return min(len(a.records[probe.id].values), len(b.records[probe.id].values))


def _common_samples(probes: Sequence[Probe], a: Profile, b: Profile) -> int:
    """k: the sample count most probes offer (of those with at least ``MIN_SAMPLES``; the
    larger on a tie), so that one probe cut short — an interrupted build — is left out
    instead of lowering k for every probe."""
    counts = Counter(n for p in probes if (n := _samples(p, a, b)) >= MIN_SAMPLES)
    return max(counts, key=lambda n: (counts[n], n)) if counts else 0


def _too_few(probe: Probe, a: Profile, b: Profile, k: int) -> str:
    counts = ", ".join(f"{len(p.records[probe.id].values)} of {p.model}" for p in (a, b))
    return (f"too few samples ({counts}; the diff uses {k} of each: complete the profiles "
            f"with `diffroute profile build`)")


def _option_prob_notes(probes: Sequence[Probe], a: Profile, b: Profile) -> list[str]:
    """Name the choice probes whose option probabilities were ignored."""
    bad = [f"{p.id} ({prof.model})" for p in probes if p.type == "choice" for prof in (a, b)
           if (probs := prof.records[p.id].option_probs) and usable_option_probs(probs) is None]
    if not bad:
        return []
    return [f"option probabilities not usable (non-finite, negative or no mass), sampled "
            f"answers used instead: {', '.join(bad)}"]


def _hunk_probes(probes: Sequence[Probe], pvalues: FloatArray, effect: FloatArray,
                 significant: npt.NDArray[np.bool_], members: dict[str, list[int]],
                 flagged: Sequence[str], q: float, per_domain: int = 12) -> set[int]:
    """Probes shown as hunks: every BH-significant probe, and in each flagged domain the
    probes that are nominally significant (p <= q) with a positive effect, largest first.

    At small k a single probe rarely survives BH on its own; a flagged domain still deserves
    the probes that carry its difference, and each hunk says whether it is significant alone.
    """
    shown = {int(i) for i in np.flatnonzero(significant)}
    for name in flagged:
        nominal = [i for i in members[name] if pvalues[i] <= q and effect[i] > 0]
        nominal.sort(key=lambda i: (-effect[i], pvalues[i], probes[i].id))
        shown.update(nominal[:per_domain])
    return shown


def _replication(groups: Sequence[_Probes], shown: set[int], flagged: dict[str, list[int]],
                 q: float, n_resamples: int, seed: int,
                 ) -> tuple[dict[int, bool], dict[str, bool]]:
    """Held-out confirmation of the shown probes and the flagged domains (each its own family)."""
    if any(g.confirm is None for g in groups):
        return {}, {}
    conf_p = np.concatenate([g.confirm.pvalues for g in groups if g.confirm is not None])
    conf_effect = np.concatenate([g.confirm.effect for g in groups if g.confirm is not None])
    idx = np.array(sorted(shown), dtype=np.int64)
    probe_rep: dict[int, bool] = {}
    if idx.size:
        confirmed = benjamini_hochberg(conf_p[idx], q).rejected
        probe_rep = {int(i): bool(c) for i, c in zip(idx, confirmed, strict=True)}
    held = domain_effects(conf_effect, flagged, n_resamples=n_resamples, seed=seed + 3,
                          require_significant_probe=False) if flagged else {}
    return probe_rep, {name: eff.flagged for name, eff in held.items()}
