"""The backend for any OpenAI-compatible HTTP endpoint (vLLM, llama.cpp server, Ollama, OpenAI).

A call goes ``sample → _complete (one POST, read whole) → _post`` or ``stream → _open (the
response read as it comes)``, both through ``_retrying`` (status errors, retries of transient
failures, translation). Every transport or JSON error is translated at this boundary, so
callers only ever see the :mod:`router.errors` tree::

    429                              UpstreamRateLimitError(retry_after)
    other 4xx / 5xx                  UpstreamError(status, body, upstream message)
    connect/read/total timeout       UpstreamTimeoutError
    refused, reset, DNS              UpstreamConnectionError
    bad JSON, truncated, no choices  UpstreamProtocolError

HTTP goes through :class:`~router.backends.http1.Http1Client` (keep-alive HTTP/1.1 on
``httptools``; three times cheaper per call than aiohttp's session, ``benchmarks/README.md``).
All backends of a process share the one of the :class:`~router.backends.base.BackendContext`; a
backend built without one creates its own and closes it in :meth:`OpenAIBackend.aclose`.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from profiles.protocol import (
    Sample,
    SampleRequest,
    SampleResult,
    TokenLogprob,
    Usage,
    mix_seed,
)
from router import __version__
from router.backends.base import (
    CALL_DEADLINE,
    BackendContext,
    BackendStatus,
    StreamDelta,
    TraceHead,
)
from router.backends.http1 import (
    Endpoint,
    Http1Client,
    HttpProtocolError,
    HttpStream,
    HttpTimeouts,
    encode_headers,
)
from router.backends.params import OpenAIParams
from router.errors import (
    ModelUnavailableError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRateLimitError,
    UpstreamRequestError,
    UpstreamTimeoutError,
)
from router.json_depth import MAX_WRITTEN_DEPTH, too_deep_to_write
from router.secrets import redact

if TYPE_CHECKING:
    from router.backends.model_config import ModelConfig

MAX_TOP_LOGPROBS = 20
"""The most alternatives the OpenAI API returns per token."""

T = TypeVar("T")
_BACKOFF_S = 0.5
_BACKOFF_CAP_S = 8.0
_CHECK_TIMEOUT_S = 10.0
_GET_HEADERS = {"Accept": "application/json", "Accept-Encoding": "gzip, deflate",
                "User-Agent": f"diffroute/{__version__}"}
_JSON_POST_HEADERS = {**_GET_HEADERS, "Content-Type": "application/json",
                      "Accept": "application/json, text/event-stream"}


# --- the subset of the OpenAI wire format we read; extra fields are ignored -------------------
# A whole completion is read by hand (json + a few type checks: the hot path of every proxied
# call, where pydantic cost more than the rest of the parsing); stream chunks by pydantic.


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Usage(_Wire):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Delta(_Wire):
    content: str | None = None


class _ChunkChoice(_Wire):
    delta: _Delta = Field(default_factory=_Delta)
    finish_reason: str | None = None


class _Chunk(_Wire):
    choices: list[_ChunkChoice] = Field(default_factory=list)
    usage: _Usage | None = None


# --- pure helpers ------------------------------------------------------------------------------


MAX_RETRY_AFTER_S = 86_400.0
"""An upstream's ``Retry-After`` is believed up to a day (``inf`` or 1e300 would be passed on)."""


def _float(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _wait(seconds: float) -> float | None:
    """Non-negative and at most a day; ``None`` where not finite."""
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S) if math.isfinite(seconds) else None


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` (OpenAI) or ``Retry-After`` (seconds, HTTP date),
    at most :data:`MAX_RETRY_AFTER_S`; ``None`` where neither says a finite time."""
    headers = {k.lower(): v for k, v in headers.items()}
    millis = headers.get("retry-after-ms")
    if millis is not None and (number := _float(millis)) is not None:
        return _wait(number / 1000)
    value = headers.get("retry-after")
    if value is None:
        return None
    if (number := _float(value)) is not None:
        return _wait(number)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return _wait(when.timestamp() - (time.time() if now is None else now))


def upstream_message(body: str) -> str | None:
    """The ``error.message`` of an OpenAI error envelope (or a plain ``message``), if any."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    error = data.get("error", data)
    if isinstance(error, str):
        return error
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    return None


def _status_error(model: str, status: int, reason: str, body: str,
                  headers: Mapping[str, str]) -> UpstreamError:
    message = upstream_message(body) or f"HTTP {status} {reason}".rstrip()
    if status == 429:
        return UpstreamRateLimitError(model, message, status, body, parse_retry_after(headers))
    if status in REQUEST_ERRORS:
        param, code = _envelope_fields(body)
        return UpstreamRequestError(model, message, status, body, param, code)
    error = UpstreamError(model, message, status, body)
    if status >= 500:  # "overloaded, come back in N s" (503): the wait is passed on too
        error.retry_after = parse_retry_after(headers)
    return error


MIN_SECRET = 8
"""Length from which a key or configured header value is taken out of upstream error texts."""

REQUEST_ERRORS = frozenset({400, 413, 422})
"""Upstream statuses that refuse the request itself: passed on to the client as they are."""


def _envelope_fields(body: str) -> tuple[str | None, str | None]:
    """``error.param`` and ``error.code`` of an OpenAI error envelope (strings), if any."""
    try:
        data = json.loads(body)
    except ValueError:
        return None, None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None, None
    param, code = error.get("param"), error.get("code")
    return (param if isinstance(param, str) else None,
            code if isinstance(code, str) else None)


@dataclass(frozen=True, slots=True)
class _Completion:
    """The parts of a ``chat.completion`` we use."""

    samples: list[Sample]
    usage: Usage


class _Malformed(ValueError):
    """A completion body without the shape we read; the message names the field."""


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Malformed(f"{where}: expected an object")
    return value


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise _Malformed(f"{where}: expected a string")
    return value


def _optional_text(value: object, where: str) -> str | None:
    return None if value is None else _text(value, where)


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Malformed(f"{where}: expected a number")
    return float(value)


def _count(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Malformed(f"{where}: expected an integer")
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _Malformed(f"{where}: expected a list")
    return value


def _first_token_logprobs(value: object, where: str
                          ) -> tuple[tuple[TokenLogprob, ...], TokenLogprob | None]:
    """The first token's alternatives and the token drawn, from an OpenAI ``logprobs``."""
    if value is None:
        return (), None
    content = _object(value, where).get("content")
    if not content:
        return (), None
    first = _object(_list(content, f"{where}.content")[0], f"{where}.content.0")
    token = _text(first.get("token"), f"{where}.content.0.token")
    logprob = _number(first.get("logprob"), f"{where}.content.0.logprob")
    top = _list(first.get("top_logprobs") or [], f"{where}.content.0.top_logprobs")
    alternatives = []
    for i, alt in enumerate(top):
        at = f"{where}.content.0.top_logprobs.{i}"
        alt = _object(alt, at)
        alternatives.append(TokenLogprob(_text(alt.get("token"), f"{at}.token"),
                                         _number(alt.get("logprob"), f"{at}.logprob")))
    drawn = TokenLogprob(token, logprob)
    # some servers give the chosen token but no alternatives: it is still a usable estimate
    return tuple(alternatives) or (drawn,), drawn


def _to_sample(choice: object, where: str) -> Sample:
    choice = _object(choice, where)
    message = _object(choice.get("message"), f"{where}.message")
    top, drawn = _first_token_logprobs(choice.get("logprobs"), f"{where}.logprobs")
    return Sample(
        text=_optional_text(message.get("content"), f"{where}.message.content") or "",
        finish_reason=_optional_text(choice.get("finish_reason"),
                                     f"{where}.finish_reason") or "stop",
        first_token_logprobs=top, first_token=drawn,
    )


def _completion_usage(value: object) -> Usage:
    if value is None:
        return Usage()
    usage = _object(value, "usage")
    return Usage(_count(usage.get("prompt_tokens", 0), "usage.prompt_tokens"),
                 _count(usage.get("completion_tokens", 0), "usage.completion_tokens"))


def _to_usage(usage: _Usage | None) -> Usage:
    return Usage(usage.prompt_tokens, usage.completion_tokens) if usage else Usage()


def _add_usage(a: Usage, b: Usage) -> Usage:
    return Usage(a.prompt_tokens + b.prompt_tokens, a.completion_tokens + b.completion_tokens)


def _first_problem(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(map(str, err["loc"]))
    return f"{where}: {err['msg']}" if where else err["msg"]


def completion_object(model: str, raw: bytes, status: int) -> dict[str, Any]:
    """A ``chat.completion`` body as JSON data, checked only for what every reader needs (an
    object with a non-empty ``choices`` list, each choice with a ``message`` object); anything
    else is a protocol error with the body."""
    try:
        data = _object(orjson.loads(raw), "body")
        if too_deep_to_write(raw, data):  # it could not be answered with nor stored
            raise _Malformed(f"nesting depth past {MAX_WRITTEN_DEPTH} levels")
        if "choices" not in data:
            raise _Malformed("choices: missing")
        choices = _list(data["choices"], "choices")
        if not choices:
            raise UpstreamProtocolError(model, "response has no choices", status,
                                        raw.decode("utf-8", "replace"))
        for i, choice in enumerate(choices):  # an answer is a message, not null
            _object(_object(choice, f"choices.{i}").get("message"), f"choices.{i}.message")
    except ValueError as exc:  # orjson.JSONDecodeError and _Malformed
        raise UpstreamProtocolError(model, f"malformed response: {exc}", status,
                                    raw.decode("utf-8", "replace")) from exc
    return data


def _parse_completion(model: str, raw: bytes, status: int) -> _Completion:
    """Read a ``chat.completion`` body; a bad one is a protocol error carrying the body."""
    data = completion_object(model, raw, status)
    try:
        samples = [_to_sample(c, f"choices.{i}") for i, c in enumerate(data["choices"])]
        usage = _completion_usage(data.get("usage"))
    except ValueError as exc:  # _Malformed
        raise UpstreamProtocolError(model, f"malformed response: {exc}", status,
                                    raw.decode("utf-8", "replace")) from exc
    return _Completion(samples, usage)


def _chunk_object(model: str, data: str,
                  redacted: Callable[[str], str] = str) -> dict[str, Any]:
    """One streamed event as JSON data (an object); an ``error`` event is an upstream error
    (its text ``redacted``: it may echo the key the upstream was sent)."""
    try:
        payload = orjson.loads(data)
    except ValueError as exc:
        raise UpstreamProtocolError(model, f"malformed stream event: {exc}", 200, data) from exc
    if not isinstance(payload, dict):
        raise UpstreamProtocolError(model, "malformed stream event: not a JSON object", 200,
                                    data)
    if too_deep_to_write(data, payload):
        raise UpstreamProtocolError(
            model, f"malformed stream event: nesting depth past {MAX_WRITTEN_DEPTH} levels",
            200, data)
    if "error" in payload:
        data = redacted(data)
        raise UpstreamError(model, upstream_message(data) or "error event in stream", body=data)
    return payload


def completion_chunk(completion: Mapping[str, Any]) -> dict[str, Any]:
    """A whole ``chat.completion`` as the one ``chat.completion.chunk`` of a stream (a delta's
    tool calls carry the ``index`` stream accumulators key them on)."""
    choices = [{"index": c.get("index", i), "delta": _delta(c.get("message")),
                "logprobs": c.get("logprobs"), "finish_reason": c.get("finish_reason")}
               for i, c in enumerate(completion.get("choices") or ()) if isinstance(c, dict)]
    chunk = {k: v for k, v in completion.items() if k not in ("choices", "object")}
    return {**chunk, "object": "chat.completion.chunk", "choices": choices}


def _delta(message: object) -> dict[str, Any]:
    if not isinstance(message, dict):
        return {}
    calls = message.get("tool_calls")
    if not isinstance(calls, list):
        return message
    return {**message, "tool_calls": [{"index": i, **call} if isinstance(call, dict) else call
                                      for i, call in enumerate(calls)]}


def _parse_chunk(model: str, data: str, redacted: Callable[[str], str] = str) -> _Chunk:
    """Validate one streamed ``chat.completion.chunk``; an ``error`` event is an upstream error."""
    payload = _chunk_object(model, data, redacted)
    try:
        return _Chunk.model_validate(payload)
    except ValidationError as exc:
        message = f"malformed stream event: {_first_problem(exc)}"
        raise UpstreamProtocolError(model, message, 200, data) from exc


def _translated(model: str, exc: BaseException) -> UpstreamError | None:
    """The :mod:`router.errors` form of a transport, timeout or decoding error (order
    matters); ``None`` for anything else."""
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, TimeoutError):
        return UpstreamTimeoutError(model, f"timed out ({exc or type(exc).__name__})")
    if isinstance(exc, HttpProtocolError):
        return UpstreamProtocolError(model, str(exc))
    if isinstance(exc, ConnectionError):
        return UpstreamConnectionError(model, f"connection failed: {exc}")
    if isinstance(exc, ValueError | ValidationError):  # undecodable UTF-8
        return UpstreamProtocolError(model, f"malformed response: {exc}")
    return None


@contextmanager
def _translating(model: str) -> Iterator[None]:
    """Turn transport, timeout and decoding errors into :mod:`router.errors`."""
    try:
        yield
    except Exception as exc:
        error = _translated(model, exc)
        if error is None or error is exc:
            raise
        raise error from exc


# --- SSE -----------------------------------------------------------------------------------------


async def _sse_events(content: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event; multi-line data is joined with newlines."""
    data: list[str] = []
    async for raw in content:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        # other fields (event:, id:, retry:) and comments (":") carry nothing we use
    if data:
        yield "\n".join(data)


def _whole(completion: _Completion) -> list[StreamDelta]:
    """A whole completion as deltas, for servers that answer a stream request in one piece."""
    sample = completion.samples[0]
    head = [StreamDelta(sample.text)] if sample.text else []
    return [*head, StreamDelta("", sample.finish_reason, completion.usage)]


# --- the backend -----------------------------------------------------------------------------


class OpenAIBackend:
    """The backend for ``kind: openai``."""

    def __init__(self, name: str, params: OpenAIParams, model: ModelConfig,
                 http1: Http1Client | None = None, trace_head: TraceHead | None = None) -> None:
        """``trace_head``: the trace context's header lines, added to every request (tracing
        on; ``None`` costs nothing)."""
        self._name = name
        self._trace_head = trace_head
        self.params = params
        self._config = model
        t = model.timeouts
        self._http1 = http1
        self._owns_http1 = http1 is None
        self._http1_timeouts = HttpTimeouts(connect=t.connect, read=t.read, total=t.total)
        self._endpoints: dict[str, Endpoint] = {}
        # without a key (read from the environment at each call) a JSON POST's headers never
        # change: encoded once
        self._json_head = None if params.api_key is not None else self._encoded(
            dict(params.headers), _JSON_POST_HEADERS)

    @property
    def name(self) -> str:
        return self._name

    def identity(self) -> Mapping[str, object]:
        return self.params.identity()

    def keeps_deadline(self) -> bool:
        """Every attempt's timeouts are cut to the call's deadline and no retry waits past it
        (:meth:`_retrying`), the body of a stream included (the client's ``total`` timer)."""
        return True

    # -- wiring ----------------------------------------------------------------------------

    def _client(self) -> Http1Client:
        if self._http1 is None or (self._owns_http1 and self._http1.closed):
            self._http1 = Http1Client()
            self._owns_http1 = True
        return self._http1

    def _headers(self) -> dict[str, str]:
        headers = dict(self.params.headers)
        key = self.params.api_key
        if key is not None:
            value = key.value()
            if value is None:
                raise ModelUnavailableError(self._name, f"API key {key.describe()} is not set")
            if "\r" in value or "\n" in value:
                raise ModelUnavailableError(
                    self._name, f"API key {key.describe()} has a line break (in a header it "
                    "would inject headers)")
            wrong = next((c for c in value if ord(c) > 0xFF), None)
            if wrong is not None:  # e.g. the curly quotes of a key pasted from a document
                raise ModelUnavailableError(
                    self._name, f"API key {key.describe()} has a character an HTTP header "
                    f"cannot carry (U+{ord(wrong):04X} at position {value.index(wrong)})")
            headers["Authorization"] = f"Bearer {value}"
        return headers

    def _redacted(self, text: str) -> str:
        """``text`` from the upstream (an error's body) without the secrets this backend sends:
        an upstream that echoes the key it was sent ("Incorrect API key provided: …") must not
        hand it to diffroute's clients (error messages, ``partner_error``, ``/healthz``)."""
        key = self.params.api_key.value() if self.params.api_key is not None else None
        # a value shorter than MIN_SECRET is a placeholder ("x", Ollama's "ollama"), not a
        # secret: taken out everywhere it garbled the error ("ma[redacted]_tokens"), its param
        secrets = [v for v in (key, *self.params.headers.values())
                   if v is not None and len(v) >= MIN_SECRET]
        return redact(text, secrets)

    def _messages(self, request: SampleRequest) -> list[dict[str, str]]:
        messages = [dict(m) for m in request.messages]
        if self.params.system_prompt:
            messages.insert(0, {"role": "system", "content": self.params.system_prompt})
        return messages

    def _body(self, request: SampleRequest, n: int, seed: int | None) -> dict[str, Any]:
        """The JSON of one chat-completions call; per-model decoding overrides win."""
        d = self._config.decoding
        body: dict[str, Any] = {
            "model": self.params.model,
            "messages": self._messages(request),
            "n": n,
            "temperature": request.temperature if d.temperature is None else d.temperature,
            "max_tokens": request.max_tokens if d.max_tokens is None else d.max_tokens,
        }
        if d.top_p is not None:
            body["top_p"] = d.top_p
        if request.stop:
            body["stop"] = list(request.stop)
        if seed is not None:
            body["seed"] = seed
        if request.top_logprobs > 0 and self.params.supports_logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = min(MAX_TOP_LOGPROBS, request.top_logprobs)
        return body

    def _seed(self, request: SampleRequest, offset: int) -> int | None:
        # a configured seed is mixed with the request's seed (which carries the model's
        # identity) or with the pool name, never substituted for it: two models given one
        # seed must not draw coupled samples
        configured = self._config.decoding.seed
        seed = request.seed if configured is None else mix_seed(
            configured, self._name if request.seed is None else request.seed)
        # a follow-up call for missing samples must not replay the first call's samples
        return None if seed is None else seed + offset

    # -- one HTTP exchange, with retries ----------------------------------------------------

    def _delay_before_retry(self, error: UpstreamError, attempt: int,
                            left: float) -> float | None:
        """Seconds to wait before retrying ``error``, or ``None`` when it must be raised:
        not transient, out of retries, or the wait would not leave the call ``left`` seconds
        (a server asking for more than that is not worth waiting for)."""
        if attempt >= self.params.max_retries or not error.transient:
            return None
        wait = getattr(error, "retry_after", None)
        if wait is None:
            wait = min(_BACKOFF_CAP_S, _BACKOFF_S * 2**attempt)
        return wait if wait < left else None

    def _attempt_timeouts(self, left: float) -> HttpTimeouts:
        """The configured timeouts, ``total`` cut to what is left of the call's budget."""
        if left >= self._http1_timeouts.total:
            return self._http1_timeouts
        return HttpTimeouts(self._http1_timeouts.connect, self._http1_timeouts.read, left)

    async def _retrying(self, attempt: Callable[[HttpTimeouts], Awaitable[T]]) -> T:
        """``attempt(timeouts)`` until it succeeds or fails for good: transient failures (429,
        5xx, timeouts, connection errors) are tried again, and every failure leaves as a typed
        :mod:`router.errors` error. Attempts and waits all fit in the call's deadline (the
        pool's :data:`~router.backends.base.CALL_DEADLINE`, else ``timeouts.total`` from now);
        when the next wait would not, the last failure is raised as it is."""
        loop = asyncio.get_running_loop()
        deadline = CALL_DEADLINE.get()
        if deadline is None:
            deadline = loop.time() + self._config.timeouts.total
        for number in range(self.params.max_retries + 1):
            left = deadline - loop.time()
            if left <= 0:
                raise UpstreamTimeoutError(self._name, "no time left of timeouts.total for "
                                           f"attempt {number + 1}")
            try:
                return await attempt(self._attempt_timeouts(left))
            except Exception as exc:
                error = _translated(self._name, exc)
                if error is None:
                    raise
                wait = self._delay_before_retry(error, number, deadline - loop.time())
                if wait is None:
                    if error is exc:
                        raise
                    raise error from exc
                await asyncio.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _endpoint(self, path: str) -> Endpoint:
        endpoint = self._endpoints.get(path)
        if endpoint is None:
            endpoint = self._endpoints[path] = Endpoint.parse(self.params.base_url + path)
        return endpoint

    def _head(self, json_body: bool) -> bytes:
        if json_body and self._json_head is not None:
            head = self._json_head
        else:  # a key read from the environment: at each call
            head = self._encoded(self._headers(),
                                 _JSON_POST_HEADERS if json_body else _GET_HEADERS)
        return head if self._trace_head is None else head + self._trace_head()

    async def _post(self, path: str, body: dict[str, Any]) -> tuple[bytes, int]:
        """One JSON POST read whole: (body, status) of a 2xx. Every plain and paired call takes
        this path."""
        endpoint, head, data = self._endpoint(path), self._head(True), orjson.dumps(body)

        async def attempt(timeouts: HttpTimeouts) -> tuple[bytes, int]:
            reply = await self._client().post(endpoint, head, data, timeouts)
            if reply.status < 400:
                return reply.body, reply.status
            raise _status_error(self._name, reply.status, reply.reason,
                                self._redacted(reply.body.decode("utf-8", "replace")),
                                reply.headers)

        return await self._retrying(attempt)

    @asynccontextmanager
    async def _open(self, method: str, path: str,
                    body: dict[str, Any] | None = None) -> AsyncIterator[HttpStream]:
        """A 2xx response whose body is read as it comes (streams); closed on exit."""
        endpoint, head = self._endpoint(path), self._head(body is not None)
        data = None if body is None else orjson.dumps(body)

        async def attempt(timeouts: HttpTimeouts) -> HttpStream:
            response = await self._client().open(method, endpoint, head, data, timeouts)
            if response.status < 400:
                return response
            try:
                raw = await response.read()
            finally:
                response.close()
            raise _status_error(self._name, response.status, response.reason,
                                self._redacted(raw.decode("utf-8", "replace")),
                                response.headers)

        response = await self._retrying(attempt)
        try:
            with _translating(self._name):
                yield response
        finally:
            response.close()

    @staticmethod
    def _encoded(headers: dict[str, str], defaults: dict[str, str]) -> bytes:
        """``headers`` over ``defaults`` (names compared case-insensitively), encoded; both
        were checked for line breaks (the configured ones by :class:`OpenAIParams`, the key by
        :meth:`_headers`)."""
        given = {name.lower() for name in headers}
        kept = {k: v for k, v in defaults.items() if k.lower() not in given}
        return encode_headers({**kept, **headers})

    async def _complete(self, body: dict[str, Any]) -> _Completion:
        raw, status = await self._post("/chat/completions", body)
        return _parse_completion(self._name, raw, status)

    def _forward_body(self, body: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(body)
        out["model"] = self.params.model
        if self.params.system_prompt:
            out["messages"] = [{"role": "system", "content": self.params.system_prompt},
                               *body.get("messages", ())]
        d = self._config.decoding
        if d.temperature is not None:
            out["temperature"] = d.temperature
        if d.top_p is not None:
            out["top_p"] = d.top_p
        if d.seed is not None:
            out["seed"] = d.seed
        if d.max_tokens is not None:
            given = [k for k in ("max_completion_tokens", "max_tokens") if out.get(k)]
            for key in given or ["max_tokens"]:
                out[key] = min(out.get(key) or d.max_tokens, d.max_tokens)
        return out

    async def forward_stream(self, body: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """A streamed plain call passed through: the upstream's ``chat.completion.chunk``
        objects as they come, tool-call deltas and all (the body as in :meth:`forward`); a
        server that answers in one piece gives one chunk. An ``error`` event, a malformed
        event or a stream cut before its end is an error, as for any stream."""
        async with self._open("POST", "/chat/completions", self._forward_body(body)) as response:
            if response.content_type == "application/json":  # the server ignored "stream"
                raw = await response.read()
                yield completion_chunk(completion_object(self._name, raw, response.status))
                return
            finished = False
            held: list[dict[str, Any]] | None = []  # chunks without a choice, before the first
            async for data in _sse_events(response.lines()):
                if data.strip() == "[DONE]":
                    break
                chunk = _chunk_object(self._name, data, self._redacted)
                finished = finished or any(isinstance(c, dict) and c.get("finish_reason")
                                           for c in chunk.get("choices") or ())
                if held is not None and not chunk.get("choices"):
                    held.append(chunk)  # e.g. Azure's prompt_filter_results: kept until a choice
                    continue
                for early in held or ():
                    yield early
                held = None
                yield chunk
            else:
                if not finished:  # no [DONE] and no finish reason: the stream was cut
                    raise UpstreamProtocolError(self._name, "stream ended before completion",
                                                200)
            if held is not None:  # nothing to relay: an error before any byte is sent
                raise UpstreamProtocolError(self._name, "the stream ended without a choice", 200)

    async def forward(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """One chat completion with the client's own body, for a plain proxied call.

        The pool name becomes the upstream's model and the model's configured system prompt
        and decoding overrides apply; everything else — tools, response_format, logprobs,
        vendor fields — passes through, and the answer is the upstream's own object (tool
        calls and all), checked only for a non-empty ``choices`` list.
        """
        raw, status = await self._post("/chat/completions", self._forward_body(body))
        return completion_object(self._name, raw, status)

    # -- the protocol ---------------------------------------------------------------------------

    async def sample(self, request: SampleRequest) -> SampleResult:
        """``request.n`` samples; asks again when the upstream returns fewer choices than ``n``."""
        started = time.perf_counter()
        samples: list[Sample] = []
        usage = Usage()
        while len(samples) < request.n:
            missing = request.n - len(samples)
            completion = await self._complete(
                self._body(request, missing, self._seed(request, len(samples))))
            samples += completion.samples[:missing]
            usage = _add_usage(usage, completion.usage)
        return SampleResult(self._name, tuple(samples), usage, time.perf_counter() - started)

    async def stream(self, request: SampleRequest) -> AsyncIterator[StreamDelta]:
        """One completion as server-sent deltas; the last delta has the finish reason and usage."""
        body = self._body(request, 1, self._seed(request, 0))
        body.pop("logprobs", None)
        body.pop("top_logprobs", None)
        body |= {"stream": True, "stream_options": {"include_usage": True}}
        async with self._open("POST", "/chat/completions", body) as response:
            if response.content_type == "application/json":  # the server ignored "stream"
                raw = await response.read()
                for delta in _whole(_parse_completion(self._name, raw, response.status)):
                    yield delta
                return
            async for delta in self._deltas(response.lines()):
                yield delta

    async def _deltas(self, content: AsyncIterator[bytes]) -> AsyncIterator[StreamDelta]:
        finish: str | None = None
        usage: Usage | None = None
        chosen = False
        async for data in _sse_events(content):
            if data.strip() == "[DONE]":
                break
            chunk = _parse_chunk(self._name, data, self._redacted)
            usage = _to_usage(chunk.usage) if chunk.usage else usage
            for choice in chunk.choices[:1]:
                chosen = True
                finish = choice.finish_reason or finish
                if choice.delta.content:
                    yield StreamDelta(choice.delta.content)
        else:
            if finish is None:  # no [DONE] and no finish reason: the stream was cut
                raise UpstreamProtocolError(self._name, "stream ended before completion", 200)
        if not chosen:  # an empty answer is not an answer (a paired call compared it)
            raise UpstreamProtocolError(self._name, "the stream ended without a choice", 200)
        yield StreamDelta("", finish or "stop", usage)

    async def check(self) -> BackendStatus:
        """``GET {base_url}/models``: reachable, unreachable, missing key or error; never raises."""
        key = self.params.api_key
        if key is not None and key.value() is None:
            return BackendStatus("missing key", f"{key.describe()} is not set")
        try:
            async with asyncio.timeout(min(_CHECK_TIMEOUT_S, self._config.timeouts.total)):
                async with self._open("GET", "/models") as response:
                    listed = await response.read()
        except UpstreamError as exc:
            state: Literal["unreachable", "error"] = (
                "error" if exc.upstream_status is not None else "unreachable")
            return BackendStatus(state, str(exc))
        except ModelUnavailableError as exc:  # a key that cannot be sent
            return BackendStatus("error", exc.reason)
        except TimeoutError:
            return BackendStatus("unreachable", "GET /models timed out")
        return BackendStatus("reachable", self._listing_detail(listed))

    def _listing_detail(self, raw: bytes) -> str:
        try:
            ids = {m.get("id") for m in json.loads(raw).get("data", []) if isinstance(m, dict)}
        except (ValueError, AttributeError, TypeError):
            return "GET /models answered without a model list"
        if self.params.model in ids:
            return f"serves {self.params.model}"
        return f"'{self.params.model}' not listed by the server"

    async def aclose(self) -> None:
        """Close the HTTP client if this backend created it; a shared one is the pool's."""
        if self._owns_http1 and self._http1 is not None:
            await self._http1.aclose()
        self._http1 = None


def create(model: ModelConfig, context: BackendContext) -> OpenAIBackend:
    """The factory registered for ``kind: openai``."""
    params = model.backend
    if not isinstance(params, OpenAIParams):
        raise TypeError(f"model '{model.name}' is not an openai backend")
    return OpenAIBackend(model.name, params, model, context.http1, context.trace_head)
