"""In-process GGUF models through ``llama-cpp-python``.

How a request runs:

* the prompt is rendered to tokens — ``chat`` style with the chat template stored in the GGUF,
  ``completion`` style (base models) with :attr:`LlamaCppParams.completion_template` — and run
  with ``create_completion``. Rendering the chat template here instead of calling
  ``create_chat_completion`` gives one code path for both styles, exact prompt token counts,
  and first-token logprobs for chat models too;
* every llama.cpp call runs on the model's own single-thread executor, behind an
  :class:`asyncio.Lock`: one request at a time per loaded model, never on the event loop;
* ``n`` samples are ``n`` sequential generations seeded ``seed + i`` (``seed`` from the request,
  else from the params), so a request is reproducible;
* first-token top logprobs are read from the logits of the last prompt position, after one
  prompt evaluation: the model's own distribution, before temperature, which is what a
  ``choice`` probe is scored with.

Pool models that share a weights file (variants by system prompt or decoding) share one loaded
``Llama`` through a small cache kept in :attr:`BackendContext.extras`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np
import structlog

from profiles.protocol import (
    Message,
    Sample,
    SampleRequest,
    SampleResult,
    TokenLogprob,
    Usage,
    drawn_among,
    mix_seed,
)
from router.backends.base import BackendContext, BackendStatus, StreamDelta
from router.backends.llamacpp_batch import BatchDecoder, Decoding, Generated
from router.backends.params import LlamaCppParams
from router.backends.weights import INSTALL_HINT, WeightsNotFoundError, packaged, weights_status
from router.errors import (
    BadRequestError,
    DiffrouteError,
    ModelUnavailableError,
    UpstreamError,
)

if TYPE_CHECKING:
    from llama_cpp import Llama

    from router.backends.model_config import ModelConfig

T = TypeVar("T")
R = TypeVar("R")

CACHE_KEY = "llamacpp.models"
"""Where the shared-model cache lives in :attr:`BackendContext.extras`."""

_LOADING = threading.Lock()
"""One model load at a time in the process: llama-cpp-python silences a load by pointing the
process's stdout and stderr file descriptors at /dev/null and back, and two loads in two threads
at once can leave them pointing at /dev/null for good (every later line of the process lost)."""

BATCH_SEQUENCES = 32
"""At most this many requests of one prompt decoded together."""

CONFIG_DIR_KEY = "config_dir"
""":attr:`BackendContext.extras` key of the config file's directory (relative weight paths)."""


# ---------------------------------------------------------------------------- prompt rendering


def with_system(messages: Sequence[Message], system_prompt: str | None) -> list[dict[str, str]]:
    """The messages with ``system_prompt`` first, merged into a leading system message if any."""
    out = [dict(m) for m in messages]
    if not system_prompt:
        return out
    if out and out[0].get("role") == "system":
        out[0]["content"] = f"{system_prompt}\n\n{out[0].get('content', '')}"
        return out
    return [{"role": "system", "content": system_prompt}, *out]


def render_turns(messages: Sequence[Message]) -> str:
    """Non-system messages as plain text: one user message verbatim, else a labelled dialogue."""
    turns = [m for m in messages if m.get("role") != "system"]
    if len(turns) == 1 and turns[0].get("role") == "user":
        return turns[0].get("content", "")
    lines = [f"{m.get('role', 'user').capitalize()}: {m.get('content', '')}" for m in turns]
    return "\n".join([*lines, "Assistant:"])


def render_completion(params: LlamaCppParams, request: SampleRequest) -> str:
    """The plain-text prompt of a completion-style (base) model."""
    systems = [params.system_prompt or ""]
    if request.completion_prompt is not None:
        prompt = request.completion_prompt
    else:
        systems += [m.get("content", "") for m in request.messages if m.get("role") == "system"]
        prompt = render_turns(request.messages)
    system = "\n\n".join(s for s in systems if s)
    return params.completion_template.format(system=f"{system}\n\n" if system else "",
                                             prompt=prompt)


# ------------------------------------------------------------------------- llama.cpp's logs

_log = structlog.get_logger("diffroute.llamacpp")
_LLAMA_LOG_CALLBACK: Any = None
"""Our callback, kept alive here: llama.cpp holds only a C pointer to it."""


def route_llama_logs() -> None:
    """llama.cpp's own log lines (``llama_kv_cache_iswa: using full-size SWA cache…``) go
    through our logging — its errors as warnings, the rest at debug level — instead of
    straight to stderr, where llama-cpp-python's callback prints some of them whatever its
    verbosity (level-less lines pass its level check)."""
    global _LLAMA_LOG_CALLBACK
    if _LLAMA_LOG_CALLBACK is not None:
        return
    import ctypes

    import llama_cpp

    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator, misc, unused-ignore]
    def callback(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
        line = text.decode("utf-8", "replace").rstrip()
        with contextlib.suppress(Exception):  # nothing may raise into llama.cpp's C code
            if line and level == GGML_LOG_LEVEL_ERROR:
                _log.warning("llamacpp.log", line=line)
            elif line:
                _log.debug("llamacpp.log", line=line)

    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
    _LLAMA_LOG_CALLBACK = callback


GGML_LOG_LEVEL_ERROR = 4
"""``enum ggml_log_level`` of the ggml that llama-cpp-python builds (its ``include/ggml.h``:
NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5). llama-cpp-python's ``_logger.py`` comments an
older numbering where 3 was ERROR; with it the SWA cache notice (a WARN) read as an error."""


# ------------------------------------------------------------------------- the shared model


class _LoadError(Exception):
    """The model cannot be loaded; the message says why."""


@dataclass(slots=True)
class _Prompt:
    tokens: list[int]
    stop: list[str]


def _auto_batch() -> int:
    """512, or 1 when llama.cpp was built with AMX kernels.

    AMX matrix kernels run for multi-token batches only, and some VMs advertise AMX but kill the
    process with SIGILL on its first tile instruction. One token per decode avoids them at a
    small cost for these models; a build with ``-DGGML_NATIVE=OFF`` (no AMX) gets full batches.
    """
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode(errors="ignore")
    return 1 if "AMX_INT8 = 1" in info else 512


class _Loaded:
    """A loaded ``Llama`` and how to render chat prompts for it (used on the worker thread)."""

    def __init__(self, llama: Llama) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.llama = llama
        self._decoder: BatchDecoder | None = None
        model = llama._model  # the token texts are only exposed on the internal model
        self.eos = model.token_get_text(llama.token_eos()) if llama.token_eos() != -1 else ""
        bos = model.token_get_text(llama.token_bos()) if llama.token_bos() != -1 else ""
        template = llama.metadata.get("tokenizer.chat_template")
        self.formatter = Jinja2ChatFormatter(template, self.eos, bos) if template else None

    def chat_prompt(self, messages: list[dict[str, str]]) -> _Prompt:
        """Tokens of the chat template; the template adds its own special tokens (BOS)."""
        assert self.formatter is not None
        rendered = self.formatter(messages=messages)  # type: ignore[arg-type]
        tokens = self.llama.tokenize(rendered.prompt.encode(), add_bos=False, special=True)
        stop = rendered.stop if isinstance(rendered.stop, list) else [rendered.stop or ""]
        return _Prompt(tokens, [s for s in stop if s])

    def decoder(self) -> BatchDecoder:
        """The context that decodes several requests of one prompt at once, made on first use:
        :data:`BATCH_SEQUENCES` sequences in twice the main context's cells."""
        if self._decoder is None:
            n_ctx = self.llama.n_ctx()
            cells = max(n_ctx, min(2 * n_ctx, int(self.llama._model.n_ctx_train())))
            self._decoder = BatchDecoder(self.llama, BATCH_SEQUENCES, cells)
        return self._decoder

    def close(self) -> None:
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None
        self.llama.close()

    def text_prompt(self, text: str) -> _Prompt:
        """Tokens of plain text; user text is never parsed for special tokens."""
        tokens = self.llama.tokenize(text.encode(), add_bos=True, special=False)
        return _Prompt(tokens or [self.llama.token_bos()], [])


LLAMA_RANDOM_SEED = 0xFFFF_FFFF
"""The seed llama.cpp reads as "draw a random one" (``-1`` is the same 32 bits)."""


def llama_seed(seed: int) -> int:
    """The seed llama.cpp is given: its 32 low bits (all it keeps), with the one that means
    "random" moved to its neighbour — ``seed: -1`` or ``4294967295`` drew a new sample on
    every call, silently."""
    low = seed & 0xFFFF_FFFF
    return low - 1 if low == LLAMA_RANDOM_SEED else low


class SharedModel:
    """One GGUF, its lock and its single worker thread; shared by pool variants.

    Each variant gets its own llama.cpp context (the weights are loaded once per variant, so
    each keeps its own evaluated prompt): requests of one variant for one probe reuse the
    prompt's key-value cache even when another variant's requests come in between.
    """

    def __init__(self, weights: str, data_dir: Path, base_dir: Path | None,
                 params: LlamaCppParams) -> None:
        self.weights = weights
        self._data_dir = data_dir
        self._base_dir = base_dir
        self._params = params
        self.lock = asyncio.Lock()
        self.refs = 0
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="llamacpp")
        self._loaded: dict[str, _Loaded] = {}
        self._waiting: dict[tuple[str, str], list[tuple[Any, asyncio.Future[Any]]]] = {}
        self.loading = False
        """A background load (:meth:`preload`) is under way."""

    def is_loaded(self, member: str) -> bool:
        return member in self._loaded

    async def preload(self, member: str) -> bool:
        """Load ``member``'s context now (in the worker thread, under the lock: a request that
        comes first waits for the load instead of failing); ``False`` if it was loaded."""
        if member in self._loaded:
            return False
        self.loading = True
        try:
            await self.run(member, lambda loaded, stopped: None)
        finally:
            self.loading = False
        return True

    def loaded(self, member: str) -> _Loaded:
        """``member``'s context, loaded on first use (worker thread only)."""
        if member not in self._loaded:
            self._loaded[member] = _Loaded(self._load())
        return self._loaded[member]

    def _load(self) -> Llama:
        from router.backends.weights import resolve_weights

        path = resolve_weights(self.weights, self._data_dir, self._base_dir)
        try:
            from llama_cpp import Llama
        except ImportError:
            raise _LoadError(f"llama-cpp-python is not installed ({INSTALL_HINT})") from None
        p = self._params
        n_batch = p.n_batch or _auto_batch()
        route_llama_logs()
        # a configured thread count holds for prompts and batches too (llama-cpp-python would
        # give those every core; two models doing that on shared cores wait on each other)
        threads = {} if p.n_threads is None else {"n_threads": p.n_threads,
                                                   "n_threads_batch": p.n_threads}
        try:
            with _LOADING:
                return Llama(model_path=str(path), n_ctx=p.n_ctx, n_batch=n_batch,
                             n_ubatch=n_batch, logits_all=False, verbose=False,
                             **threads)  # type: ignore[arg-type]
        except (ValueError, RuntimeError, OSError) as exc:
            raise _LoadError(f"cannot load {path.name}: {exc}") from exc

    async def run(self, member: str, job: Callable[[_Loaded, Callable[[], bool]], T]) -> T:
        """Run ``job`` on ``member``'s context in the worker thread, one at a time; its second
        argument tells it whether the caller has left (a cancelled call stops generating)."""
        cancelled = threading.Event()
        async with self.lock:
            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(
                    self._executor, lambda: job(self.loaded(member), cancelled.is_set))
            except asyncio.CancelledError:
                cancelled.set()  # the worker stops at its next token
                raise

    async def together(self, member: str, key: str, item: R,
                       job: Callable[[_Loaded, list[R], Callable[[], bool]], list[T]]) -> T:
        """Run ``item`` with every other item of ``member`` under ``key`` that is waiting when
        the worker gets to it: ``job`` gets them all and returns one result per item.

        What one request waits for is unchanged (its turn at the lock); requests that wait at
        the same time for the same prompt share the turn (:mod:`router.backends.llamacpp_batch`).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        group_key = (member, key)
        self._waiting.setdefault(group_key, []).append((item, future))
        try:
            async with self.lock:
                if not future.done():
                    group = self._waiting.pop(group_key)
                    items = [i for i, _ in group]
                    # the group's work stops once every caller of the group has left
                    left = threading.Event()

                    def check(_: asyncio.Future[Any]) -> None:
                        if all(f.cancelled() for _, f in group):
                            left.set()

                    for _, waiting_future in group:
                        waiting_future.add_done_callback(check)
                    running = loop.run_in_executor(
                        self._executor, lambda: job(self.loaded(member), items, left.is_set))
                    running.add_done_callback(lambda done: _hand_out(group, done))
                    # a leader that leaves does not strand the rest; the group's failure is
                    # raised below, from this call's own future (left unawaited, asyncio would
                    # log it as "never retrieved")
                    with contextlib.suppress(Exception):
                        await asyncio.shield(running)
        except asyncio.CancelledError:
            waiting = self._waiting.get(group_key, [])
            if (item, future) in waiting:
                waiting.remove((item, future))
            future.cancel()  # a leader that leaves counts as gone for its group
            raise
        return await future

    def submit(self, job: Callable[[], None]) -> asyncio.Future[None]:
        """Start ``job`` on the worker thread (caller holds :attr:`lock`; job calls loaded())."""
        return asyncio.get_running_loop().run_in_executor(self._executor, job)

    async def close(self) -> None:
        """Free the weights and stop the worker thread."""
        async with self.lock:
            loaded, self._loaded = list(self._loaded.values()), {}
            for one in loaded:
                await asyncio.get_running_loop().run_in_executor(self._executor, one.close)
            self._executor.shutdown(wait=False)


def _hand_out(group: list[tuple[Any, asyncio.Future[Any]]], done: asyncio.Future[Any]) -> None:
    """Give each waiting item its result (or the group's failure)."""
    if done.cancelled():
        error: BaseException | None = asyncio.CancelledError()
    else:
        error = done.exception()
    results = done.result() if error is None else [None] * len(group)
    for (_, future), result in zip(group, results, strict=True):
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _weights_key(ref: str, base_dir: Path | None) -> str:
    if packaged(ref) is not None:
        return ref
    path = Path(ref).expanduser()
    return str(path if path.is_absolute() else (base_dir or Path.cwd()) / path)


def shared_model(context: BackendContext, params: LlamaCppParams) -> SharedModel:
    """The context's shared model for these weights and context size, created if needed.

    The first model to ask sets its threads and batch size; they change speed, not answers.
    """
    cache = cast(dict[tuple[str, int], SharedModel], context.extras.setdefault(CACHE_KEY, {}))
    base_dir = context.extras.get(CONFIG_DIR_KEY)
    key = (_weights_key(params.weights, base_dir), params.n_ctx)
    if key not in cache:
        cache[key] = SharedModel(params.weights, context.data_dir, base_dir, params)
    model = cache[key]
    model.refs += 1
    return model


# ------------------------------------------------------------------------------ generation


DRAWN_AMONG = 64
"""How many of the likeliest first tokens a sample's first token is looked for among."""


def first_token_logprobs(loaded: _Loaded, tokens: Sequence[int],
                         k: int) -> tuple[tuple[TokenLogprob, ...], tuple[TokenLogprob, ...]]:
    """The top ``k`` alternatives for the first token after the prompt, and the top
    :data:`DRAWN_AMONG` (or ``k``) among which ``drawn_among`` finds a sample's own.

    The prompt is evaluated once and the logits of its last position read directly, so the
    model needs no ``logits_all`` (which would copy a full vocabulary row — 262k floats for
    Gemma — for every token). The context's evaluated prefix is reused (the last prompt token
    is evaluated again to refresh the logits), and the next ``create_completion`` of the same
    prompt reuses it too, so a repeated prompt costs about one token.
    """
    from llama_cpp import Llama

    llama = loaded.llama
    keep = min(common_prefix(llama.input_ids[:llama.n_tokens].tolist(), tokens), len(tokens) - 1)
    if keep > 0 and llama._ctx.kv_cache_seq_rm(-1, keep, -1):
        llama.n_tokens = keep
    else:
        llama.reset()  # type: ignore[no-untyped-call]
        keep = 0
    llama.eval(list(tokens[keep:]))
    logits = np.ctypeslib.as_array(
        llama._ctx.get_logits(), shape=(llama.n_vocab(),))  # type: ignore[no-untyped-call]
    logprobs = Llama.logits_to_logprobs(np.array(logits, dtype=np.float32))
    wide = min(max(k, DRAWN_AMONG), logprobs.shape[0])
    top = np.argpartition(-logprobs, wide - 1)[:wide]
    top = top[np.argsort(-logprobs[top], kind="stable")]
    ranked = tuple(
        TokenLogprob(llama.detokenize([int(i)]).decode(errors="ignore"), float(logprobs[i]))
        for i in top
    )
    return ranked[:k], ranked


def common_prefix(evaluated: Sequence[int], tokens: Sequence[int]) -> int:
    """How many leading tokens ``tokens`` shares with the context's ``evaluated`` ones."""
    n = 0
    for a, b in zip(evaluated, tokens, strict=False):
        if a != b:
            break
        n += 1
    return n


class LlamaCppBackend:
    """The backend for ``kind: llamacpp``."""

    def __init__(self, name: str, params: LlamaCppParams, context: BackendContext) -> None:
        self._name = name
        self.params = params
        self._context = context
        self._shared: SharedModel | None = shared_model(context, params)

    @property
    def name(self) -> str:
        return self._name

    def identity(self) -> Mapping[str, object]:
        return self.params.identity()

    # -- helpers run on the worker thread

    def _prompt(self, loaded: _Loaded, request: SampleRequest) -> _Prompt:
        if self.params.prompt_style == "chat" and loaded.formatter is not None:
            prompt = loaded.chat_prompt(with_system(request.messages, self.params.system_prompt))
        else:
            prompt = loaded.text_prompt(render_completion(self.params, request))
        prompt.stop = [*prompt.stop, *request.stop]
        return prompt

    def _decoding(self, request: SampleRequest) -> Decoding:
        p = self.params
        temperature = p.temperature if p.temperature is not None else request.temperature
        return Decoding(request.max_tokens, temperature, p.top_p, p.top_k, p.min_p,
                         p.repeat_penalty)

    def _seed(self, request: SampleRequest) -> int:
        # the request's seed already carries the model's identity (profiles.collect); without
        # one, the configured seed is mixed with the pool name so two members given one seed
        # do not draw coupled samples
        return request.seed if request.seed is not None else mix_seed(self.params.seed,
                                                                       self._name)

    def _generate(self, loaded: _Loaded, request: SampleRequest,
                  stopped: Callable[[], bool] = lambda: False) -> tuple[list[Sample], Usage]:
        prompt = self._prompt(loaded, request)
        from llama_cpp import StoppingCriteriaList

        # llama.cpp checks this after every token: a caller that left stops the generation
        criteria = StoppingCriteriaList([lambda _ids, _logits: stopped()])
        decoding = self._decoding(request).kwargs()
        samples: list[Sample] = []
        completion_tokens = 0
        # the first-token distribution depends on the prompt only: once for all n samples
        top, ranked = (first_token_logprobs(loaded, prompt.tokens, request.top_logprobs)
                       if request.top_logprobs > 0 else ((), ()))
        for i in range(request.n):
            if stopped():
                break
            out = cast(dict[str, Any], loaded.llama.create_completion(
                prompt.tokens, stop=prompt.stop, seed=llama_seed(self._seed(request) + i),
                stopping_criteria=criteria, **decoding))
            choice = out["choices"][0]
            completion_tokens += int(out["usage"]["completion_tokens"])
            samples.append(Sample(choice["text"], choice["finish_reason"] or "stop", top,
                                  drawn_among(choice["text"], ranked)))
        return samples, Usage(len(prompt.tokens), completion_tokens)

    def _generate_together(self, loaded: _Loaded, requests: list[SampleRequest],
                           stopped: Callable[[], bool] = lambda: False
                           ) -> list[tuple[list[Sample], Usage]]:
        """One sample for each of these requests, which differ in their seeds only: decoded as
        sequences of one batch when there are several and they fit, else one by one."""
        prompt = self._prompt(loaded, requests[0])
        decoding = self._decoding(requests[0])
        n_prompt = len(prompt.tokens)
        if len(requests) == 1 or n_prompt + decoding.max_tokens > loaded.llama.n_ctx():
            return [self._generate(loaded, r, stopped) for r in requests]
        decoder = loaded.decoder()
        width = decoder.capacity(n_prompt, decoding.max_tokens)
        if width < 2:
            return [self._generate(loaded, r, stopped) for r in requests]
        out: list[tuple[list[Sample], Usage]] = []
        for start in range(0, len(requests), width):
            chunk = requests[start:start + width]
            seeds = [llama_seed(self._seed(r)) for r in chunk]
            made: list[Generated] = decoder.generate(prompt.tokens, prompt.stop, decoding,
                                                     seeds, stopped)
            out += [([Sample(g.text, g.finish_reason, ())], Usage(n_prompt, g.completion_tokens))
                    for g in made]
        return out

    def _stream_into(self, model: SharedModel, request: SampleRequest,
                     emit: Callable[[object], None], stopped: Callable[[], bool]) -> None:
        """Generate on the worker thread, handing each delta to ``emit``; ``stopped`` aborts."""
        try:
            import llama_cpp

            loaded = model.loaded(self._name)
            llama = loaded.llama
            prompt = self._prompt(loaded, request)
            # a text chunk is not a token (a character made of several tokens, text held back
            # while it may start a stop sequence): count the tokens the model draws, as
            # create_completion's usage does (an end-of-generation token is not counted)
            sampled: list[int] = []
            generate = llama.generate

            def counting(*args: Any, **kwargs: Any) -> Generator[int, Any, None]:
                for token in generate(*args, **kwargs):
                    sampled.append(token)
                    yield token

            llama.generate = counting  # type: ignore[method-assign]
            try:
                chunks = cast(Generator[dict[str, Any], None, None], llama.create_completion(
                    prompt.tokens, stop=prompt.stop, seed=llama_seed(self._seed(request)),
                    stream=True, **self._decoding(request).kwargs()))
                finish = "length"
                for chunk in chunks:
                    if stopped():
                        break
                    choice = chunk["choices"][0]
                    if choice["text"]:
                        emit(StreamDelta(choice["text"]))
                    finish = choice.get("finish_reason") or finish
                chunks.close()  # frees llama.cpp's generator state when the consumer left
            finally:
                del llama.generate
            count = len(sampled)
            if sampled and llama_cpp.llama_vocab_is_eog(llama._model.vocab, sampled[-1]):
                count -= 1
            emit(StreamDelta("", finish, Usage(len(prompt.tokens), count)))
        except BaseException as exc:  # handed over to the event loop, which re-raises it
            emit(exc)
        finally:
            emit(_END)

    # -- the Backend protocol

    def _model(self) -> SharedModel:
        if self._shared is None:
            raise ModelUnavailableError(self._name, "backend is closed")
        return self._shared

    async def sample(self, request: SampleRequest) -> SampleResult:
        started = time.perf_counter()
        model = self._model()
        try:
            if request.n == 1 and request.top_logprobs == 0:
                # requests for one prompt that wait together are decoded together
                key = repr(dataclasses.replace(request, seed=None))
                samples, usage = await model.together(self._name, key, request,
                                                      self._generate_together)
            else:
                samples, usage = await model.run(
                    self._name, lambda m, stopped: self._generate(m, request, stopped))
        except Exception as exc:
            raise self._translate(exc) from exc
        return SampleResult(self._name, tuple(samples), usage, time.perf_counter() - started)

    async def stream(self, request: SampleRequest) -> AsyncIterator[StreamDelta]:
        model = self._model()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        stop = False

        def emit(item: object) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        async with model.lock:
            model.submit(lambda: self._stream_into(model, request, emit, lambda: stop))
            try:
                while (item := await queue.get()) is not _END:
                    if isinstance(item, BaseException):
                        raise self._translate(item) from item
                    yield cast(StreamDelta, item)
            finally:
                stop = True  # a consumer that leaves early stops the generation

    async def check(self) -> BackendStatus:
        import importlib.util

        if importlib.util.find_spec("llama_cpp") is None:
            return BackendStatus("missing weights", f"llama-cpp-python missing ({INSTALL_HINT})")
        shared = self._shared
        if shared is not None and shared.is_loaded(self._name):
            return BackendStatus("ready", "weights loaded")
        if shared is not None and shared.loading:
            return BackendStatus("loading", "loading the weights in the background")
        status = weights_status(self.params.weights, self._context.data_dir,
                                self._context.extras.get(CONFIG_DIR_KEY))
        return BackendStatus("weights found" if status.found else "missing weights",
                             status.detail)

    async def warm(self) -> None:
        """Load the weights in the background (one ``model.ready`` line when done)."""
        shared = self._shared
        if shared is None:
            return
        started = time.perf_counter()
        try:
            loaded_now = await shared.preload(self._name)
        except Exception as exc:  # the first request reports it properly
            _log.warning("model.load_failed", model=self._name,
                         error=str(self._translate(exc)))
            return
        if loaded_now:
            _log.info("model.ready", model=self._name, weights=self.params.weights,
                      seconds=round(time.perf_counter() - started, 2))

    async def aclose(self) -> None:
        shared, self._shared = self._shared, None
        if shared is None:
            return
        shared.refs -= 1
        if shared.refs <= 0:
            cache = self._context.extras.get(CACHE_KEY, {})
            for key in [k for k, v in cache.items() if v is shared]:
                del cache[key]
            await shared.close()

    def _translate(self, exc: BaseException) -> DiffrouteError:
        """llama.cpp and loading failures as router errors carrying this model's name."""
        if isinstance(exc, DiffrouteError):
            return exc
        if isinstance(exc, WeightsNotFoundError | _LoadError):
            return ModelUnavailableError(self._name, str(exc))
        if isinstance(exc, ValueError) and "context window" in str(exc):
            return BadRequestError(f"model '{self._name}': {exc}", "messages",
                                   "context_length_exceeded")
        return UpstreamError(self._name, f"llama.cpp: {type(exc).__name__}: {exc}")


_END = object()
"""Marks the end of a streamed generation in the thread-to-loop queue."""


def create(model: ModelConfig, context: BackendContext) -> LlamaCppBackend:
    """Factory registered for ``kind: llamacpp``."""
    params = model.backend
    assert isinstance(params, LlamaCppParams)
    return LlamaCppBackend(model.name, params, context)
