"""Decision latency of the pairing policy, against the bare faiss search it contains.

For pools of 8, 64 and 256 simulated models (12 domains, synthetic similarity tables of the
real shapes) and a 20,000-probe index of 256-dimensional unit vectors, it times, in process:

* ``search``: the bare faiss search of one task vector (k = 16) in the probe index the service
  would build — past 4,096 probes an inverted file (``router.pairing.index``) — the baseline;
* ``decide``: a whole decision for a task vector — the same search, the domain weights, and
  the audit policy (competence floor, weighted κp, tie-breaks, reason and evidence).

It also times the exact flat scan of the same vectors, and measures what the inverted file
costs in accuracy: recall@16 against the exact scan, and the largest change of a domain weight.
Task embedding is left out (it depends on the embedder, not on the policy).

Run: ``python3 benchmarks/policy.py [--calls 2000] [--threads 1]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import faiss
import networkx as nx
import numpy as np

from router.pairing.decider import PolicyDecider
from router.pairing.decision import RouteRequest
from router.pairing.graph import SimilarityGraph
from router.pairing.index import ProbeIndex
from router.pairing.pinned import Pairings
from router.pairing.policy import ALL, PolicySettings, PolicyTables, make_tables

DOMAINS = [f"domain{i:02d}" for i in range(12)]
PROBES = 20_000
DIM = 256
FAMILY_SIZE = 4


def synthetic_tables(m: int, rng: np.random.Generator) -> PolicyTables:
    """κp high within families of four, near zero across, per domain; accuracies 0.3–0.9."""
    family = np.arange(m) // FAMILY_SIZE
    same = (family[:, None] == family[None, :]).astype(np.float64)
    arrays = {}
    for d in [ALL, *DOMAINS]:
        noise = rng.normal(0, 0.05, (m, m))
        kappa = np.clip(0.6 * same + (noise + noise.T) / 2, -1, 1)
        np.fill_diagonal(kappa, 1.0)
        arrays[d] = {"kappa": kappa, "kappa_low": kappa - 0.08, "kappa_high": kappa + 0.08,
                     "error_consistency": kappa * 0.9, "accuracy": rng.uniform(0.3, 0.9, m),
                     # the measures beyond gold (issue #14), so evidence costs what it does
                     "similarity": kappa * 0.95, "similarity_low": kappa - 0.1,
                     "similarity_high": kappa + 0.1, "prior": kappa * 1.1,
                     "refusal": kappa * 0.8, "free": kappa * 1.2}
    names = [f"model{i:03d}" for i in range(m)]
    return make_tables(names, [f"family{f}" for f in family], rng.uniform(0, 10, m).tolist(),
                       arrays, [True] * m, {d: (40, 40, 30, 10, 8) for d in arrays},
                       version="bench")


def synthetic_index(rng: np.random.Generator) -> tuple[ProbeIndex, np.ndarray, np.ndarray,
                                                      list[list[str]]]:
    """Probes clustered by domain, so a task near a cluster gets that domain's weight."""
    centres = rng.normal(0, 1, (len(DOMAINS), DIM))
    owner = rng.integers(0, len(DOMAINS), PROBES)
    vectors = centres[owner] + rng.normal(0, 1.0, (PROBES, DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    owners = [[DOMAINS[o]] for o in owner]
    data = vectors.astype(np.float32)
    return ProbeIndex(data, owners), centres, data, owners


def timings(fn: Callable[[int], object], calls: int) -> np.ndarray:
    for i in range(min(50, calls)):  # warm caches and faiss's first-call setup
        fn(i)
    out = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter_ns()
        fn(i)
        out[i] = time.perf_counter_ns() - start
    return out / 1e6


def run(m: int, calls: int, index: ProbeIndex, queries: np.ndarray,
        rng: np.random.Generator) -> dict[str, float]:
    tables = synthetic_tables(m, rng)
    # the nearest-probe vote: it contains the timed search (the default, centroids, does not)
    config = PolicySettings(competence_floor=0.5, task_domains="neighbours")
    decider = PolicyDecider(tables, SimilarityGraph(nx.Graph(), "bench"),
                            Pairings(), config, index)
    primaries = [tables.models[i % m] for i in range(calls)]

    def search(i: int) -> object:
        return index.search(queries[i % len(queries)].reshape(1, -1), config.neighbours)

    def decide(i: int) -> object:
        request = RouteRequest(role="audit", primary=primaries[i])
        return decider.decide_with_vector(request, queries[i % len(queries)])

    s, d = timings(search, calls), timings(decide, calls)
    return {"models": m, "search_p50": float(np.percentile(s, 50)),
            "search_p99": float(np.percentile(s, 99)), "decide_p50": float(np.percentile(d, 50)),
            "decide_p99": float(np.percentile(d, 99))}


def index_accuracy(index: ProbeIndex, exact: ProbeIndex, queries: np.ndarray,
                   k: int) -> tuple[float, float]:
    """recall@k of ``index`` against ``exact``, and the largest domain-weight change."""
    _, want = exact.search(queries, k)
    _, got = index.search(queries, k)
    recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(want, got, strict=True)]))
    moved = 0.0
    for q in queries:
        a, b = exact.domain_weights(q, k, 0.05), index.domain_weights(q, k, 0.05)
        moved = max(moved, *(abs(a.get(d, 0.0) - b.get(d, 0.0)) for d in set(a) | set(b)))
    return recall, moved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="faiss OpenMP threads; one query gains nothing from more")
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    index, centres, vectors, owners = synthetic_index(rng)
    picks = rng.integers(0, len(DOMAINS), 256)
    queries = (centres[picks] + rng.normal(0, 1.0, (256, DIM))).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact = ProbeIndex(vectors, owners, exact_limit=len(vectors))
    flat = timings(lambda i: exact.search(queries[i % len(queries)].reshape(1, -1), 16),
                   args.calls)
    recall, moved = index_accuracy(index, exact, queries, 16)
    kind = "exact flat" if index.exact else "inverted file"
    print(f"index: {len(index)} probes x {DIM} dims ({kind}), k=16; {len(DOMAINS)} domains; "
          f"{args.calls} calls each; faiss threads {args.threads}; times in ms")
    print(f"exact flat scan of the same vectors: p50 {np.percentile(flat, 50):.3f}  "
          f"p99 {np.percentile(flat, 99):.3f}; index recall@16 {recall:.3f}, "
          f"largest domain-weight change {moved:.3f}")
    print(f"{'models':>6}  {'search p50':>10}  {'search p99':>10}  {'decide p50':>10}  "
          f"{'decide p99':>10}  {'p50 ratio':>9}  {'p99 ratio':>9}  {'policy p50':>10}")
    for m in (8, 64, 256):
        r = run(m, args.calls, index, queries, rng)
        print(f"{m:>6}  {r['search_p50']:>10.3f}  {r['search_p99']:>10.3f}  "
              f"{r['decide_p50']:>10.3f}  {r['decide_p99']:>10.3f}  "
              f"{r['decide_p50'] / r['search_p50']:>9.2f}  "
              f"{r['decide_p99'] / r['search_p99']:>9.2f}  "
              f"{r['decide_p50'] - r['search_p50']:>10.3f}")


if __name__ == "__main__":
    main()
