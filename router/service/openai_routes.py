"""The OpenAI-compatible routes: ``POST /v1/chat/completions`` and ``GET /v1/models``.

A chat request reads as a chain: parse (schema) → target (pool model or ``audit:``/``assist:``
virtual model) → plain proxy, or engine.prepare (policy) → engine.complete / engine.stream
(paired calls, compare, record) → OpenAI response with the ``diffroute`` object.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from profiles.protocol import SampleRequest, Usage
from router.backends.base import StreamDelta
from router.errors import BadRequestError, DiffrouteError
from router.logging import generation_fields, log_generation
from router.paired import (
    PairedCall,
    PairedOptions,
    PairedOutcome,
    parse_model,
    virtual_models,
)
from router.service.completions import (
    ChunkWriter,
    completion_json,
    json_response,
    sse_response,
)
from router.service.middleware import ACCESS_FIELDS, REQUEST_ID, error_body
from router.service.schema import (
    ChatRequest,
    has_option_headers,
    merge_options,
    parse_chat,
    read_json,
)
from router.service.state import STATE, ServiceState

_log = structlog.get_logger("diffroute.chat")

Finale = Callable[[], Awaitable[dict[str, Any] | None]]
"""Called after the last delta; returns the ``diffroute`` object of the final chunk."""


def add_routes(app: web.Application) -> None:
    """Register the OpenAI-compatible routes."""
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """``POST /v1/chat/completions``: a plain proxy, or a paired (audit/assist) call."""
    state = request.app[STATE]
    sent = await read_json(request)
    chat = parse_chat(sent)
    assert isinstance(sent, dict)  # parse_chat checked it
    if chat.diffroute is None and chat.model in state.pool and \
            state.pool.get(chat.model).forwards and not has_option_headers(request.headers):
        return await _passed_through(request, state, chat, chat.model, sent)  # the common case
    options = merge_options(request.headers, chat.diffroute)
    target = parse_model(chat.model, state.pool)
    if target.role is None and options.role is None:
        _reject_paired_options(options)
        assert target.primary is not None
        if state.pool.get(target.primary).forwards:
            return await _passed_through(request, state, chat, target.primary, sent)
    if chat.stream and chat.n > 1:  # translated streams carry one choice
        raise BadRequestError("n > 1 is not supported with stream: true", param="n")
    if target.role is None and options.role is None:
        assert target.primary is not None
        return await _plain(request, state, chat, target.primary, chat.sample_request())
    sample_request = chat.sample_request()
    if chat.n > 1:
        raise BadRequestError("n > 1 is only supported for pool models, not paired calls",
                              param="n")
    call = state.engine.prepare(target, options, sample_request, chat.task_text(),
                                request[REQUEST_ID])
    if chat.stream:
        return await _paired_stream(request, chat, state, call)
    outcome = await state.engine.complete(call)
    assert outcome.answer is not None
    body = completion_json(outcome.answer, call.answering, with_logprobs=bool(chat.logprobs))
    body["diffroute"] = outcome.to_json()
    return json_response(body, headers=outcome_headers(outcome))


NO_OPTIONS = PairedOptions()


def _reject_paired_options(options: PairedOptions) -> None:
    if options == NO_OPTIONS:
        return
    given = [k for k in ("partner", "candidates", "audit_mode", "shadow_rate")
             if getattr(options, k) is not None]
    if given:
        raise BadRequestError(
            f"diffroute option '{given[0]}' needs a paired call: use model 'audit:<name>' or "
            "'assist:<name>', or set diffroute.role", param=f"diffroute.{given[0]}")


def call_headers(call: PairedCall) -> dict[str, str]:
    d = call.decision
    return {"x-diffroute-role": d.role, "x-diffroute-primary": d.primary,
            "x-diffroute-partner": d.partner, "x-diffroute-answered-by": call.answering}


def outcome_headers(outcome: PairedOutcome) -> dict[str, str]:
    headers = call_headers(outcome.call)
    c = outcome.comparison
    headers["x-diffroute-flagged"] = "true" if c is not None and c.flagged else "false"
    if c is not None:
        headers["x-diffroute-agreement"] = f"{c.agreement:.4f}"
    if outcome.live_diff_id:
        headers["x-diffroute-live-diff-id"] = outcome.live_diff_id
    return headers


async def _plain(request: web.Request, state: ServiceState, chat: ChatRequest, model: str,
                 sample_request: SampleRequest) -> web.StreamResponse:
    log_prompts = state.settings.server.log_prompts
    rid = request[REQUEST_ID]
    if chat.stream:
        return await relay(request, model, state.pool.stream(model, sample_request), {},
                           chat.include_usage)
    started = time.perf_counter()
    result = await state.pool.sample(model, sample_request)
    duration = time.perf_counter() - started
    if log_prompts:  # the bodies are too big for the access line: their own event
        log_generation(_log, model, sample_request, result.usage, duration,
                       texts=[s.text for s in result.samples], log_prompts=True,
                       request_id=rid)
    else:  # one line per request: the model call joins the access log
        request[ACCESS_FIELDS] = generation_fields(
            model, sample_request.temperature, sample_request.max_tokens, result.usage,
            duration)
    return json_response(completion_json(result, model, with_logprobs=bool(chat.logprobs)))


async def _passed_through(request: web.Request, state: ServiceState, chat: ChatRequest,
                          model: str, body: dict[str, Any]) -> web.StreamResponse:
    """A plain call to a model whose backend passes bodies through, streamed or not."""
    body.pop("diffroute", None)
    if chat.stream:
        return await _relayed(request, state, chat, model, body)
    return await _forwarded(request, state, chat, model, body)


async def _relayed(request: web.Request, state: ServiceState, chat: ChatRequest, model: str,
                   body: dict[str, Any]) -> web.StreamResponse:
    """A streamed plain call passed through: the upstream's chunks are relayed as they come
    (tool-call deltas included) with the pool's model name. The first chunk is awaited before
    the response starts, so an upstream that fails at once still gets a 502/504 status; later
    failures become an ``error`` event."""
    started = time.perf_counter()
    chunks = state.pool.get(model).forward_stream(body)
    usage: object = None

    async def write(writer: ChunkWriter) -> None:
        nonlocal usage
        chunk = first
        while chunk is not None:
            chunk["model"] = model
            usage = chunk.get("usage") or usage
            await writer.send(chunk)
            chunk = await anext(chunks, None)

    try:
        first = await anext(chunks, None)
        response = await _sse(request, model, {}, write)
    finally:
        await chunks.aclose()  # the upstream connection and the model's slot, at once
    request[ACCESS_FIELDS] = generation_fields(
        model, chat.temperature, chat.max_completion_tokens or chat.max_tokens, _usage(usage),
        time.perf_counter() - started)
    return response


async def _forwarded(request: web.Request, state: ServiceState, chat: ChatRequest, model: str,
                     body: dict[str, Any]) -> web.Response:
    """A plain non-streaming call to a model whose backend passes bodies through: the
    client's body goes upstream as sent (tools, response_format…: nothing diffroute does not
    know is lost) and the upstream's completion comes back with the pool's model name."""
    started = time.perf_counter()
    answer = await state.pool.get(model).forward(body)
    duration = time.perf_counter() - started
    answer["model"] = model
    usage = _usage(answer.get("usage"))
    if state.settings.server.log_prompts:
        texts = [str((c.get("message") or {}).get("content") or "") if isinstance(c, dict)
                 else "" for c in answer["choices"]]
        log_generation(_log, model, chat.sample_request(), usage, duration, texts=texts,
                       log_prompts=True, request_id=request[REQUEST_ID])
    else:
        request[ACCESS_FIELDS] = generation_fields(
            model, chat.temperature, chat.max_completion_tokens or chat.max_tokens, usage,
            duration)
    return json_response(answer)


def _usage(value: object) -> Usage | None:
    """An upstream's ``usage`` object, if it has the counts (it is the upstream's business)."""
    if not isinstance(value, dict):
        return None
    prompt, completion = value.get("prompt_tokens"), value.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt, completion)


async def _paired_stream(request: web.Request, chat: ChatRequest, state: ServiceState,
                         call: PairedCall) -> web.StreamResponse:
    async with state.engine.stream(call) as stream:

        async def finale() -> dict[str, Any]:
            return (await stream.outcome()).to_json()

        return await relay(request, call.answering, stream.deltas(), call_headers(call),
                           chat.include_usage, finale)


async def relay(request: web.Request, model: str, deltas: AsyncIterator[StreamDelta],
                headers: dict[str, str], include_usage: bool,
                finale: Finale | None = None) -> web.StreamResponse:
    """Stream ``deltas`` as SSE chunks; the ``finale`` (audit result) goes last, before [DONE].

    The first delta is awaited before the response starts, so an upstream that fails at once
    still gets a proper 502/504 status; later failures become an ``error`` event.
    """
    try:
        first: StreamDelta | None = await anext(deltas)
    except StopAsyncIteration:
        first = None

    async def write(writer: ChunkWriter) -> None:
        await writer.delta("", role=True)
        await _write_deltas(writer, first, deltas, include_usage)
        if finale is not None and (extra := await finale()) is not None:
            await writer.send(writer.chunk([], diffroute=extra))

    return await _sse(request, model, headers, write)


async def _sse(request: web.Request, model: str, headers: dict[str, str],
               write: Callable[[ChunkWriter], Awaitable[None]]) -> web.StreamResponse:
    """Start an SSE response and ``write`` its chunks; a failure after the start is an
    ``error`` event (the status is sent already), and the stream ends with ``[DONE]``."""
    response = sse_response(headers)
    await response.prepare(request)
    writer = ChunkWriter(response, model)
    try:
        await write(writer)
    except DiffrouteError as exc:
        _log.warning("chat.stream_failed", error=str(exc))
        await writer.error(error_body(str(exc), exc.error_type, exc.param, exc.code))
    except ConnectionResetError:
        _log.info("chat.client_gone")
        return response
    await writer.done()
    return response


async def _write_deltas(writer: ChunkWriter, first: StreamDelta | None,
                        deltas: AsyncIterator[StreamDelta], include_usage: bool) -> None:
    finish, usage = None, None
    delta = first
    while delta is not None:
        if delta.text:
            await writer.delta(delta.text)
        finish = delta.finish_reason or finish
        usage = delta.usage or usage
        delta = await anext(deltas, None)
    await writer.delta(finish_reason=finish or "stop")
    if include_usage and usage is not None:
        await writer.usage(usage)


async def list_models(request: web.Request) -> web.Response:
    """``GET /v1/models``: pool models, then the virtual ``audit:``/``assist:`` models."""
    state = request.app[STATE]
    data: list[dict[str, Any]] = []
    for cfg in state.settings.models:
        data.append({"id": cfg.name, "object": "model", "created": 0, "owned_by": "diffroute",
                     "diffroute": {"kind": "pool", "backend": cfg.backend.kind,
                                   "family": cfg.family_name}})
    for name in virtual_models(state.pool.names):
        role, _, primary = name.partition(":")
        data.append({"id": name, "object": "model", "created": 0, "owned_by": "diffroute",
                     "diffroute": {"kind": "virtual", "role": role, "primary": primary}})
    return web.json_response({"object": "list", "data": data})
