"""The probe index: nearest probes of a task, and the domain weights they vote for."""

from __future__ import annotations

import numpy as np

from profiles.embed import HashEmbedder
from router.pairing.index import ProbeIndex
from router.testing.simulate import simulated_suite


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


def clustered(n: int, domains: int, dim: int, seed: int) -> tuple[np.ndarray, list[list[str]],
                                                                  np.ndarray]:
    """Unit vectors around one centre per domain (as a suite's probes cluster by domain)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (domains, dim))
    owner = rng.integers(0, domains, n)
    vectors = centres[owner] + rng.normal(0, 0.8, (n, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), [[f"d{o}"] for o in owner], centres


def test_a_large_index_searches_an_inverted_file_with_the_exact_answers() -> None:
    vectors, domains, centres = clustered(6000, 6, 64, seed=3)
    exact = ProbeIndex(vectors, domains, exact_limit=len(vectors))
    fast = ProbeIndex(vectors, domains, exact_limit=1000)
    assert exact.exact and not fast.exact and len(fast) == len(exact) == 6000
    rng = np.random.default_rng(4)
    queries = centres[rng.integers(0, 6, 64)] + rng.normal(0, 0.8, (64, 64))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    want_scores, want = exact.search(queries, 16)
    got_scores, got = fast.search(queries, 16)
    recall = np.mean([len(set(a) & set(b)) / 16 for a, b in zip(want, got, strict=True)])
    assert recall >= 0.95  # a missed neighbour is replaced by a near-equal one
    # what it returns is scored exactly: the same similarity for the same probe
    same = got == want
    assert same.mean() > 0.5 and np.allclose(got_scores[same], want_scores[same], atol=1e-5)
    # and what the policy reads from it, the domain weights, does not move
    for q in queries:
        w_exact, w_fast = exact.domain_weights(q, 16, 0.05), fast.domain_weights(q, 16, 0.05)
        assert set(w_exact) == set(w_fast)
        assert all(abs(w_exact[d] - w_fast[d]) <= 0.02 for d in w_exact)
    # the same vectors give the same lists: decisions do not depend on the build
    again = ProbeIndex(vectors, domains, exact_limit=1000)
    assert np.array_equal(again.search(queries, 16)[1], got)


def test_a_probe_with_an_unusable_embedding_is_left_out_of_the_index() -> None:
    from collections.abc import Sequence

    from structlog.testing import capture_logs

    from profiles.embed import Vectors

    suite = simulated_suite(["history", "law"], 4)
    broken = suite.probes[1].id

    class Broken:
        name, dim = "broken", 64

        def embed(self, texts: Sequence[str]) -> Vectors:
            vectors = HashEmbedder(64).embed(texts)
            vectors[1] = np.nan
            return vectors

        async def aembed(self, texts: Sequence[str]) -> Vectors:
            return self.embed(texts)

    with capture_logs() as logs:
        index = ProbeIndex.build(suite.probes, Broken())
    assert len(index) == len(suite.probes) - 1
    assert logs[0]["event"] == "index.probes_left_out" and logs[0]["probes"] == [broken]
    query = HashEmbedder(64).embed(["[law] which option holds?"])[0]
    weights = index.domain_weights(query, 4, 0.05)
    assert weights and np.isfinite(list(weights.values())).all()
    assert index.domain_weights(np.full(64, np.nan, dtype=np.float32), 4, 0.05) == {}


def test_centroids_classify_a_task_and_leave_an_unrelated_one_to_all() -> None:
    vectors = np.stack([unit(1, 0.1, 0), unit(1, -0.1, 0), unit(0.1, 1, 0), unit(-0.1, 1, 0)])
    index = ProbeIndex(vectors, [["law"], ["law"], ["math"], ["math"]])
    law = index.classify(unit(1, 0.2, 0), temperature=0.05)
    assert max(law, key=law.__getitem__) == "law" and law["law"] > 0.9
    # the suite's own probes all lie near a centroid; a task orthogonal to both fits none
    assert index.classify(unit(0, 0, 1), temperature=0.05) == {}
    assert index.classify(np.zeros(3, dtype=np.float32), 0.05) == {}


def test_a_task_nearer_everyday_requests_than_the_probes_fits_no_domain() -> None:
    vectors = np.stack([unit(1, 0.4, 0, 0), unit(1, -0.4, 0, 0), unit(1, 0, 0.4, 0),
                        unit(0.4, 1, 0, 0), unit(-0.4, 1, 0, 0), unit(0, 1, 0.4, 0)])
    domains = [["law"]] * 3 + [["math"]] * 3
    # a cooking request: above the suite's own floor (so the floor alone calls it law), yet
    # nearer the everyday requests than the law probes
    cooking = unit(1, 0, 0, 0.6)
    plain = ProbeIndex(vectors, domains)
    assert plain.classify(cooking, 0.05) == {"law": 1.0}
    assert plain.domain_weights(cooking, 3, 0.05) == {"law": 1.0}
    anchors = np.stack([unit(1, 0, 0, 1), unit(1, 0, 0.2, 1), unit(0, 0, 0, 1),
                        unit(1, 0.05, 0.1, 0)])  # the last is the suite's own topic: left out
    index = ProbeIndex(vectors, domains).away_from(anchors, k=2)
    assert len(index.elsewhere) == 3
    assert index.classify(cooking, 0.05) == {} and index.domain_weights(cooking, 3, 0.05) == {}
    question = unit(1, 0.05, 0, 0.1)  # a law question still is one
    assert index.classify(question, 0.05) == {"law": 1.0}
    assert index.domain_weights(question, 3, 0.05) == {"law": 1.0}


def test_elsewhere_needs_a_suite_whose_probes_have_neighbours() -> None:
    index = ProbeIndex(np.stack([unit(1, 0, 0)]), [["law"]]).away_from(np.stack([unit(0, 1, 0)]))
    assert len(index.elsewhere) == 0 and index.classify(unit(0.2, 1, 0), 0.05)


def test_question_text_leaves_out_the_answer_scaffolding() -> None:
    from router.pairing.index import question_text
    probe = next(p for p in simulated_suite(["law"], 2).probes if p.type == "choice")
    text = question_text(probe)
    assert text and "Answer with" not in text and "\nA. " not in f"\n{text}"
