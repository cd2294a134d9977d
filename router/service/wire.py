"""OpenAI wire objects: ``chat.completion``, ``chat.completion.chunk`` and SSE framing."""

from __future__ import annotations

import os
import time
from typing import Any

import orjson
from aiohttp import web

from profiles.protocol import Sample, SampleResult, Usage, drawn_among

DONE = b"data: [DONE]\n\n"
_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def completion_id() -> str:
    return "chatcmpl-" + os.urandom(12).hex()


def json_response(body: Any, *, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    """``web.json_response`` with one ``orjson`` encoding (several times faster than ``json``)."""
    return web.Response(body=orjson.dumps(body, option=_JSON_OPTIONS), status=status,
                        headers=headers, content_type="application/json")


def usage_json(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens}


def _logprobs_json(sample: Sample, shown: int) -> dict[str, Any] | None:
    """The first token's logprob and ``shown`` of its alternatives, the only ones backends
    report."""
    if not sample.first_token_logprobs:
        return None
    top = [{"token": t.token, "logprob": t.logprob, "bytes": None}
           for t in sample.first_token_logprobs[:shown]]
    # the token drawn; from backends that do not say, the alternative the text starts with
    first = sample.first_token or drawn_among(sample.text, sample.first_token_logprobs) \
        or sample.first_token_logprobs[0]
    return {"content": [{"token": first.token, "logprob": first.logprob, "bytes": None,
                         "top_logprobs": top}]}


def completion_json(result: SampleResult, model: str, *, top_logprobs: int | None = None,
                    cid: str | None = None) -> dict[str, Any]:
    """A ``chat.completion`` object from a backend result; ``top_logprobs``: with the first
    token's logprob and that many alternatives (``None``: without logprobs)."""
    choices = [{"index": i, "message": {"role": "assistant", "content": s.text},
                "finish_reason": s.finish_reason,
                "logprobs": None if top_logprobs is None else _logprobs_json(s, top_logprobs)}
               for i, s in enumerate(result.samples)]
    return {"id": cid or completion_id(), "object": "chat.completion",
            "created": int(time.time()), "model": model, "choices": choices,
            "usage": usage_json(result.usage)}


class ChunkWriter:
    """Writes ``chat.completion.chunk`` events of one streamed completion."""

    def __init__(self, response: web.StreamResponse, model: str) -> None:
        self.response = response
        self.model = model
        self.id = completion_id()
        self.created = int(time.time())
        self.system_fingerprint: str | None = None

    def follow(self, chunk: dict[str, Any]) -> None:
        """Take a relayed upstream chunk's ``id``, ``created`` and ``system_fingerprint`` for
        the chunks written after it (one completion, one id)."""
        if isinstance(chunk.get("id"), str):
            self.id = chunk["id"]
        if isinstance(chunk.get("created"), int):
            self.created = chunk["created"]
        if isinstance(chunk.get("system_fingerprint"), str):
            self.system_fingerprint = chunk["system_fingerprint"]

    def chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        out = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
               "model": self.model, "choices": choices, **extra}
        if self.system_fingerprint is not None:
            out["system_fingerprint"] = self.system_fingerprint
        return out

    async def send(self, payload: dict[str, Any]) -> None:
        data = orjson.dumps(payload, option=_JSON_OPTIONS)
        await self.response.write(b"data: " + data + b"\n\n")

    async def delta(self, content: str | None = None, *, role: bool = False,
                    finish_reason: str | None = None) -> None:
        delta: dict[str, Any] = {"role": "assistant"} if role else {}
        if content is not None:
            delta["content"] = content
        await self.send(self.chunk([{"index": 0, "delta": delta, "logprobs": None,
                                     "finish_reason": finish_reason}]))

    async def usage(self, usage: Usage) -> None:
        await self.send(self.chunk([], usage=usage_json(usage)))

    async def error(self, body: dict[str, Any]) -> None:
        """An error after the stream started: the status is sent already, so it is an event."""
        await self.send(body)

    async def done(self) -> None:
        await self.response.write(DONE)
        await self.response.write_eof()


def sse_response(headers: dict[str, str]) -> web.StreamResponse:
    return web.StreamResponse(status=200, headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no", **headers})
