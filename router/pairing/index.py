"""The probe index: which of the suite's probes a task resembles, and so which domains it is in.

Probes are embedded by their question (:func:`question_text`: the user turns without the
options and answer-format lines a task never has), L2-normalised, so scores are cosines. Two
ways turn a task vector into domain weights (``policy.task_domains``):

* ``centroid`` (the default): softmax(cos / T) over each domain's mean probe embedding; a task
  whose best cosine is below what 99 % of the suite's own probes reach (each scored against
  centroids built without it) fits no domain and gets ``{}``, which the decider reads as
  ``all``. ``benchmarks/task_domains.py`` measures it on 72 held-out everyday prompts.
* ``neighbours``: the task's ``k`` nearest probes vote for their domains with softmax weights.

Before either, a task is compared with everyday requests that fit no domain of a suite
(:class:`Elsewhere`, ``router/data/elsewhere.txt``: cooking, pets, travel, chit-chat, …): one
nearer to them than to the suite's probes fits no domain either (``policy.elsewhere``). The
suite alone cannot tell such a task from one of its own: a joke request is as close to its
nearest domain centroid as many everyday questions are to theirs.

Up to ``exact_limit`` probes (:data:`EXACT_LIMIT` by default; the shipped suites have a few
hundred) the index is a faiss ``IndexFlatIP``: exact. Past it, one query's flat scan is bound by
memory bandwidth (20,000 × 256 floats are 20 MB, about a millisecond on a 2-core VM), so the
index becomes an inverted file (``IndexIVFFlat``, about 2·√n lists, an eighth of them scanned):
the neighbours it returns carry exact float32 similarities, but a true neighbour can be missed.
``benchmarks/policy.py`` measures that recall against the exact scan (1.00 at 20,000 probes).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import faiss
import numpy as np
import numpy.typing as npt
import structlog

from profiles.embed import Embedder, Vectors, usable_rows
from profiles.probe import Probe
from router.config import EXACT_LIMIT

FloatArray = npt.NDArray[np.float64]
_log = structlog.get_logger("diffroute.index")
MIN_WEIGHT = 0.01
"""Domain weights below this are dropped (and the rest renormalised): noise, not evidence."""
SCANNED_FRACTION = 8
"""An inverted file scans 1/SCANNED_FRACTION of its lists per query."""
MIN_LIST_SIZE = 39
"""faiss's k-means wants at least this many training points per list."""


def probe_text(probe: Probe) -> str:
    """The text of a probe as a task would look: its user turns."""
    return "\n".join(m.content for m in probe.messages if m.role == "user")


_SCAFFOLD = re.compile(r"^([A-H]\. .*|Answer with .*|```\w*)$")
"""Lines a probe adds to make its answer scorable (options, answer format, code fences):
an everyday task has none of them, so they would only pull tasks towards the option format."""


def question_text(probe: Probe) -> str:
    """The user turns of a probe without its answer scaffolding: what a task resembles."""
    lines = [ln for ln in probe_text(probe).split("\n") if not _SCAFFOLD.match(ln.strip())]
    return "\n".join(lines).strip() or probe_text(probe)


ELSEWHERE = "data/elsewhere.txt"
ELSEWHERE_K = 5
"""A task is compared with the mean similarity of its this many nearest everyday requests and
of its this many nearest probes."""
CLAIM_SAMPLE = 1000
"""At most this many probes (a fixed sample) measure how near a suite's probes are to each
other, for :meth:`Elsewhere.fit`."""


def elsewhere_texts() -> list[str]:
    """The shipped everyday requests outside any suite's domains (one per line, ``#`` comments)."""
    text = resources.files("router").joinpath(ELSEWHERE).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def _mean_top(scores: npt.NDArray[np.float32], k: int) -> FloatArray:
    """Row means of the ``k`` largest scores (scores sorted descending, as faiss returns them;
    missing places, -inf or NaN from an inverted file, are left out)."""
    top = scores[:, :k].astype(np.float64)
    top = np.where(np.isfinite(top), top, np.nan)
    counts = np.maximum(np.sum(~np.isnan(top), axis=1), 1)
    return np.asarray(np.nansum(top, axis=1) / counts)


@dataclass(frozen=True)
class Elsewhere:
    """Everyday requests outside a suite's domains, as unit vectors: a task whose ``k`` nearest
    of them are nearer, on average, than its ``k`` nearest probes fits no domain.

    An anchor the suite claims, i.e. nearer its ``k`` nearest probes than half of the suite's
    own probes are to theirs (each without itself), is left out: it is one of the suite's
    topics (your own suite may have a cooking domain)."""

    anchors: npt.NDArray[np.float32]
    k: int

    @classmethod
    def fit(cls, anchors: npt.NDArray[np.float32], index: ProbeIndex,
            k: int = ELSEWHERE_K) -> Elsewhere:
        """The anchors the suite in ``index`` does not claim (none for a suite of ≤ k probes:
        its probes' nearness to each other cannot be measured)."""
        anchors = anchors[usable_rows(anchors)] if len(anchors) else anchors
        k = min(k, len(index) - 1)
        if k < 1 or not len(anchors):
            return cls(np.zeros((0, index.dim), dtype=np.float32), max(k, 1))
        probes = index.vectors
        if len(probes) > CLAIM_SAMPLE:
            chosen = np.random.default_rng(0).choice(len(probes), CLAIM_SAMPLE, replace=False)
            probes = probes[np.sort(chosen)]
        own, _ = index.search(probes, k + 1)  # each probe finds itself first
        typical = float(np.median(_mean_top(own[:, 1:], k)))
        near, _ = index.search(anchors, k)
        kept = _mean_top(near, k) < typical
        return cls(np.ascontiguousarray(anchors[kept], dtype=np.float32), k)

    def __len__(self) -> int:
        return len(self.anchors)

    def claims(self, query: Vectors, probe_scores: npt.NDArray[np.float32]) -> bool:
        """Whether a task (a unit vector) is nearer the anchors than the probes it is nearest
        to (``probe_scores``: its nearest probes' similarities, descending)."""
        if not len(self.anchors) or not probe_scores.size:
            return False
        sims = self.anchors.astype(np.float64) @ query.astype(np.float64).ravel()
        k = min(self.k, len(sims))
        anchors_mean = float(np.partition(sims, len(sims) - k)[-k:].mean())
        return anchors_mean > float(_mean_top(probe_scores.reshape(1, -1), self.k)[0])


FLOOR_QUANTILE = 0.01
"""The "fits no domain" floor: a task whose best domain similarity is below this quantile of
the suite's own probes' (each held out of its centroid), and whose lead over the runner-up is
below their median lead, gets no domain, i.e. ``all``. The lead keeps a task that is plainly
nearer one domain (on a suite of near-identical probes, whose floor is high) in that domain."""


@dataclass(frozen=True)
class DomainCentroids:
    """One unit vector per domain (the mean of its probes' embeddings) and the thresholds
    below which a task fits no domain, calibrated on the suite itself (leave-one-out): the
    floor of best similarity and the median lead (see :data:`FLOOR_QUANTILE`)."""

    domains: tuple[str, ...]
    centroids: npt.NDArray[np.float32]
    floor: float
    lead: float

    @classmethod
    def fit(cls, vectors: npt.NDArray[np.float32], membership: FloatArray,
            domains: tuple[str, ...]) -> DomainCentroids:
        """Centroids of ``vectors`` (unit rows) by ``membership`` (probes × domains, > 0 where
        a probe is in a domain), with thresholds from each probe scored against centroids
        built without it."""
        member = (membership > 0).astype(np.float64)
        data = vectors.astype(np.float64)
        sums = member.T @ data  # (domains, dim)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        centroids = (sums / np.maximum(norms, 1e-12)).astype(np.float32)
        dots = data @ sums.T  # (probes, domains): v·S_d
        # leave-one-out: a probe's own domains' sums lose the probe itself (|v| = 1)
        own_dots = dots - member
        own_sq = (norms.T ** 2) - 2 * dots * member + member
        loo = own_dots / np.sqrt(np.maximum(own_sq, 1e-12))
        if not len(data):
            return cls(domains, centroids, -1.0, 0.0)
        ranked = np.sort(loo, axis=1)
        lead = ranked[:, -1] - ranked[:, -2] if len(domains) > 1 else np.ones(len(data))
        return cls(domains, centroids, float(np.quantile(ranked[:, -1], FLOOR_QUANTILE)),
                   float(np.median(lead)))

    def weights(self, query: Vectors, temperature: float) -> dict[str, float]:
        """softmax(similarity / T) over the domains, or ``{}`` when the task fits none."""
        sims = self.centroids.astype(np.float64) @ query.astype(np.float64).ravel()
        ranked = np.sort(sims)
        lead = ranked[-1] - ranked[-2] if len(ranked) > 1 else np.inf
        if ranked[-1] < self.floor and lead < self.lead:
            return {}
        logits = sims / temperature
        w = np.exp(logits - logits.max())
        w /= w.sum()
        return _kept(self.domains, w)


def _kept(domains: Sequence[str], weights: FloatArray) -> dict[str, float]:
    """Weights below :data:`MIN_WEIGHT` dropped, the rest renormalised and rounded."""
    small = weights < MIN_WEIGHT
    if small.any() and not small.all():
        weights = np.where(small, 0.0, weights)
        weights /= weights.sum()
    return {domains[i]: round(w, 4) for i, w in enumerate(weights.tolist()) if w > 0}


class ProbeIndex:
    """Cosine kNN over probe embeddings (exact up to ``exact_limit`` probes), and the domain
    weights it implies."""

    def __init__(self, vectors: Vectors, probe_domains: Sequence[Sequence[str]],
                 exact_limit: int = EXACT_LIMIT) -> None:
        if len(vectors) != len(probe_domains):
            raise ValueError("one domain list per vector is needed")
        self.domains = tuple(sorted({d for ds in probe_domains for d in ds}))
        position = {d: i for i, d in enumerate(self.domains)}
        # membership[i] spreads probe i's vote evenly over its domains
        self._membership = np.zeros((len(probe_domains), len(self.domains)))
        for i, ds in enumerate(probe_domains):
            for d in ds:
                self._membership[i, position[d]] = 1.0 / len(ds)
        self.dim = int(vectors.shape[1]) if vectors.ndim == 2 else 0
        data = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        self.exact = len(data) <= exact_limit
        self._index: faiss.Index
        if self.exact:
            self._index = faiss.IndexFlatIP(self.dim)
        else:
            lists = max(1, min(round(2 * np.sqrt(len(data))), len(data) // MIN_LIST_SIZE))
            self._index = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, lists,
                                             faiss.METRIC_INNER_PRODUCT)
            self._index.train(data)  # k-means with faiss's fixed seed: the same lists each time
            self._index.nprobe = max(1, -(-lists // SCANNED_FRACTION))
        if len(data):
            self._index.add(data)
        self.vectors = data
        self.centroids = DomainCentroids.fit(data, self._membership, self.domains)
        self.elsewhere = Elsewhere(np.zeros((0, self.dim), dtype=np.float32), ELSEWHERE_K)
        """Everyday requests a task is compared with first (none until :meth:`away_from`)."""

    def away_from(self, anchors: Vectors, k: int = ELSEWHERE_K) -> ProbeIndex:
        """This index, comparing each task with the everyday requests ``anchors`` (unit
        vectors) first: a task nearer to them than to the probes fits no domain."""
        self.elsewhere = Elsewhere.fit(np.asarray(anchors, dtype=np.float32), self, k)
        return self

    @classmethod
    def build(cls, probes: Sequence[Probe], embedder: Embedder,
              exact_limit: int = EXACT_LIMIT, elsewhere: Sequence[str] = ()) -> ProbeIndex:
        """Embed the probes and the everyday requests ``elsewhere`` (blocking: call it off the
        event loop) and index them.

        A probe whose embedding cannot be scored (zero or non-finite) is left out of the index,
        with a warning naming it: it would vote for its domains with a meaningless score."""
        vectors = embedder.embed([question_text(p) for p in probes] + list(elsewhere))
        vectors, anchors = vectors[:len(probes)], vectors[len(probes):]
        usable = usable_rows(vectors)
        if not usable.all():
            _log.warning("index.probes_left_out", embedder=embedder.name,
                         probes=[p.id for p, ok in zip(probes, usable, strict=True) if not ok],
                         reason="embedding zero or not finite")
        kept = [p for p, ok in zip(probes, usable, strict=True) if ok]
        index = cls(vectors[usable], [p.domains for p in kept], exact_limit)
        return index.away_from(anchors) if len(elsewhere) else index

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def search(self, query: Vectors, k: int) -> tuple[npt.NDArray[np.float32],
                                                      npt.NDArray[np.int64]]:
        """The ``k`` nearest probes of each query row: (similarities, probe positions).

        An inverted file may find fewer than ``k``; the missing places have position -1.
        """
        scores, ids = self._index.search(np.ascontiguousarray(query, dtype=np.float32),
                                         min(k, len(self)))
        return scores, ids

    def domain_weights(self, query: Vectors, k: int, temperature: float) -> dict[str, float]:
        """Domain weights of one query vector: softmax(similarity / T) over its neighbours."""
        if len(self) == 0 or not usable_rows(query.reshape(1, -1)).all():
            return {}
        wanted = max(k, self.elsewhere.k) if len(self.elsewhere) else k
        scores, ids = self.search(query.reshape(1, -1), wanted)
        if self.elsewhere.claims(query, scores[0]):
            return {}
        return self.weights_from(scores[0, :k], ids[0, :k], temperature)

    def weights_from(self, scores: npt.NDArray[np.float32], ids: npt.NDArray[np.int64],
                     temperature: float) -> dict[str, float]:
        """Domain weights from a search result (split out so callers can time the search)."""
        keep = ids >= 0
        if not keep.all():
            scores, ids = scores[keep], ids[keep]
            if not ids.size:
                return {}
        logits = scores.astype(np.float64) / temperature
        weights = np.exp(logits - logits.max()) @ self._membership[ids]
        weights /= weights.sum()
        return _kept(self.domains, weights)

    def classify(self, query: Vectors, temperature: float) -> dict[str, float]:
        """Domain weights of one query by its similarity to each domain's centroid, or ``{}``
        (the caller's ``all``) when it fits no domain of the suite or is nearer elsewhere."""
        if len(self) == 0 or not usable_rows(query.reshape(1, -1)).all():
            return {}
        if len(self.elsewhere):
            scores, _ = self.search(query.reshape(1, -1), self.elsewhere.k)
            if self.elsewhere.claims(query, scores[0]):
                return {}
        return self.centroids.weights(query, temperature)
