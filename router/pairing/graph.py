"""The similarity graph of the pool: models as nodes, per-domain similarity as edge data.

Built from a :class:`profiles.matrix.PoolMatrix` (the diffs of every pair, per domain). Nodes
carry the configured family, the detected community and the accuracy per domain; edges carry,
per domain and overall (``"all"``), κp with its bootstrap interval, error consistency, plain
agreement and the probe counts. Families are reported twice: as configured, and as detected by
Louvain modularity on κp significantly above chance — when the two disagree, the configuration
is probably wrong (or a provider swapped a model). The graph is what people inspect and what
the pool-wide matching runs on; the per-request policy reads the same numbers as arrays
(:class:`router.pairing.policy.PolicyTables`), never traversing the graph.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np

from profiles.matrix import ALL, PoolMatrix

COMMUNITY_SEED = 0
"""Louvain is randomised; a fixed seed keeps the detected communities reproducible."""


@dataclass(frozen=True)
class SimilarityGraph:
    """The pool's similarity graph with its version (changes whenever a profile changes)."""

    graph: nx.Graph
    version: str

    @property
    def models(self) -> list[str]:
        return sorted(self.graph.nodes)

    def families(self) -> dict[str, list[str]]:
        """Configured family → its models."""
        return _group({n: d["family"] for n, d in self.graph.nodes(data=True)})

    def communities(self) -> list[list[str]]:
        """Detected communities (Louvain on κp), each sorted, ordered by their first model."""
        groups = _group({n: d["community"] for n, d in self.graph.nodes(data=True)
                         if d["community"] is not None})
        return sorted(groups.values())

    def edge(self, a: str, b: str, domain: str = ALL) -> dict[str, Any] | None:
        """The similarity of ``a`` and ``b`` on ``domain``, ``None`` without evidence."""
        data = self.graph.get_edge_data(a, b)
        if data is None:
            return None
        found: dict[str, Any] | None = data["domains"].get(domain)
        return found

    def to_json(self) -> dict[str, Any]:
        nodes = [{"model": n, **d} for n, d in sorted(self.graph.nodes(data=True))]
        edges = [{"a": a, "b": b, **d} for a, b, d in sorted(self.graph.edges(data=True))]
        return {"version": self.version, "nodes": nodes, "edges": edges,
                "families": self.families(), "communities": self.communities()}


def build_graph(matrix: PoolMatrix, families: Mapping[str, str],
                unprofiled: Sequence[str] = ()) -> SimilarityGraph:
    """The graph of ``matrix``'s models plus ``unprofiled`` ones (nodes without edges)."""
    graph = nx.Graph()
    for i, model in enumerate(matrix.models):
        accuracy = {d: _num(m.accuracy[i]) for d, m in matrix.domains.items()}
        graph.add_node(model, family=families.get(model, model), profiled=True,
                       accuracy=accuracy, community=None)
    for model in unprofiled:
        graph.add_node(model, family=families.get(model, model), profiled=False, accuracy={},
                       community=None)
    for i, a in enumerate(matrix.models):
        for j in range(i + 1, len(matrix.models)):
            _add_edge(graph, matrix, a, matrix.models[j], i, j)
    for number, members in enumerate(detect_communities(graph)):
        for model in members:
            graph.nodes[model]["community"] = number
    return SimilarityGraph(graph, graph_version(matrix, families, unprofiled))


def _add_edge(graph: nx.Graph, matrix: PoolMatrix, a: str, b: str, i: int, j: int) -> None:
    per_domain: dict[str, dict[str, Any]] = {}
    for name, m in matrix.domains.items():
        low, high = _num(m.kappa_low[i, j]), _num(m.kappa_high[i, j])
        per_domain[name] = {
            "kappa": _num(m.kappa[i, j]),
            "interval": None if low is None or high is None else (low, high),
            "error_consistency": _num(m.error_consistency[i, j]),
            "agreement": _num(m.agreement[i, j]),
            "n_kappa": m.n_kappa, "n_gold": m.n_gold, "n_probes": m.n_categorical,
            **{key: None if value is None else _num(value[i, j]) for key, value in (
                ("similarity", m.similarity), ("prior", m.prior), ("refusal", m.refusal),
                ("free", m.free))},
            "n_prior": m.n_prior, "n_refusal": m.n_refusal, "n_free": m.n_free,
        }
    overall = per_domain.get(ALL, {})
    kappa = overall.get("kappa")
    graph.add_edge(a, b, domains=per_domain, kappa=kappa,
                   interval=overall.get("interval"),
                   error_consistency=overall.get("error_consistency"),
                   agreement=overall.get("agreement"), n_probes=overall.get("n_probes", 0),
                   weight=_community_weight(kappa, overall.get("interval")))


def _community_weight(kappa: float | None, interval: tuple[float, float] | None) -> float:
    """κp where it is significantly above chance (interval above 0), else 0.

    On a complete graph, the small positive κp of unrelated models pulls every model into one
    community; keeping only similarity beyond chance lets the families show.
    """
    if kappa is None or kappa <= 0:
        return 0.0
    if interval is not None and interval[0] <= 0:
        return 0.0
    return kappa


def detect_communities(graph: nx.Graph) -> list[list[str]]:
    """Louvain communities of the profiled nodes on positive κp (greedy modularity if Louvain
    is unavailable); nodes without any positive edge form their own community."""
    profiled = nx.Graph()
    profiled.add_nodes_from(n for n, d in graph.nodes(data=True) if d.get("profiled", True))
    profiled.add_weighted_edges_from((a, b, w) for a, b, w in graph.edges(data="weight") if w > 0)
    if profiled.number_of_nodes() == 0:
        return []
    if profiled.size(weight="weight") <= 0:
        return [[n] for n in sorted(profiled.nodes)]
    try:
        found = nx.community.louvain_communities(profiled, weight="weight",
                                                 seed=COMMUNITY_SEED)
    except AttributeError:  # networkx older than 2.8
        found = nx.community.greedy_modularity_communities(profiled, weight="weight")
    return sorted(sorted(c) for c in found)


def graph_version(matrix: PoolMatrix, families: Mapping[str, str],
                  unprofiled: Sequence[str] = ()) -> str:
    """A hash of the numbers the policy reads, so any changed observation changes it."""
    digest = hashlib.sha256(matrix.version.encode())
    digest.update(repr(sorted(families.items())).encode())
    digest.update(repr(sorted(unprofiled)).encode())
    digest.update(repr(matrix.models).encode())
    for name in sorted(matrix.domains):
        m = matrix.domains[name]
        digest.update(name.encode())
        for arr in (m.kappa, m.error_consistency, m.agreement, m.accuracy):
            digest.update(np.round(np.nan_to_num(arr, nan=9.0), 6).tobytes())
    return digest.hexdigest()[:12]


def _num(x: float) -> float | None:
    return None if np.isnan(x) else round(float(x), 5)


def _group(labels: Mapping[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for node, label in sorted(labels.items()):
        out.setdefault(str(label), []).append(node)
    return out
