"""The probe index: nearest probes of a task, and the domain weights they vote for."""

from __future__ import annotations

import numpy as np

from profiles.embed import HashEmbedder
from router.index import ProbeIndex
from router.simulate import simulated_suite


def unit(*xs: float) -> np.ndarray:
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_neighbours_vote_for_their_domains() -> None:
    vectors = np.stack([unit(1, 0, 0), unit(1, 0.1, 0), unit(0, 1, 0), unit(0, 0, 1)])
    index = ProbeIndex(vectors, [["law"], ["law"], ["math"], ["math", "law"]])
    assert index.domains == ("law", "math") and len(index) == 4
    scores, ids = index.search(unit(1, 0.05, 0).reshape(1, -1), 2)
    assert sorted(ids[0].tolist()) == [0, 1] and scores[0][0] > 0.99
    law = index.domain_weights(unit(1, 0.05, 0), k=4, temperature=0.05)
    assert law["law"] > 0.95 and abs(sum(law.values()) - 1) < 1e-3
    # a probe tagged with two domains splits its vote
    both = index.domain_weights(unit(0, 0, 1), k=1, temperature=0.05)
    assert both == {"law": 0.5, "math": 0.5}
    # a smoother temperature lets farther neighbours count
    soft = index.domain_weights(unit(1, 0.05, 0), k=4, temperature=10.0)
    assert soft["math"] > 0.2
    assert index.domain_weights(np.zeros(3, dtype=np.float32), 4, 0.05) == {}


def test_task_text_finds_its_domain_with_the_hash_embedder() -> None:
    suite = simulated_suite(["history", "law", "math"], 10)
    index = ProbeIndex.build(suite.probes, HashEmbedder(256))
    embed = HashEmbedder(256).embed
    for domain in ("history", "law", "math"):
        weights = index.domain_weights(embed([f"[{domain}] which option holds?"])[0], 8, 0.05)
        assert max(weights, key=weights.__getitem__) == domain
