"""The probe index: which of the suite's probes a task resembles, and so which domains it is in.

An inner-product search over the L2-normalised embeddings of the suite's probes, so
scores are cosine similarities. A task's ``k`` nearest probes vote for their domains with
softmax weights over their similarities; the result is the domain weights the policy averages
similarity and competence with.

Up to ``exact_limit`` probes (:data:`EXACT_LIMIT` by default; the shipped suites have a few
hundred) the index is a faiss ``IndexFlatIP``: exact. Past it, one query's flat scan is bound by
memory bandwidth (20,000 × 256 floats are 20 MB, about a millisecond on a 2-core VM), so the
index becomes an inverted file (``IndexIVFFlat``, about 2·√n lists, an eighth of them scanned):
the neighbours it returns carry exact float32 similarities, but a true neighbour can be missed.
``benchmarks/policy.py`` measures that recall against the exact scan (1.00 at 20,000 probes).
"""

from __future__ import annotations

from collections.abc import Sequence

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

    @classmethod
    def build(cls, probes: Sequence[Probe], embedder: Embedder,
              exact_limit: int = EXACT_LIMIT) -> ProbeIndex:
        """Embed the probes (blocking: call it off the event loop) and index them.

        A probe whose embedding cannot be scored (zero or non-finite) is left out of the index,
        with a warning naming it: it would vote for its domains with a meaningless score."""
        vectors = embedder.embed([probe_text(p) for p in probes])
        usable = usable_rows(vectors)
        if not usable.all():
            _log.warning("index.probes_left_out", embedder=embedder.name,
                         probes=[p.id for p, ok in zip(probes, usable, strict=True) if not ok],
                         reason="embedding zero or not finite")
        kept = [p for p, ok in zip(probes, usable, strict=True) if ok]
        return cls(vectors[usable], [p.domains for p in kept], exact_limit)

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
        scores, ids = self.search(query.reshape(1, -1), k)
        return self.weights_from(scores[0], ids[0], temperature)

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
        small = weights < MIN_WEIGHT
        if small.any():
            weights[small] = 0.0
            weights /= weights.sum()
        # one conversion to Python floats, not one numpy scalar per domain
        return {self.domains[i]: round(w, 4) for i, w in enumerate(weights.tolist()) if w > 0}
