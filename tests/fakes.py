"""A fake OpenAI-compatible upstream: a real aiohttp app on 127.0.0.1, port 0.

It answers ``/v1/chat/completions`` (plain and ``stream``, ``n``, ``logprobs``/``top_logprobs``),
``/v1/models`` and ``/v1/embeddings`` (deterministic unit vectors) the way an OpenAI-compatible
server does, and lets a test script what happens on each call::

    async with FakeUpstream(answer="B") as fake:
        fake.enqueue(Reply.error(429, "slow down", retry_after="2"), Reply())  # then a normal one
        backend = ...(base_url=fake.base_url)
        ...
        assert fake.count("/v1/chat/completions") == 2
        assert fake.calls[-1].body["n"] == 3

Every request is recorded in :attr:`FakeUpstream.calls`; a chat request whose client
disconnected before its answer was sent is counted in :attr:`FakeUpstream.abandoned`. A
request takes the next :class:`Reply` queued for its path; when the queue is empty it gets
the default answer (:attr:`answer`, after :attr:`latency` seconds). ``answer`` may be a function
of the request body, and ``answers`` maps upstream model ids to their own answer, so one fake
can emulate a pool of several models.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import struct
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

CHAT = "/v1/chat/completions"
MODELS = "/v1/models"
EMBEDDINGS = "/v1/embeddings"

Message = Mapping[str, Any]
"""An assistant message to answer with as it is (``tool_calls`` included)."""
Answer = str | Message | Callable[[Mapping[str, Any]], str | Message]
"""The text (or the whole assistant message) of a completion, fixed or computed from the
request body. A message with ``tool_calls`` finishes with ``tool_calls``, and streamed, its
arguments arrive in two pieces as OpenAI sends them."""


def tool_call_message(name: str, arguments: str, *more: tuple[str, str],
                      content: str | None = None) -> dict[str, Any]:
    """An assistant message calling ``name(arguments)`` (and the ``more`` calls in parallel)."""
    calls = [{"id": f"call_{i}", "type": "function",
              "function": {"name": n, "arguments": a}}
             for i, (n, a) in enumerate(((name, arguments), *more))]
    return {"role": "assistant", "content": content, "tool_calls": calls}


@dataclass(frozen=True)
class Reply:
    """One scripted response. Unset fields fall back to a normal, generated answer.

    * ``status``, ``headers``: of the HTTP response.
    * ``body`` (raw text) or ``json`` (serialised): replaces the generated body entirely.
    * ``text``: the answer of a generated completion (instead of the fake's default).
    * ``choices``: how many choices a generated completion has, whatever ``n`` asked.
    * ``delay``: seconds before the headers are sent (emulates a slow or hung server).
    * ``truncate``: announce the full ``Content-Length``, send half of the body, drop the
      connection.
    * ``chunks``: for a streamed reply, the ``data:`` payloads to send (dicts are serialised);
      ``done`` appends ``data: [DONE]``; ``chunk_delay`` waits between chunks.
    * ``first_token_logprobs``: (token, logprob) alternatives of the first generated token.
    """

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str | None = None
    json: Any = None
    text: str | None = None
    choices: int | None = None
    delay: float = 0.0
    truncate: bool = False
    chunks: Sequence[str | Mapping[str, Any]] | None = None
    done: bool = True
    chunk_delay: float = 0.0
    first_token_logprobs: Sequence[tuple[str, float]] | None = None

    @classmethod
    def error(cls, status: int, message: str, *, retry_after: str | None = None,
              error_type: str = "server_error") -> Reply:
        """An OpenAI error envelope with ``status`` (and a ``Retry-After`` header if given)."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        envelope = {"error": {"message": message, "type": error_type, "param": None,
                              "code": None}}
        return cls(status=status, headers=headers, json=envelope)

    @classmethod
    def malformed(cls, body: str = '{"choices": [{"message": ') -> Reply:
        """A 200 whose body is not valid JSON."""
        return cls(body=body, headers={"Content-Type": "application/json"})

    @classmethod
    def truncated(cls) -> Reply:
        """A normal completion cut off half-way through its announced length."""
        return cls(truncate=True)


@dataclass(frozen=True)
class Call:
    """One request the fake received."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any


def _unit_vector(text: str, dim: int) -> list[float]:
    """A deterministic unit vector for ``text`` (equal texts, equal vectors)."""
    raw = b""
    counter = 0
    while len(raw) < 4 * dim:
        raw += hashlib.blake2b(f"{counter}:{text}".encode(), digest_size=64).digest()
        counter += 1
    values = [v / 2**31 - 1.0 for v in struct.unpack(f">{dim}I", raw[: 4 * dim])]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def _words(text: str) -> list[str]:
    """Split keeping the spaces, so the pieces concatenate back to ``text``."""
    pieces = text.split(" ")
    return [p if i == 0 else " " + p for i, p in enumerate(pieces)] if text else []


def _prompt_tokens(body: Mapping[str, Any]) -> int:
    messages = body.get("messages") or []
    return sum(len(str(m.get("content", "")).split()) for m in messages if isinstance(m, dict))


class FakeUpstream:
    """An OpenAI-compatible server for tests; use as ``async with FakeUpstream() as fake``."""

    def __init__(
        self,
        *,
        answer: Answer = "The answer is B.",
        answers: Mapping[str, Answer] | None = None,
        models: Sequence[str] = ("fake-model",),
        latency: float = 0.0,
        api_key: str | None = None,
        first_token_logprobs: Sequence[tuple[str, float]] | None = None,
        embedding_dim: int = 16,
        finish_reason: str = "stop",
    ) -> None:
        self.answer = answer
        self.answers: dict[str, Answer] = dict(answers or {})
        self.models = list(models)
        self.latency = latency
        self.api_key = api_key
        """When set, requests without ``Authorization: Bearer <api_key>`` get a 401."""
        self.first_token_logprobs = first_token_logprobs
        self.embedding_dim = embedding_dim
        self.finish_reason = finish_reason
        self.calls: list[Call] = []
        self.abandoned = 0
        """Requests whose client went away before the answer was sent (disconnected)."""
        self._queues: dict[str, deque[Reply]] = defaultdict(deque)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> FakeUpstream:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Listen on 127.0.0.1 on a free port (see :attr:`base_url`)."""
        app = web.Application()
        app.router.add_post(CHAT, self._chat)
        app.router.add_get(MODELS, self._models)
        app.router.add_post(EMBEDDINGS, self._embeddings)
        # cancel handlers whose client went away (timeouts), and do not wait long for them
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The API root to configure a backend with (``.../v1``)."""
        return self.url + "/v1"

    # -- scripting ----------------------------------------------------------------------------

    def enqueue(self, *replies: Reply, path: str = CHAT) -> None:
        """Answer the next calls to ``path`` with ``replies``, in order."""
        self._queues[path].extend(replies)

    def count(self, path: str = CHAT) -> int:
        """How many requests ``path`` has received."""
        return sum(1 for c in self.calls if c.path == path)

    def pending(self, path: str = CHAT) -> int:
        """How many queued replies for ``path`` are still unused."""
        return len(self._queues[path])

    # -- handlers -------------------------------------------------------------------------------

    async def _begin(self, request: web.Request) -> tuple[Reply, Any]:
        """Record the call, check the key, wait; returns the reply to give and the JSON body."""
        body: Any = None
        if request.can_read_body:
            text = await request.text()
            try:
                body = json.loads(text)
            except ValueError:
                body = text
        self.calls.append(Call(request.method, request.path, dict(request.headers), body))
        queue = self._queues[request.path]
        reply = queue.popleft() if queue else Reply(delay=self.latency)
        if self.api_key is not None and request.headers.get("Authorization") != (
                f"Bearer {self.api_key}"):
            reply = Reply.error(401, "Incorrect API key provided", error_type="invalid_request")
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return reply, body

    async def _send(self, request: web.Request, reply: Reply,
                    generated: Any) -> web.StreamResponse:
        """Send ``reply``'s body if it has one, else ``generated`` (as JSON)."""
        if reply.body is not None:
            payload = reply.body.encode()
        else:
            payload = json.dumps(generated if reply.json is None else reply.json).encode()
        headers = {"Content-Type": "application/json", **reply.headers}
        if not reply.truncate:
            return web.Response(status=reply.status, body=payload, headers=headers)
        response = web.StreamResponse(status=reply.status, headers=headers)
        response.content_length = len(payload)
        await response.prepare(request)
        await response.write(payload[: len(payload) // 2])
        assert request.transport is not None
        request.transport.close()
        return response

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._chat_reply(request)
        except asyncio.CancelledError:  # the client disconnected (handler_cancellation)
            self.abandoned += 1
            raise

    async def _chat_reply(self, request: web.Request) -> web.StreamResponse:
        reply, body = await self._begin(request)
        body = body if isinstance(body, dict) else {}
        if reply.status == 200 and (reply.chunks is not None or body.get("stream")) and (
                reply.body is None and reply.json is None and not reply.truncate):
            return await self._stream(request, reply, body)
        return await self._send(request, reply, self.completion(body, reply))

    async def _models(self, request: web.Request) -> web.StreamResponse:
        reply, _ = await self._begin(request)
        listing = {"object": "list", "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]}
        return await self._send(request, reply, listing)

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        reply, body = await self._begin(request)
        body = body if isinstance(body, dict) else {}
        inputs = body.get("input", "")
        texts = [inputs] if isinstance(inputs, str) else [str(t) for t in inputs]
        data = [{"object": "embedding", "index": i,
                 "embedding": _unit_vector(t, self.embedding_dim)} for i, t in enumerate(texts)]
        tokens = sum(len(t.split()) for t in texts)
        generated = {"object": "list", "data": data, "model": body.get("model", ""),
                     "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        return await self._send(request, reply, generated)

    # -- generated answers ----------------------------------------------------------------------

    def text_for(self, body: Mapping[str, Any]) -> str | Message:
        """The default answer to a chat request (per upstream model if ``answers`` has it)."""
        answer = self.answers.get(str(body.get("model")), self.answer)
        return answer(body) if callable(answer) else answer

    def _logprobs(self, text: str, top: int,
                  alternatives: Sequence[tuple[str, float]] | None) -> dict[str, Any]:
        pieces = _words(text) or [""]
        first = list(alternatives or [(pieces[0], math.log(0.9)), ("X", math.log(0.06)),
                                      ("Y", math.log(0.04))])
        drawn = next((lp for t, lp in first if t == pieces[0]), first[0][1])
        content = [{"token": pieces[0], "logprob": drawn, "bytes": None,
                    "top_logprobs": [{"token": t, "logprob": lp, "bytes": None}
                                     for t, lp in first[:top]]}]
        content += [{"token": p, "logprob": 0.0, "bytes": None, "top_logprobs": []}
                    for p in pieces[1:]]
        return {"content": content}

    def completion(self, body: Mapping[str, Any], reply: Reply | None = None) -> dict[str, Any]:
        """A ``chat.completion`` object answering ``body``, as an OpenAI server would."""
        reply = reply or Reply()
        answer = reply.text if reply.text is not None else self.text_for(body)
        message = dict(answer) if isinstance(answer, Mapping) else {"role": "assistant",
                                                                      "content": answer}
        text = str(message.get("content") or "")
        finish = "tool_calls" if message.get("tool_calls") else self.finish_reason
        count = reply.choices if reply.choices is not None else int(body.get("n") or 1)
        alternatives = reply.first_token_logprobs or self.first_token_logprobs
        choices = []
        for i in range(count):
            choice: dict[str, Any] = {"index": i, "finish_reason": finish,
                                      "message": message, "logprobs": None}
            if body.get("logprobs"):
                top = int(body.get("top_logprobs") or 0)
                choice["logprobs"] = self._logprobs(text, top, alternatives)
            choices.append(choice)
        completion_tokens = len(text.split()) * count
        return {"id": f"chatcmpl-fake-{len(self.calls)}", "object": "chat.completion",
                "created": 0, "model": body.get("model", ""), "choices": choices,
                "usage": {"prompt_tokens": _prompt_tokens(body),
                          "completion_tokens": completion_tokens,
                          "total_tokens": _prompt_tokens(body) + completion_tokens}}

    def chunks(self, body: Mapping[str, Any], reply: Reply | None = None) -> list[dict[str, Any]]:
        """The ``chat.completion.chunk`` objects of a streamed answer to ``body``."""
        reply = reply or Reply()
        answer = reply.text if reply.text is not None else self.text_for(body)
        message: Mapping[str, Any] = answer if isinstance(answer, Mapping) else {
            "content": answer}
        text = str(message.get("content") or "")
        calls = list(message.get("tool_calls") or ())

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                    "model": body.get("model", ""),
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        out = [chunk({"role": "assistant", "content": ""}, None)]
        out += [chunk({"content": piece}, None) for piece in _words(text)]
        for i, call in enumerate(calls):
            arguments = str(call["function"]["arguments"])
            half = len(arguments) // 2
            out.append(chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                              "function": {"name": call["function"]["name"],
                                                           "arguments": arguments[:half]}}]},
                             None))
            out.append(chunk({"tool_calls": [{"index": i, "function": {
                "arguments": arguments[half:]}}]}, None))
        out.append(chunk({}, "tool_calls" if calls else self.finish_reason))
        options = body.get("stream_options") or {}
        if isinstance(options, dict) and options.get("include_usage"):
            tokens = len(text.split())
            out.append({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                        "model": body.get("model", ""), "choices": [],
                        "usage": {"prompt_tokens": _prompt_tokens(body),
                                  "completion_tokens": tokens,
                                  "total_tokens": _prompt_tokens(body) + tokens}})
        return out

    async def _stream(self, request: web.Request, reply: Reply,
                      body: Mapping[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "text/event-stream", **reply.headers})
        await response.prepare(request)
        payloads = list(reply.chunks) if reply.chunks is not None else self.chunks(body, reply)
        for payload in payloads:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            await response.write(f"data: {data}\n\n".encode())
            if reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay)
        if reply.done:
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


async def until(condition: Callable[[], bool], poll_s: float = 0.01) -> None:
    """Wait until ``condition()`` holds (something the fake or the code under test does in its
    own time, e.g. noticing a disconnect); pytest's timeout bounds the wait."""
    while not condition():  # noqa: ASYNC110 -- the condition is another task's state, no event
        await asyncio.sleep(poll_s)
