"""Does `diffroute diff` find planted differences without crying wolf? A ground-truth benchmark.

Simulated pools (scripted backend, router.testing.simulate): 10 domains × 40 four-option choice
probes, k samples per probe (default 20: 10 screen, 10 held out to confirm).

(a) Null pairs — the same behaviour, different sampling seeds: every flagged domain and probe
    is a false positive.
(b) Planted pairs — B is A with ``shift`` (answer probability moved from the preferred option
    to another) in one or two domains, at several strengths: recall and precision of flagged
    domains and probes (every probe of a planted domain truly differs).

Both are scored side by side with a naive baseline computed in the same run on the same
samples: flag a probe when the two models' most frequent answers differ; flag a domain when its
raw disagreement (share of probes with different most frequent answers) exceeds a fixed cut.

    python -m benchmarks.diff_quality [--pairs 6] [--samples 20] [--real]

``--real`` adds the real-model check: SmolLM2 with a system prompt that plants a bias in one
domain, diffed against plain SmolLM2 (needs the `local` extra; a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from profiles.collect import Decoding
from profiles.diff import Diff, compute_diff
from profiles.profile import Profile
from profiles.store import ObservationStore
from profiles.suite import Suite
from router.testing.simulate import profile_models, scripted_model, simulated_suite

DOMAINS = tuple(f"d{i}" for i in range(10))
NAIVE_DOMAIN_CUT = 0.25


@dataclass
class Score:
    """Counts of one method over many pairs."""

    tp_domains: int = 0
    fp_domains: int = 0
    fn_domains: int = 0
    tp_probes: int = 0
    fp_probes: int = 0
    fn_probes: int = 0
    replicated: Counter[str] = field(default_factory=Counter)

    def add(self, flagged_domains: set[str], planted: set[str], flagged_probes: set[str],
            planted_probes: set[str]) -> None:
        self.tp_domains += len(flagged_domains & planted)
        self.fp_domains += len(flagged_domains - planted)
        self.fn_domains += len(planted - flagged_domains)
        self.tp_probes += len(flagged_probes & planted_probes)
        self.fp_probes += len(flagged_probes - planted_probes)
        self.fn_probes += len(planted_probes - flagged_probes)

    @staticmethod
    def ratio(num: int, den: int) -> str:
        return f"{num / den:.3f}" if den else "  -  "

    def row(self) -> str:
        r = self.ratio
        return (f"domains P={r(self.tp_domains, self.tp_domains + self.fp_domains)} "
                f"R={r(self.tp_domains, self.tp_domains + self.fn_domains)} "
                f"FP={self.fp_domains:<3} | "
                f"probes P={r(self.tp_probes, self.tp_probes + self.fp_probes)} "
                f"R={r(self.tp_probes, self.tp_probes + self.fn_probes)} FP={self.fp_probes}")


def naive(a: Profile, b: Profile, suite: Suite) -> tuple[set[str], set[str]]:
    """The baseline: modal answers differ → probe flagged; raw disagreement > cut → domain."""
    probes: set[str] = set()
    per_domain: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for probe in suite.probes:
        va = [v for v in a.records[probe.id].values if v]
        vb = [v for v in b.records[probe.id].values if v]
        differ = bool(va and vb) and Counter(va).most_common(1)[0][0] != \
            Counter(vb).most_common(1)[0][0]
        for d in probe.domains:
            totals[d] += 1
            per_domain[d] += differ
        if differ:
            probes.add(probe.id)
    domains = {d for d in totals if per_domain[d] / totals[d] > NAIVE_DOMAIN_CUT}
    return domains, probes


def ours(diff: Diff) -> tuple[set[str], set[str]]:
    return set(diff.flagged_domains), {h.probe_id for h in diff.hunks if h.significant}


async def pair_profiles(suite: Suite, k: int, seed: int, planted: dict[str, float],
                        tmp: Path) -> tuple[Profile, Profile]:
    base = {"prior": f"fam{seed}", "accuracy": 0.7, "sharpness": 0.8}
    a = scripted_model("a", **base, seed=seed * 2)
    b = scripted_model("b", **base, seed=seed * 2 + 1,
                       domains={d: {"shift": s} for d, s in planted.items()})
    with ObservationStore(tmp / f"obs-{seed}-{len(planted)}.sqlite3") as store:
        pa, pb = await profile_models([a, b], suite, store, Decoding(samples=k))
    return pa, pb


def evaluate(label: str, runs: list[tuple[Diff, Profile, Profile, set[str]]],
             suite: Suite) -> None:
    ours_score, naive_score = Score(), Score()
    for diff, pa, pb, planted in runs:
        planted_probes = {p.id for p in suite.probes if set(p.domains) & planted}
        od, op = ours(diff)
        ours_score.add(od, planted, op, planted_probes)
        for name in od:
            ours_score.replicated[str(diff.domain(name).replicated)] += 1
        nd, np_ = naive(pa, pb, suite)
        naive_score.add(nd, planted, np_, planted_probes)
    rep = dict(ours_score.replicated)
    print(f"{label:<26} diffroute  {ours_score.row()}  replicated={rep}")
    print(f"{'':<26} naive      {naive_score.row()}")


async def simulated(pairs: int, k: int) -> None:
    suite = simulated_suite(DOMAINS, 40)
    print(f"simulated pools: {len(DOMAINS)} domains x 40 probes, k={k}, {pairs} pairs per row")
    with tempfile.TemporaryDirectory() as tmp:
        for label, strength, n_planted in [("null (no difference)", 0.0, 0),
                                           ("planted 0.10, 1 domain", 0.10, 1),
                                           ("planted 0.20, 1 domain", 0.20, 1),
                                           ("planted 0.20, 2 domains", 0.20, 2),
                                           ("planted 0.30, 2 domains", 0.30, 2),
                                           ("planted 0.50, 1 domain", 0.50, 1)]:
            runs = []
            for seed in range(pairs):
                planted = {DOMAINS[(seed + j) % len(DOMAINS)]: strength
                           for j in range(n_planted)}
                pa, pb = await pair_profiles(suite, k, seed, planted, Path(tmp))
                runs.append((compute_diff(pa, pb, suite, seed=seed), pa, pb, set(planted)))
            evaluate(label, runs, suite)


def real(samples: int) -> None:
    from router.testing.realcheck import planted_bias_check

    result = planted_bias_check(samples=samples)
    print("real models: smollm2 vs smollm2 with a planted bias in", result.planted)
    print("  flagged domains (ranked):", result.ranking)
    print("  planted domain ranks first:", result.ranks_first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--real", action="store_true")
    args = parser.parse_args()
    asyncio.run(simulated(args.pairs, args.samples))
    if args.real:
        real(args.samples)


if __name__ == "__main__":
    main()
