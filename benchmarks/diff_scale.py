"""How the pool's pairwise similarity matrix scales with the number of models.

For N ∈ {10, 50, 100} models × 5,000 choice probes × k = 5 samples, it builds profiles of a
simulated pool (families share answer preferences), then times ``pool_matrix`` — κp, error
consistency, agreement and accuracy for every pair and every domain, without bootstrap — and,
as the baseline measured in the same run, the time of one pass over the same profiles that only
reads every sample (the floor any implementation pays). It prints the time per N, the ratio to
the baseline, and the growth exponent between sizes (time ∝ N^e).

    python benchmarks/diff_scale.py [--probes 5000] [--samples 5] [--sizes 10,50,100]
"""

from __future__ import annotations

import argparse
import math
import time
from itertools import pairwise

import numpy as np

from profiles.collect import Decoding
from profiles.matrix import pool_matrix
from profiles.probe import Probe
from profiles.profile import ProbeRecord, Profile
from profiles.suite import Suite, SuiteManifest

LABELS = ("A", "B", "C", "D")


def make_suite(n_probes: int, n_domains: int = 12) -> Suite:
    probes = tuple(
        Probe(id=f"p{i:05d}", domains=(f"d{i % n_domains:02d}",), type="choice",
              messages=({"role": "user", "content": f"question {i}"},),  # type: ignore[arg-type]
              options=("a", "b", "c", "d"), gold=LABELS[i % 4])
        for i in range(n_probes)
    )
    return Suite(SuiteManifest(name="scale", version="1"), probes)


def make_profiles(suite: Suite, n_models: int, k: int, seed: int = 0) -> list[Profile]:
    rng = np.random.default_rng(seed)
    n = len(suite.probes)
    families = max(2, n_models // 5)
    preferred = rng.integers(0, 4, size=(families, n))
    profiles = []
    for m in range(n_models):
        fam = m % families
        keep = rng.random(n) < 0.8
        answers = np.where(keep[:, None], preferred[fam][:, None], rng.integers(0, 4, (n, k)))
        noise = rng.random((n, k)) < 0.2
        answers = np.where(noise, rng.integers(0, 4, (n, k)), answers)
        records = {
            p.id: ProbeRecord(p.id, p.id, ("",) * k, tuple(LABELS[a] for a in answers[j]))
            for j, p in enumerate(suite.probes)
        }
        profiles.append(Profile(f"m{m:03d}", f"key{m}", suite.name, suite.version,
                                Decoding(samples=k), records))
    return profiles


def read_everything(profiles: list[Profile]) -> int:
    """The baseline: touch every sample once (no statistics)."""
    total = 0
    for prof in profiles:
        for rec in prof.records.values():
            total += sum(v == "A" for v in rec.values)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=5000)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--sizes", default="10,50,100")
    args = parser.parse_args()
    suite = make_suite(args.probes)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"pool matrix: {args.probes} probes x k={args.samples}, 12 domains + all, no bootstrap")
    print(f"{'models':>6} {'pairs':>6} {'matrix s':>9} {'baseline s':>10} {'ratio':>6}")
    times = []
    for n in sizes:
        profiles = make_profiles(suite, n, args.samples)
        started = time.perf_counter()
        read_everything(profiles)
        base = time.perf_counter() - started
        started = time.perf_counter()
        matrix = pool_matrix(profiles, suite, bootstrap=0)
        elapsed = time.perf_counter() - started
        assert matrix.domains["all"].kappa.shape == (n, n)
        times.append(elapsed)
        print(f"{n:>6} {n * (n - 1) // 2:>6} {elapsed:>9.2f} {base:>10.2f} {elapsed / base:>6.1f}")
    for (n0, t0), (n1, t1) in pairwise(zip(sizes, times, strict=True)):
        print(f"growth {n0}->{n1} models: time x{t1 / t0:.1f} "
              f"(N^{math.log(t1 / t0) / math.log(n1 / n0):.2f})")


if __name__ == "__main__":
    main()
