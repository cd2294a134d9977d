"""Several requests for one prompt decoded together: one llama.cpp batch, one sequence each.

A profile build asks a local model for k samples of every probe, each its own request with its
own seed. Decoding them one after the other streams the weights through the core once per token
per sample; decoding them as sequences of one batch streams them once per token for all of them
(``benchmarks/collect.py`` measures the gain). Each sequence keeps what makes it its own
request: its own seed and its own sampler chain, built exactly as ``Llama.create_completion``
builds it (penalties over the last 64 generated tokens, then top-k, typical, top-p, min-p,
temperature and the seeded draw), its own stop sequences and token limit. The prompt is
evaluated once and its key-value cells copied to every sequence; nothing else is shared, so the
samples are as independent as the requests' seeds make them, and a request's sample follows the
same distribution as on its own (up to the rounding of batched matrix products).

The batch runs on a second llama.cpp context of the same loaded weights, made on first use, on
the model's worker thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llama_cpp import Llama

PENALTY_LAST_N = 64
"""``Llama``'s ``last_n_tokens_size`` default: the window of its repetition penalty."""


@dataclass(frozen=True, slots=True)
class Decoding:
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    repeat_penalty: float

    def kwargs(self) -> dict[str, Any]:
        """As ``Llama.create_completion``'s keyword arguments."""
        return {"max_tokens": self.max_tokens, "temperature": self.temperature,
                "top_p": self.top_p, "top_k": self.top_k, "min_p": self.min_p,
                "repeat_penalty": self.repeat_penalty}


@dataclass(frozen=True, slots=True)
class Generated:
    text: str
    finish_reason: str
    completion_tokens: int


def sampler_chain(llama: Llama, decoding: Decoding, seed: int) -> Any:
    """The sampler ``Llama.create_completion`` would use for this decoding and seed."""
    from llama_cpp._internals import LlamaSampler

    sampler = LlamaSampler()  # type: ignore[no-untyped-call]
    sampler.add_penalties(n_vocab=llama.n_vocab(), penalty_last_n=PENALTY_LAST_N,
                          penalty_repeat=decoding.repeat_penalty, penalty_freq=0.0,
                          penalty_present=0.0)
    if decoding.temperature < 0:
        sampler.add_dist(seed)
    elif decoding.temperature == 0:
        sampler.add_greedy()  # type: ignore[no-untyped-call]
    else:
        sampler.add_top_k(decoding.top_k)
        sampler.add_typical(1.0, 1)
        sampler.add_top_p(decoding.top_p, 1)
        sampler.add_min_p(decoding.min_p, 1)
        sampler.add_temp(decoding.temperature)
        sampler.add_dist(seed)
    return sampler


def _incomplete_utf8(text: bytes) -> bool:
    """Whether ``text`` ends inside a multi-byte character (its stop check waits a token)."""
    for back in range(1, min(4, len(text)) + 1):
        byte = text[-back]
        if byte & 0xC0 != 0x80:  # the lead byte of the last character
            width = 4 if byte >= 0xF0 else 3 if byte >= 0xE0 else 2 if byte >= 0xC0 else 1
            return width > back
    return False


class _Sequence:
    """One request's generation: its sampler, tokens and stop rules."""

    def __init__(self, llama: Llama, prompt: list[int], sampler: Any, stop: list[bytes],
                 max_tokens: int) -> None:
        self.llama = llama
        self.prompt = prompt
        self.sampler = sampler
        self.stop = stop
        self.max_tokens = max_tokens
        self.tokens: list[int] = []
        self.result: Generated | None = None

    def take(self, token: int) -> bool:
        """Add a sampled token; ``True`` while the sequence goes on."""
        import llama_cpp

        llama = self.llama
        if llama_cpp.llama_vocab_is_eog(llama._model.vocab, token):
            return self._finish(self._text(), "stop")
        self.tokens.append(token)
        text = self._text()
        if not _incomplete_utf8(text):
            for stop in self.stop:
                if stop in text:
                    return self._finish(text[:text.index(stop)], "stop")
        if len(self.tokens) >= self.max_tokens:
            return self._finish(text, "length")
        return True

    def _text(self) -> bytes:
        return self.llama.detokenize(self.tokens, prev_tokens=self.prompt)

    def _finish(self, text: bytes, reason: str) -> bool:
        self.result = Generated(text.decode("utf-8", errors="ignore"), reason, len(self.tokens))
        return False


class BatchDecoder:
    """A second context of ``llama``'s weights that decodes up to ``n_seq`` sequences at once."""

    def __init__(self, llama: Llama, n_seq: int, n_ctx: int) -> None:
        import llama_cpp
        from llama_cpp._internals import LlamaBatch, LlamaContext

        params = type(llama.context_params).from_buffer_copy(llama.context_params)
        params.n_ctx = n_ctx
        params.n_seq_max = n_seq
        params.kv_unified = True
        # the graph holds a row of logits per token of a micro-batch (Gemma: 1 MB a row); a
        # decode step has one token per sequence, and a long prompt is cut into micro-batches
        params.n_ubatch = min(int(params.n_ubatch), max(64, n_seq))
        self.llama = llama
        self.n_seq = n_seq
        self.n_ctx = n_ctx
        self.n_batch = int(params.n_batch)
        self._ctx = LlamaContext(model=llama._model, params=params, verbose=False)
        self._batch = LlamaBatch(n_tokens=max(self.n_batch, n_seq), embd=0, n_seq_max=n_seq,
                                 verbose=False)
        self._memory = llama_cpp.llama_get_memory(self._ctx.ctx)

    def close(self) -> None:
        self._batch.close()  # type: ignore[no-untyped-call]
        self._ctx.close()  # type: ignore[no-untyped-call]

    def capacity(self, prompt_tokens: int, max_tokens: int) -> int:
        """How many sequences of this prompt and limit fit at once (0: not even one)."""
        return max(0, min(self.n_seq, (self.n_ctx - prompt_tokens) // max(1, max_tokens)))

    def generate(self, prompt: list[int], stop: Sequence[str], decoding: Decoding,
                 seeds: Sequence[int], stopped: Callable[[], bool] = lambda: False
                 ) -> list[Generated]:
        """One sample per seed (at most :meth:`capacity` of them); ``stopped``: every caller
        has left, the unfinished sequences end where they are."""
        import llama_cpp

        if not 0 < len(seeds) <= self.capacity(len(prompt), decoding.max_tokens):
            raise ValueError(f"{len(seeds)} sequences do not fit the batch context")
        llama, ctx, batch = self.llama, self._ctx, self._batch
        llama_cpp.llama_memory_clear(self._memory, True)
        last = 0
        for start in range(0, len(prompt), self.n_batch):
            chunk = prompt[start:start + self.n_batch]
            batch.set_batch(chunk, n_past=start, logits_all=False)
            ctx.decode(batch)
            last = len(chunk) - 1
        for seq in range(1, len(seeds)):
            llama_cpp.llama_memory_seq_cp(self._memory, 0, seq, -1, -1)
        stops = [s.encode() for s in stop if s]
        seqs = [_Sequence(llama, prompt, sampler_chain(llama, decoding, seed), stops,
                          decoding.max_tokens) for seed in seeds]
        active = [(i, s) for i, s in enumerate(seqs)
                  if s.take(int(s.sampler.sample(ctx, last)))]
        raw = batch.batch
        while active:
            if stopped():
                for _, s in active:
                    s._finish(s._text(), "stop")
                break
            raw.n_tokens = len(active)
            for row, (seq_id, s) in enumerate(active):
                raw.token[row] = s.tokens[-1]
                raw.pos[row] = len(prompt) + len(s.tokens) - 1
                raw.n_seq_id[row] = 1
                raw.seq_id[row][0] = seq_id
                raw.logits[row] = True
            ctx.decode(batch)
            active = [(seq_id, s) for row, (seq_id, s) in enumerate(active)
                      if s.take(int(s.sampler.sample(ctx, row)))]
        out = []
        for s in seqs:
            s.sampler.close()
            assert s.result is not None
            out.append(s.result)
        return out
