"""The probe index: which of the suite's probes a task resembles, and so which domains it is in.

An exact inner-product faiss index (``IndexFlatIP``) over the L2-normalised embeddings of the
suite's probes, so scores are cosine similarities. A task's ``k`` nearest probes vote for their
domains with softmax weights over their similarities; the result is the domain weights the
policy averages similarity and competence with.
"""

from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np
import numpy.typing as npt

from profiles.embed import Embedder, Vectors
from profiles.probe import Probe

FloatArray = npt.NDArray[np.float64]
MIN_WEIGHT = 0.01
"""Domain weights below this are dropped (and the rest renormalised): noise, not evidence."""


def probe_text(probe: Probe) -> str:
    """The text of a probe as a task would look: its user turns."""
    return "\n".join(m.content for m in probe.messages if m.role == "user")


class ProbeIndex:
    """Exact cosine kNN over probe embeddings, and the domain weights it implies."""

    def __init__(self, vectors: Vectors, probe_domains: Sequence[Sequence[str]]) -> None:
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
        self._index = faiss.IndexFlatIP(self.dim)
        if len(vectors):
            self._index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    @classmethod
    def build(cls, probes: Sequence[Probe], embedder: Embedder) -> ProbeIndex:
        """Embed the probes (blocking: call it off the event loop) and index them."""
        vectors = embedder.embed([probe_text(p) for p in probes])
        return cls(vectors, [p.domains for p in probes])

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def search(self, query: Vectors, k: int) -> tuple[npt.NDArray[np.float32],
                                                      npt.NDArray[np.int64]]:
        """The ``k`` nearest probes of each query row: (similarities, probe positions)."""
        scores, ids = self._index.search(np.ascontiguousarray(query, dtype=np.float32),
                                         min(k, len(self)))
        return scores, ids

    def domain_weights(self, query: Vectors, k: int, temperature: float) -> dict[str, float]:
        """Domain weights of one query vector: softmax(similarity / T) over its neighbours."""
        if len(self) == 0 or not np.any(query):
            return {}
        scores, ids = self.search(query.reshape(1, -1), k)
        return self.weights_from(scores[0], ids[0], temperature)

    def weights_from(self, scores: npt.NDArray[np.float32], ids: npt.NDArray[np.int64],
                     temperature: float) -> dict[str, float]:
        """Domain weights from a search result (split out so callers can time the search)."""
        keep = ids >= 0
        logits = scores[keep].astype(np.float64) / temperature
        votes = np.exp(logits - logits.max())
        weights = votes @ self._membership[ids[keep]]
        weights /= weights.sum()
        weights = np.where(weights >= MIN_WEIGHT, weights, 0.0)
        weights /= weights.sum()
        return {self.domains[i]: round(float(weights[i]), 4) for i in np.flatnonzero(weights)}
