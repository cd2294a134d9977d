"""Task-embedder vectors of the shipped suites' probes, shipped with the package.

The policy routes a task by the nearest probes' domains, so at every start it needs a vector
for every probe's question. The default task embedder (all-MiniLM-L6-v2) takes seconds for the
default suite on an idle machine and a minute on a busy one; the vectors of the shipped suites
(and of the everyday requests a task is compared with first) are therefore computed once,
here, and shipped (``router/data/vectors/<embedder>.npz``: text
hashes and float32 vectors). Other texts (your own suites) are embedded once per data dir
(:class:`router.profiling.sources.StoredEmbedder`).

Regenerate after changing a shipped suite or the embedder (a test fails until you do)::

    python -m router.pairing.vectors
"""

from __future__ import annotations

import functools
from importlib import resources
from io import BytesIO
from pathlib import Path

import numpy as np

from profiles.embed import Embedder, make_embedder
from profiles.store import text_hash
from profiles.suite import load_suite
from router.pairing.index import elsewhere_texts, question_text

SHIPPED_SUITES = ("default", "smoke")
VECTORS = "data/vectors"


def shipped_texts() -> list[str]:
    """The question texts of the shipped suites' probes, each once, in suite order, then the
    everyday requests a task is compared with first (``index.elsewhere_texts``)."""
    texts = [question_text(p) for name in SHIPPED_SUITES for p in load_suite(name).probes]
    return list(dict.fromkeys(texts + elsewhere_texts()))


@functools.lru_cache(maxsize=4)
def shipped_vectors(embedder: str) -> dict[str, np.ndarray]:
    """Text hash → vector shipped for ``embedder`` (empty when none is shipped)."""
    entry = resources.files("router").joinpath(f"{VECTORS}/{embedder}.npz")
    if not entry.is_file():
        return {}
    with np.load(BytesIO(entry.read_bytes())) as data:
        hashes, vectors = data["hashes"], data["vectors"]
    return {str(h): v for h, v in zip(hashes, vectors, strict=True)}


def write_shipped(embedder: Embedder) -> int:
    """Embed the shipped suites' questions and write them to the package data; the count."""
    texts = shipped_texts()
    vectors = embedder.embed(texts).astype(np.float32)
    path = Path(str(resources.files("router").joinpath(VECTORS)))  # an editable install
    path.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path / f"{embedder.name}.npz",
                        hashes=np.array([text_hash(t) for t in texts]), vectors=vectors)
    return len(texts)


if __name__ == "__main__":
    print(f"{write_shipped(make_embedder('minilm'))} vectors written")
