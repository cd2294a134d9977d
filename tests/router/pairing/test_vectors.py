"""The shipped suites' probe vectors ship with the package, so no start embeds them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from profiles.embed import make_embedder
from profiles.store import ObservationStore, text_hash
from router.embedded import default_settings
from router.pairing.decider import build_decider
from router.pairing.decision import RouteRequest
from router.pairing.pinned import Pairings
from router.pairing.vectors import shipped_texts, shipped_vectors
from router.pool import Pool

MINILM = "all-MiniLM-L6-v2"


def test_every_shipped_question_has_its_shipped_vector() -> None:
    shipped = shipped_vectors(MINILM)
    missing = [t for t in shipped_texts() if text_hash(t) not in shipped]
    assert not missing, f"regenerate with: python -m router.pairing.vectors ({missing[:3]})"


def test_the_shipped_vectors_are_what_the_embedder_computes() -> None:
    texts = shipped_texts()[::29]
    fresh = make_embedder("minilm").embed(texts)
    shipped = np.stack([shipped_vectors(MINILM)[text_hash(t)] for t in texts])
    assert fresh.shape == shipped.shape and np.allclose(fresh, shipped, atol=1e-4)


def test_a_fresh_data_dir_starts_without_embedding_a_probe(tmp_path: Path) -> None:
    settings = default_settings(tmp_path)
    decider = build_decider(settings, Pool(settings), Pairings())
    assert decider.embedder is not None and decider.embedder.name == MINILM
    with ObservationStore.in_data_dir(settings.data_dir) as store:
        assert store.get_embeddings(MINILM, shipped_texts()) == {}
    weights = decider.task_domains(RouteRequest(
        role="audit", task="What is the boiling point of water in Kelvin?"))
    assert max(weights, key=weights.__getitem__) == "science"
