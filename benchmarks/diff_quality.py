"""Does `diffroute diff` find planted differences without crying wolf? Unflattering.

Synthetic pairs from :mod:`profiles.synthetic` — 12 domains of 20–40 four-option probes,
heterogeneous and within-domain correlated difficulty, a favourite distractor per domain, 4–5 %
unparsed, sampling at temperature 0.7 — with a known ground truth, ``--pairs`` (≥ 20) pairs per
row and per k:

* null rows: B is A (own sampling stream); with per-request logit nudges of 0.06 and 0.15 mean
  TV between requests (each sample its own request, as collection now works), and, for
  reference, a 0.06 nudge shared by all k samples of a probe (one request per probe, as
  collection worked before; the null the engine assumes does not hold there);
* planted rows: a uniform shift of 10/20/30 points in one domain, 20 points in two domains, a
  sparse shift (a third of the probes, 60 points), a 20-point refusal-rate difference.

For each row: the share of null pairs that flag any domain (Clopper–Pearson 95 % interval), or
domain recall and precision (95 % bootstrap interval over pairs) and the share of found domains
that replicated on the fresh confirm collection. Two baselines scored on the same pairs, each
with the cut an oracle picks knowing the truth (maximum F1 over all domains of all rows at that
k): raw disagreement (mean over probes of the chance that a sample of A and one of B differ),
and the engine's own noise-corrected point estimate (the domain shift in points), no test.

    python -m benchmarks.diff_quality [--pairs 20] [--samples 5,10,20]
    python -m benchmarks.diff_quality --null-pairs 200 --samples 20   # calibration only

``--null-pairs N`` runs only the null row with 0.06 per-request nudges, N pairs, and prints the
share of pairs that flag any domain with its Clopper–Pearson interval (target ≤ 2.5 %).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import beta

from profiles.diff import Diff, compute_diff
from profiles.profile import Profile
from profiles.synthetic import Shift, SyntheticPair, World, synthetic_pair

NUDGE_06, NUDGE_15 = 0.21, 0.53  # nudge_sd giving 0.06 / 0.15 mean TV between requests
ROWS: list[tuple[str, Shift | None, World]] = [
    ("null", None, World()),
    ("null, nudge 0.06", None, World(nudge_sd=NUDGE_06)),
    ("null, nudge 0.15", None, World(nudge_sd=NUDGE_15)),
    ("null, nudge 0.06, 1 request", None, World(nudge_sd=NUDGE_06, one_request_per_probe=True)),
    ("10 pt, 1 domain", Shift(0.10), World()),
    ("20 pt, 1 domain", Shift(0.20), World()),
    ("30 pt, 1 domain", Shift(0.30), World()),
    ("20 pt, 2 domains", Shift(0.20, 2), World()),
    ("20 pt sparse, 1 domain", Shift(0.20, 1, "sparse"), World()),
    ("20 pt refusals, 1 domain", Shift(0.20, 1, "refusal"), World()),
    ("20 pt, 1 domain, nudge 0.06", Shift(0.20), World(nudge_sd=NUDGE_06)),
]


@dataclass
class Outcome:
    """One pair: what the engine flagged and each domain's baseline scores."""

    planted: set[str]
    flagged: set[str]
    replicated: set[str]
    raw: dict[str, float]
    estimate: dict[str, float]


@dataclass
class Row:
    label: str
    null: bool
    outcomes: list[Outcome] = field(default_factory=list)


def raw_disagreement(a: Profile, b: Profile, pair: SyntheticPair) -> dict[str, float]:
    """Per domain: mean over probes of P(a sample of A ≠ a sample of B), unparsed a category."""
    sums: dict[str, list[float]] = {}
    for probe in pair.suite.probes:
        va, vb = a.records[probe.id].values, b.records[probe.id].values
        differ = np.mean([x != y for x in va for y in vb])
        for d in probe.domains:
            sums.setdefault(d, []).append(float(differ))
    return {d: float(np.mean(v)) for d, v in sums.items()}


def run_pair(pair: SyntheticPair, seed: int) -> Outcome:
    diff: Diff = compute_diff(pair.a, pair.b, pair.suite, seed=seed, n_resamples=200)
    flagged = set(diff.flagged_domains)
    return Outcome(pair.planted, flagged, {d for d in flagged if diff.domain(d).replicated},
                   raw_disagreement(pair.a, pair.b, pair),
                   {d.name: d.shift for d in diff.domains})


def clopper_pearson(x: int, n: int) -> tuple[float, float]:
    low = 0.0 if x == 0 else float(beta.ppf(0.025, x, n - x + 1))
    high = 1.0 if x == n else float(beta.ppf(0.975, x + 1, n - x))
    return low, high


def _pr(outcomes: list[Outcome], flags: list[set[str]]) -> tuple[float, float]:
    tp = sum(len(f & o.planted) for o, f in zip(outcomes, flags, strict=True))
    fp = sum(len(f - o.planted) for o, f in zip(outcomes, flags, strict=True))
    n_true = sum(len(o.planted) for o in outcomes)
    return (tp / (tp + fp) if tp + fp else float("nan"), tp / n_true if n_true else float("nan"))


def precision_recall(outcomes: list[Outcome], flags: list[set[str]],
                     rng: np.random.Generator, resamples: int = 2000) -> str:
    """P and R with percentile bootstrap intervals over pairs."""
    p, r = _pr(outcomes, flags)
    draws = []
    for _ in range(resamples):
        idx = rng.integers(0, len(outcomes), len(outcomes))
        draws.append(_pr([outcomes[i] for i in idx], [flags[i] for i in idx]))
    d = np.array(draws)
    with np.errstate(all="ignore"):
        (pl, rl), (ph, rh) = np.nanpercentile(d, [2.5, 97.5], axis=0)
    return f"R {r:.2f} [{rl:.2f},{rh:.2f}]  P {_f(p)} [{_f(pl)},{_f(ph)}]"


def _f(x: float) -> str:
    return "  - " if not np.isfinite(x) else f"{x:.2f}"


def oracle_cut(rows: list[Row], score: str) -> float:
    """The cut maximising F1 over every domain of every pair (the truth known)."""
    values, truth = [], []
    for row in rows:
        for o in row.outcomes:
            for d, v in getattr(o, score).items():
                values.append(v)
                truth.append(d in o.planted)
    v, t = np.array(values), np.array(truth)
    best, best_f1 = float("inf"), -1.0
    for cut in np.unique(v):
        flagged = v >= cut
        tp = np.sum(flagged & t)
        f1 = 2 * tp / (flagged.sum() + t.sum()) if flagged.sum() + t.sum() else 0.0
        if f1 > best_f1:
            best, best_f1 = float(cut), float(f1)
    return best


def report(rows: list[Row], k: int, rng: np.random.Generator) -> None:
    cuts = {s: oracle_cut(rows, s) for s in ("raw", "estimate")}
    print(f"\nk = {k}: oracle cuts raw disagreement >= {cuts['raw']:.3f}, "
          f"point estimate >= {cuts['estimate']:.1f} pt")
    for row in rows:
        engine = [o.flagged for o in row.outcomes]
        base = {s: [{d for d, v in getattr(o, s).items() if v >= c} for o in row.outcomes]
                for s, c in cuts.items()}
        if row.null:
            parts = []
            for name, flags in (("diffroute", engine), ("raw", base["raw"]),
                                ("estimate", base["estimate"])):
                x = sum(bool(f) for f in flags)
                low, high = clopper_pearson(x, len(flags))
                parts.append(f"{name} {x}/{len(flags)} [{low:.3f},{high:.3f}]")
            print(f"  {row.label:<30} pairs flagging a domain: " + " | ".join(parts))
            continue
        found = sum(len(o.flagged & o.planted) for o in row.outcomes)
        rep = sum(len(o.replicated & o.planted) for o in row.outcomes)
        print(f"  {row.label:<30} diffroute {precision_recall(row.outcomes, engine, rng)}"
              f"  replicated {rep}/{found}")
        for s in ("raw", "estimate"):
            print(f"  {'':<30} {s:<9} {precision_recall(row.outcomes, base[s], rng)}")


def null_calibration(pairs: int, k: int) -> None:
    """Pairs of alike models (0.06 nudges): how many flag any domain."""
    world = World(nudge_sd=NUDGE_06)
    flagging = 0
    for seed in range(pairs):
        pair = synthetic_pair(50_000 + seed, k, None, world)
        diff = compute_diff(pair.a, pair.b, pair.suite, seed=seed, n_resamples=20)
        flagging += bool(diff.flagged_domains)
    low, high = clopper_pearson(flagging, pairs)
    print(f"k = {k}, null pairs with 0.06 nudges: {flagging}/{pairs} flag a domain = "
          f"{flagging / pairs:.3f} [{low:.3f}, {high:.3f}] (target <= 0.025)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--samples", default="5,10,20")
    parser.add_argument("--null-pairs", type=int, default=0)
    parser.add_argument("--rows", default="", help="only rows whose label contains one of "
                        "these comma-separated words")
    args = parser.parse_args()
    wanted = [w for w in args.rows.split(",") if w]
    if args.null_pairs:
        for k in (int(x) for x in args.samples.split(",")):
            null_calibration(args.null_pairs, k)
        return
    rng = np.random.default_rng(0)
    print(f"synthetic pairs: 12 domains x 20-40 probes, {args.pairs} pairs per row")
    for k in (int(x) for x in args.samples.split(",")):
        started = time.perf_counter()
        rows = []
        for r, (label, shift, world) in enumerate(ROWS):
            if wanted and not any(w in label for w in wanted):
                continue
            row = Row(label, shift is None)
            for i in range(args.pairs):
                seed = 10_000 * r + i
                row.outcomes.append(run_pair(synthetic_pair(seed, k, shift, world), seed))
            rows.append(row)
        report(rows, k, rng)
        print(f"  ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
