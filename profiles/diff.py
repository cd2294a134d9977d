"""The behavioral diff of two profiles: where two models part beyond their own noise.

The pipeline, for the probes both profiles observed (statistics in :mod:`profiles.significance`,
whose docstring says what each test assumes):

1. **Testable probes.** A probe is tested only if both models have ≥ 2 independent samples of
   it. Probes whose samples are degenerate are left out with a note, never tested: samples drawn
   at temperature 0 (greedy decoding: no sampling noise to test against), and samples
   identical, in order, between the two models with at least two off the modal answer (a
   shared cache or coupled seeds; independent draws do not match each other's deviations).
   Probes with fewer than k samples are left out (see below).
2. **Noise floor first.** Per probe, the samples of A and B are pooled and re-split B times
   (labels shuffled within the probe): answer codes (``choice``, ``numeric``, ``refusal``;
   "unparsed" is a code of its own) by the excess of cross- over within-model disagreement,
   ``free`` answers by the same excess on embeddings.
3. **Domains.** A permutation test per domain on all its samples (the studentised per-probe
   statistics summed over the domain, the same B joint re-splits); Benjamini–Hochberg at
   ``q_domain`` across the tested domains decides the flag. Domains with fewer than
   ``min_domain_probes`` testable probes are reported as too small, never flagged. The effect
   is the answer mass that moved, in percentage points, with a bootstrap interval.
4. **Hunks.** Per-probe p-values from the same splits, Benjamini–Hochberg at ``q`` across all
   probes; hunks are the BH-significant probes plus, in flagged domains, the nominally
   significant ones, each saying which it is.
5. **Confirm on a fresh collection.** When both profiles carry a confirm collection (another
   seed, later requests), the flagged domains are re-tested on it (BH at ``q_domain`` among
   them) and so are the hunks (BH at ``q`` among them); otherwise replication is not tested
   (``null``) and a note says why.

k is the sample count most probes have (per collection); a probe with more samples is
tested on its first k. A probe that cannot be scored — fewer than k samples on one side (an
interrupted build), an answer the embedder rejects or embeds as a zero or non-finite vector —
is left out of every step above, listed in ``left_out`` with the reason and named in
``notes``; it never stops the diff. Probes left out as degenerate (step 1) are listed in
``left_out`` too. Option probabilities that are not usable (non-finite, negative, no mass) are
ignored for that probe, whose sampled answers still count, and a note says so.

The result is a JSON-serialisable :class:`Diff` (schema ``diffroute.diff/2``, documented in the
README) that also carries κp, agreement and error consistency per domain (from
:func:`profiles.matrix.pool_matrix`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from profiles.embed import Embedder, EmbeddingError, HashEmbedder, usable_rows
from profiles.matrix import ALL, pool_matrix, usable_option_probs
from profiles.probe import Probe
from profiles.profile import ProbeRecord, Profile
from profiles.significance import (
    DEFAULT_PERMUTATIONS,
    MIN_DOMAIN_PROBES,
    DomainTest,
    Splits,
    benjamini_hochberg,
    categorical_splits,
    domain_tests,
    embedding_splits,
    exceedances,
    probe_pvalues,
    resolution,
    shift_points,
)
from profiles.suite import Suite

SCHEMA = "diffroute.diff/2"
DEFAULT_DOMAIN_Q = 0.02
"""BH level across domains: a pair of alike models flags any domain with probability ≤ 2 %
(below the 2.5 % ceiling of issue #13: at q = 0.025 the rate *is* 2.5 %, measured 3.0 %
[1.1, 6.4] over 200 null pairs)."""
EMPTY_ANSWER = "(no answer)"
"""Stands in for an empty response, which would embed as the zero vector: empty answers are
alike among themselves and unlike any real answer."""
MIN_SAMPLES = 2
"""A probe needs this many samples of each model: a noise floor is a distance between two."""
REJECTED_INPUT = frozenset({400, 413, 422})
"""Statuses with which an embedding endpoint refuses an input (rather than failing itself):
then each probe is embedded alone, so that only the probes it refuses are left out."""
FloatArray = npt.NDArray[np.float64]
Status = Literal["flagged", "not flagged", "too small"]


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
    shift: float
    """Answer mass that moved on this probe, in percentage points (100·√max(0, excess))."""
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
    """Per-domain test, effect in percentage points with an interval, and similarity."""

    name: str
    n_probes: int
    """Probes of the domain that were tested."""
    status: Status
    shift: float
    shift_low: float
    shift_high: float
    interval_level: float
    pvalue: float | None
    qvalue: float | None
    flagged: bool
    replicated: bool | None
    confirm_pvalue: float | None
    n_significant: int
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


# --- which probes can be tested --------------------------------------------------------------


@dataclass
class _Selection:
    probes: list[Probe]
    k: int = 0
    """Samples per probe tested: the count most testable probes have."""
    left_out: dict[str, list[str]] = field(default_factory=dict)
    """reason → probe ids (degenerate samples, noted per reason)."""
    cut_short: list[LeftOut] = field(default_factory=list)
    """Probes with fewer than k samples on one side (noted one by one)."""

    def all_left_out(self) -> list[LeftOut]:
        return [LeftOut(i, r) for r, ids in self.left_out.items() for i in ids] + self.cut_short


def coupled(ra: ProbeRecord, rb: ProbeRecord) -> bool:
    """Both models' samples identical, in order, with ≥ 2 samples off the modal answer.

    Two independent models repeating one answer is common and tells nothing; matching each
    other's deviations sample by sample is not something independent draws do (a shared cache
    or coupled seeds).
    """
    if ra.texts != rb.texts or len(ra.texts) < 2:
        return False
    return len(ra.texts) - Counter(ra.texts).most_common(1)[0][1] >= 2


def _n(p: Probe, a: Mapping[str, ProbeRecord], b: Mapping[str, ProbeRecord]) -> int:
    return min(len(a[p.id].values), len(b[p.id].values))


def _common_samples(probes: Sequence[Probe], a: Mapping[str, ProbeRecord],
                    b: Mapping[str, ProbeRecord]) -> int:
    """k: the sample count most probes offer (of those with at least ``MIN_SAMPLES``; the
    larger on a tie), so that one probe cut short — an interrupted build — is left out
    instead of lowering k for every probe."""
    counts = Counter(n for p in probes if (n := _n(p, a, b)) >= MIN_SAMPLES)
    return max(counts, key=lambda n: (counts[n], n)) if counts else 0


def _select(probes: Sequence[Probe], a: Mapping[str, ProbeRecord],
            b: Mapping[str, ProbeRecord], greedy: bool,
            models: tuple[str, str] = ("A", "B")) -> _Selection:
    out = _Selection([])
    rest = []
    for p in probes:
        ra, rb = a[p.id], b[p.id]
        if greedy:
            reason = ("sampled at temperature 0 (greedy decoding: no sampling noise to test "
                      "against)")
        elif coupled(ra, rb):
            reason = ("identical samples from both models (a shared cache or seed: "
                      "not independent draws)")
        else:
            rest.append(p)
            continue
        out.left_out.setdefault(reason, []).append(p.id)
    out.k = _common_samples(rest, a, b)
    for p in rest:
        if out.k >= MIN_SAMPLES and _n(p, a, b) >= out.k:
            out.probes.append(p)
        else:
            counts = f"{len(a[p.id].values)} of {models[0]}, {len(b[p.id].values)} of {models[1]}"
            needs = (f"the diff uses {out.k} of each" if out.k >= MIN_SAMPLES
                     else f"needs {MIN_SAMPLES} of each")
            out.cut_short.append(LeftOut(p.id, f"too few samples ({counts}; {needs}: complete "
                                               f"the profiles with `diffroute profile build`)"))
    return out


def _left_out_notes(selection: _Selection, collection: str) -> list[str]:
    notes = []
    for reason, ids in selection.left_out.items():
        shown = ", ".join(ids[:5]) + (", …" if len(ids) > 5 else "")
        notes.append(f"{len(ids)} probe(s) of the {collection} collection not tested: "
                     f"{reason} ({shown})")
    prefix = "" if collection == "screen" else f"{collection} collection: "
    notes += [f"{prefix}probe {x.probe_id} left out: {x.reason}" for x in selection.cut_short]
    return notes


# --- the split matrix of a collection --------------------------------------------------------


def _codes(probe: Probe, ra: ProbeRecord, rb: ProbeRecord,
           k: int) -> tuple[list[int], list[int], int]:
    """Answer codes of both models' first k samples; unparsed is the last code."""
    cats = list(probe.labels) if probe.type == "choice" else sorted(
        {v for v in (*ra.values[:k], *rb.values[:k]) if v is not None})
    index = {c: i for i, c in enumerate(cats)}
    unparsed = len(cats)

    def code(values: tuple[str | None, ...]) -> list[int]:
        return [index.get(v, unparsed) if v is not None else unparsed for v in values[:k]]

    return code(ra.values), code(rb.values), unparsed + 1


def _answer_texts(probe: Probe, a: Mapping[str, ProbeRecord], b: Mapping[str, ProbeRecord],
                  k: int) -> list[str]:
    """A's then B's first k answers to ``probe``, as the embedder gets them."""
    return [t.strip() or EMPTY_ANSWER for r in (a[probe.id], b[probe.id]) for t in r.texts[:k]]


def _embed_probes(probes: list[Probe], a: Mapping[str, ProbeRecord],
                  b: Mapping[str, ProbeRecord], k: int, embedder: Embedder,
                  left_out: list[LeftOut]) -> tuple[list[Probe], FloatArray]:
    """Embeddings ``(probes, 2k, d)`` of the probes that can be scored; the others are
    appended to ``left_out``. One batch; per probe only when the endpoint refuses an input."""
    texts = [_answer_texts(p, a, b, k) for p in probes]
    refused: set[str] = set()
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
                refused.add(probe.id)
                left_out.append(LeftOut(probe.id, f"the embedder ({embedder.name}) refused "
                                                  f"its answers: {one} {one.body[:200]}".strip()))
    kept = [p for p in probes if p.id not in refused]
    if not kept:
        return [], np.zeros((0, 2 * k, 0))
    emb = np.concatenate(batches).astype(np.float64).reshape(len(kept), 2 * k, -1)
    usable = usable_rows(emb).reshape(len(kept), -1)
    for probe, ok in zip(kept, usable, strict=True):
        if not ok.all():
            left_out.append(LeftOut(probe.id, f"{int((~ok).sum())} of its {ok.size} answers "
                                              f"embed to a zero or non-finite vector "
                                              f"({embedder.name})"))
    good = np.asarray(usable.all(axis=1), dtype=bool)
    return [p for p, g in zip(kept, good.tolist(), strict=True) if g], emb[good]


def _split_matrix(probes: Sequence[Probe], a: Mapping[str, ProbeRecord],
                  b: Mapping[str, ProbeRecord], k: int, embedder: Embedder, n_perm: int,
                  seed: int, left_out: list[LeftOut]) -> tuple[list[Probe], Splits]:
    """Probes (their first k samples) grouped by kind, each group tested; rows follow the
    returned order. Free probes the embedder cannot score are appended to ``left_out``."""
    groups: dict[bool, list[Probe]] = {}
    for p in probes:
        groups.setdefault(p.type == "free", []).append(p)
    order: list[Probe] = []
    parts: list[Splits] = []
    streams = np.random.SeedSequence(seed).spawn(max(len(groups), 1))
    for (free, members), stream in zip(sorted(groups.items(), key=lambda g: g[0]), streams,
                                       strict=False):
        rng = np.random.default_rng(stream)
        if free:
            members, emb = _embed_probes(members, a, b, k, embedder, left_out)
            if not members:
                continue
            parts.append(embedding_splits(emb[:, :k], emb[:, k:], n_permutations=n_perm,
                                          seed=rng))
        else:
            rows = [_codes(p, a[p.id], b[p.id], k) for p in members]
            width = max(r[2] for r in rows)
            codes_a = np.array([r[0] for r in rows], dtype=np.int64)
            codes_b = np.array([r[1] for r in rows], dtype=np.int64)
            parts.append(categorical_splits(codes_a, codes_b, width, n_permutations=n_perm,
                                            seed=rng))
        order += members
    return order, Splits.concat(parts, n_perm)


def _resolved_pvalues(probes: Sequence[Probe], splits: Splits, a: Mapping[str, ProbeRecord],
                      b: Mapping[str, ProbeRecord], k: int, embedder: Embedder, n_perm: int,
                      seed: int, q: float) -> FloatArray:
    """Per-probe p-values fine enough for BH at ``q`` across all probes: the probes none of
    the B re-splits reached (at 2,000 a probe's least p-value, 1/2001, was above 0.05/462 on
    the default suite: no probe could be significant alone, however different) get fresh
    re-splits, as many as BH needs for all ``n`` of them to pass together — each n·q/m —,
    :func:`profiles.significance.resolution` of m/n in all, n less the m/(1 + B) that alike
    probes reach by chance (and a margin): one alone gets the whole 2m/q, and the work stays
    about 2m/q however many there are (giving every nominally significant probe 2m/q made a diff of
    2,000 probes at k = 20 take 128 s instead of 5). Valid: a probe is refined on a fixed
    condition of its own re-splits (none reached it), and its count of re-splits is set by
    the other probes (n is the others' count plus itself)."""
    pvalues = probe_pvalues(splits.excess)
    small = [int(i) for i in np.flatnonzero(exceedances(splits.excess) == 0)]
    if not small:
        return pvalues
    expected = len(probes) / (1 + n_perm)  # alike probes that no re-split reaches, on average
    by_chance = int(np.ceil(expected + 3 * np.sqrt(expected))) + 1  # (and a generous margin)
    extra = resolution(-(-len(probes) // max(1, len(small) - by_chance)), q) - n_perm
    if extra <= 0:
        return pvalues
    order, more = _split_matrix([probes[i] for i in small], a, b, k, embedder, extra,
                                seed + 7, [])
    again = {p.id: j for j, p in enumerate(order)}
    kept = [i for i in small if probes[i].id in again]
    if kept:  # (a remote embedder may refuse now what it took before: that p stays)
        rows = np.array(kept, dtype=np.int64)
        hits: npt.NDArray[np.int64] = exceedances(splits.excess[rows]) + exceedances(more.excess)[
            [again[probes[i].id] for i in kept]]
        pvalues[rows] = (1.0 + hits) / (1.0 + n_perm + extra)
    return pvalues


def _resolved_domains(tests: dict[str, DomainTest], probes: Sequence[Probe], splits: Splits,
                      members: Mapping[str, list[int]], a: Mapping[str, ProbeRecord],
                      b: Mapping[str, ProbeRecord], k: int, embedder: Embedder, n_perm: int,
                      seed: int, q_domain: float) -> dict[str, DomainTest]:
    """Domain p-values fine enough for BH at ``q_domain`` across the tested domains: with more
    than 40 domains (an MMLU-like suite of 57) a domain's least p-value at 2,000 joint
    re-splits, 1/2001, was above BH's first threshold and no domain could be flagged alone,
    however different. The nominally significant ones get fresh joint re-splits of their
    probes up to :func:`profiles.significance.resolution`, the test is re-run on all of them
    (its studentising is a symmetric function of every split), and that is its p-value (valid
    as the per-probe refinement is)."""
    tested = [n for n, t in tests.items() if t.tested]
    extra = resolution(len(tested), q_domain) - n_perm
    if extra <= 0:
        return tests
    out = dict(tests)
    for n, name in enumerate(tested):
        if tests[name].pvalue > q_domain:
            continue
        idx = members[name]
        order, more = _split_matrix([probes[i] for i in idx], a, b, k, embedder, extra,
                                    seed + 11 + n, [])
        again = {p.id: j for j, p in enumerate(order)}
        if any(probes[i].id not in again for i in idx):
            continue  # (a remote embedder refused now what it took before: that p stays)
        rows = [again[probes[i].id] for i in idx]
        joint = Splits(np.hstack([splits.excess[idx], more.excess[rows, 1:]]),
                       np.hstack([splits.consensus[idx], more.consensus[rows, 1:]]))
        finer = domain_tests(joint, {name: range(len(idx))}, n_resamples=1,
                             min_probes=1)[name]
        out[name] = replace(tests[name], statistic=finer.statistic, pvalue=finer.pvalue)
    return out


def _members(probes: Sequence[Probe], names: Sequence[str]) -> dict[str, list[int]]:
    return {d: [i for i, p in enumerate(probes) if d in p.domains] for d in names}


# --- summaries -------------------------------------------------------------------------------


def _summary(probe: Probe, record: ProbeRecord) -> AnswerSummary:
    parsed = [v for v in record.values if v is not None]
    counts = Counter(parsed)
    total = max(1, len(parsed))
    if probe.type == "free":
        typical = Counter(record.texts).most_common(1)[0][0] if record.texts else ""
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


# --- the diff --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiffSettings:
    """How a diff is computed (every field is reported in ``Diff.settings``)."""

    q: float = 0.05
    q_domain: float = DEFAULT_DOMAIN_Q
    n_permutations: int = DEFAULT_PERMUTATIONS
    n_resamples: int = 2000
    seed: int = 0
    min_domain_probes: int = MIN_DOMAIN_PROBES


def compute_diff(a: Profile, b: Profile, suite: Suite, *, embedder: Embedder | None = None,
                 q: float = 0.05, q_domain: float = DEFAULT_DOMAIN_Q,
                 n_permutations: int = DEFAULT_PERMUTATIONS, n_resamples: int = 2000,
                 seed: int = 0, domain: str | None = None,
                 min_domain_probes: int = MIN_DOMAIN_PROBES) -> Diff:
    """Diff two profiles of the same suite (optionally one domain only)."""
    if domain is not None and domain not in suite.domains():
        raise ValueError(f"domain '{domain}' is not in suite '{suite.name}' "
                         f"(domains: {', '.join(suite.domains())})")
    cfg = DiffSettings(q, q_domain, n_permutations, n_resamples, seed, min_domain_probes)
    embedder = embedder or HashEmbedder()
    shared = [p for p in suite.probes if p.id in a.records and p.id in b.records
              and (domain is None or domain in p.domains)]
    greedy = a.decoding.temperature == 0 or b.decoding.temperature == 0
    if not shared:
        raise ValueError("the two profiles share no probe")
    selection = _select(shared, a.records, b.records, greedy, (a.model, b.model))
    if not selection.left_out and selection.k < MIN_SAMPLES:
        raise ValueError(f"both profiles need at least {MIN_SAMPLES} samples per probe on "
                         f"shared probes")
    unscored: list[LeftOut] = []
    probes, splits = _split_matrix(selection.probes, a.records, b.records, selection.k,
                                   embedder, n_permutations, seed, unscored)
    if not probes and not selection.left_out:
        raise ValueError("no shared probe could be scored: "
                         + "; ".join(f"{x.probe_id}: {x.reason}"
                                     for x in (selection.cut_short + unscored)[:5]))
    left_out = selection.all_left_out() + unscored
    names = sorted({d for p in shared for d in p.domains})
    members = _members(probes, names)
    tests = domain_tests(splits, members, n_resamples=n_resamples, seed=seed,
                         min_probes=min_domain_probes)
    tests = _resolved_domains(tests, probes, splits, members, a.records, b.records,
                              selection.k, embedder, n_permutations, seed, q_domain)
    overall_test = domain_tests(splits, {ALL: list(range(len(probes)))},
                                n_resamples=n_resamples, seed=seed,
                                min_probes=min_domain_probes)[ALL]
    domain_q = benjamini_hochberg([tests[n].pvalue for n in names], q_domain)
    flagged_names = [n for n, r in zip(names, domain_q.rejected, strict=True) if r]
    pvalues = _resolved_pvalues(probes, splits, a.records, b.records, selection.k, embedder,
                                n_permutations, seed, q)
    bh = benjamini_hochberg(pvalues, q)
    observed = splits.excess[:, 0]
    shown = _hunk_probes(probes, pvalues, observed, bh.rejected, members, flagged_names, q)
    confirm = _Confirmation.run(a, b, probes, shown, {n: members[n] for n in flagged_names},
                                embedder, cfg, greedy)
    matrix = pool_matrix([a, b], suite.filter(domains=[domain]) if domain else suite,
                         bootstrap=min(n_resamples, 500), seed=seed)

    def domain_diff(name: str, test: DomainTest, qvalue: float, flagged: bool) -> DomainDiff:
        dm = matrix.domains.get(name)

        def pair(x: FloatArray | None) -> float | None:
            return None if x is None else _finite(float(x[0, 1]))

        idx = members.get(name, list(range(len(probes))))
        status: Status = "too small" if not test.tested else (
            "flagged" if flagged else "not flagged")
        return DomainDiff(
            name, test.n_probes, status, test.shift, test.shift_low, test.shift_high,
            test.level, _finite(test.pvalue), _finite(qvalue), flagged,
            confirm.domains.get(name) if flagged else None,
            confirm.domain_pvalues.get(name) if flagged else None,
            int(bh.rejected[idx].sum()),
            pair(dm.kappa if dm else None), pair(dm.kappa_low if dm else None),
            pair(dm.kappa_high if dm else None), pair(dm.agreement if dm else None),
            pair(dm.error_consistency if dm else None),
            _finite(float(dm.accuracy[0])) if dm else None,
            _finite(float(dm.accuracy[1])) if dm else None,
            dm.n_kappa if dm else 0)

    domains = [domain_diff(n, tests[n], float(qv), bool(r))
               for n, qv, r in zip(names, domain_q.qvalues, domain_q.rejected, strict=True)]
    # the overall row is its own test (a family of one), not part of the domains' family
    overall = domain_diff(ALL, overall_test, overall_test.pvalue,
                          bool(overall_test.pvalue <= q_domain))
    flagged = sorted((d for d in domains if d.flagged), key=lambda d: -d.shift)
    hunks = [
        Hunk(p.id, list(p.domains), p.type, _prompt(p), shift_points(float(observed[i])),
             float(pvalues[i]), float(bh.qvalues[i]), bool(bh.rejected[i]),
             confirm.probes.get(i), _summary(p, a.records[p.id]), _summary(p, b.records[p.id]),
             _logprob_tv(a.records[p.id], b.records[p.id]))
        for i, p in enumerate(probes) if i in shown
    ]
    hunks.sort(key=lambda h: (-h.shift, h.pvalue, h.probe_id))
    notes = _left_out_notes(selection, "screen")
    notes += [f"probe {x.probe_id} left out: {x.reason}" for x in unscored]
    notes += confirm.notes
    notes += [f"domain {d.name}: too small to test ({d.n_probes} testable probes, needs "
              f"{min_domain_probes})" for d in domains if d.status == "too small"]
    notes += _option_prob_notes([p for p in probes if p.type == "choice"], a, b)
    return Diff(
        a.model, b.model, suite.name, suite.version,
        {a.model: a.version, b.model: b.version},
        {"q": q, "q_domain": q_domain, "domain_correction": "benjamini-hochberg",
         "permutations": n_permutations, "resamples": n_resamples, "seed": seed,
         "samples": selection.k,
         "confirm_samples": confirm.samples, "min_domain_probes": min_domain_probes,
         "domain": domain},
        overall, domains, [d.name for d in flagged], hunks, len(probes),
        int(bh.rejected.sum()), notes=notes, left_out=left_out)


def _option_prob_notes(probes: Sequence[Probe], a: Profile, b: Profile) -> list[str]:
    """Name the choice probes whose option probabilities were ignored."""
    bad = [f"{p.id} ({prof.model})" for p in probes if p.type == "choice" for prof in (a, b)
           if (probs := prof.records[p.id].option_probs) and usable_option_probs(probs) is None]
    if not bad:
        return []
    return [f"option probabilities not usable (non-finite, negative or no mass), sampled "
            f"answers used instead: {', '.join(bad)}"]


def _typical_k(probes: Sequence[Probe], a: Mapping[str, ProbeRecord],
               b: Mapping[str, ProbeRecord]) -> int:
    counts = Counter(min(len(a[p.id].values), len(b[p.id].values)) for p in probes)
    return counts.most_common(1)[0][0] if counts else 0


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


@dataclass
class _Confirmation:
    """The flagged domains and shown probes re-tested on the confirm collection."""

    domains: dict[str, bool] = field(default_factory=dict)
    domain_pvalues: dict[str, float] = field(default_factory=dict)
    probes: dict[int, bool] = field(default_factory=dict)
    samples: int = 0
    notes: list[str] = field(default_factory=list)

    @classmethod
    def run(cls, a: Profile, b: Profile, probes: Sequence[Probe], shown: set[int],
            flagged: dict[str, list[int]], embedder: Embedder, cfg: DiffSettings,
            greedy: bool) -> _Confirmation:
        missing = [p.model for p in (a, b) if not p.confirm_records]
        if missing:
            return cls(notes=[f"replication not tested: no confirm collection for "
                              f"{', '.join(missing)} (profile it with a confirm round)"]
                       if flagged or shown else [])
        wanted = sorted(shown | {i for idx in flagged.values() for i in idx})
        candidates = [probes[i] for i in wanted
                      if probes[i].id in a.confirm_records and probes[i].id in b.confirm_records]
        selection = _select(candidates, a.confirm_records, b.confirm_records, greedy,
                            (a.model, b.model))
        unscored: list[LeftOut] = []
        order, splits = _split_matrix(selection.probes, a.confirm_records, b.confirm_records,
                                      selection.k, embedder, cfg.n_permutations, cfg.seed + 1,
                                      unscored)
        both = [p for p in probes if p.id in a.confirm_records and p.id in b.confirm_records]
        out = cls(samples=_typical_k(both, a.confirm_records, b.confirm_records),
                  notes=_left_out_notes(selection, "confirm")
                  + [f"confirm collection: probe {x.probe_id} left out: {x.reason}"
                     for x in unscored])
        row = {p.id: j for j, p in enumerate(order)}
        position = {p.id: i for i, p in enumerate(probes)}
        held = {name: [row[probes[i].id] for i in idx if probes[i].id in row]
                for name, idx in flagged.items()}
        tests = domain_tests(splits, held, n_resamples=1, seed=cfg.seed + 3,
                             min_probes=cfg.min_domain_probes)
        # a domain with too few of its flagged probes in both confirm collections (a build
        # stopped during the confirm pass) is not tested: not "not replicated"
        names = [n for n in held if np.isfinite(tests[n].pvalue)]
        out.notes += [f"replication of {n} not tested: {len(held[n])} of its {len(flagged[n])} "
                      "flagged probes are in both confirm collections (an unfinished build?)"
                      for n in held if n not in names]
        rep = benjamini_hochberg([tests[n].pvalue for n in names], cfg.q_domain).rejected
        out.domains = {n: bool(r) for n, r in zip(names, rep, strict=True)}
        out.domain_pvalues = {n: tests[n].pvalue for n in names}
        hunk_rows = [j for j, p in enumerate(order) if position[p.id] in shown]
        if hunk_rows:
            confirmed = benjamini_hochberg(probe_pvalues(splits.excess[hunk_rows]),
                                           cfg.q).rejected
            out.probes = {position[order[j].id]: bool(c)
                          for j, c in zip(hunk_rows, confirmed, strict=True)}
        return out
