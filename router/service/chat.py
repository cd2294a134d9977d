"""The OpenAI-compatible routes: ``POST /v1/chat/completions`` and ``GET /v1/models``.

A chat request reads as one chain over one request model (:class:`ChatRequest`, which keeps
the body as sent): parse → plan (a pool model, or a pair from ``audit:``/``assist:`` and the
options) → a plain call (passed through to a forwarding backend, else translated) or a paired
one (engine.prepare → engine.complete / engine.stream: decision, calls, compare, record) →
the OpenAI response, with the ``diffroute`` object for a pair.

Paired or not, a forwarding (``kind: openai``) model is sent the body as it is and its answer
comes back as the upstream gave it (tool calls, tool-call deltas, structured output); a model
that gets a translated request is first checked to lose nothing of it
(:meth:`ChatRequest.check_translatable`: a 400 naming the field and the model).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from profiles.protocol import Usage
from router.backends.base import StreamDelta
from router.errors import (
    BadRequestError,
    DiffrouteError,
    NoPairError,
    UnknownModelError,
    UpstreamError,
)
from router.logging import error_fields, generation_fields, log_generation
from router.paired.answer import upstream_usage
from router.paired.call import ModelReply, PairedCall, PairedOutcome
from router.service.middleware import ACCESS_FIELDS, REQUEST_ID, error_body, prepare_stream
from router.service.model_names import virtual_models
from router.service.schema import (
    ChatRequest,
    PairedRequest,
    PlainCall,
    named_as_sent,
    parse_chat,
    plan_call,
    read_json,
)
from router.service.state import SETTINGS, STATE, ServiceState
from router.service.tracing import trace_failure, trace_fields, trace_outcome
from router.service.wire import (
    ChunkWriter,
    completion_json,
    json_response,
    sse_response,
    usage_json,
)

_log = structlog.get_logger("diffroute.chat")

Finale = Callable[[], Awaitable[dict[str, Any] | None]]
"""Called after the last delta; returns the ``diffroute`` object of the final chunk."""


def add_routes(app: web.Application) -> None:
    """Register the OpenAI-compatible routes."""
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", retrieve_model)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """``POST /v1/chat/completions``: parse → plan → a plain call or a paired one → respond."""
    state = request.app[STATE]
    chat = parse_chat(await read_json(request))
    plan = plan_call(chat, request.headers, state.pool)
    try:
        if isinstance(plan, PlainCall):
            state.engine.check_domain(plan.domain)
            return await _plain(request, state, chat, plan.model)
        return await _paired(request, state, chat, plan)
    except DiffrouteError as exc:  # an option from a header is named as the header
        named_as_sent(exc, chat.diffroute)
        raise


async def _plain(request: web.Request, state: ServiceState, chat: ChatRequest,
                 model: str) -> web.StreamResponse:
    """One pool model, or when it fails before answering, its ``fallbacks`` in turn: the
    response's ``model`` names who answered, and ``x-diffroute-fallback`` is set to it when
    that is a fallback."""

    async def one(name: str) -> web.StreamResponse:
        headers = {} if name == model else {"x-diffroute-fallback": name}
        return await _plain_one(request, state, chat, name, headers)

    try:
        return await state.pool.with_fallbacks(model, one)
    except UpstreamError as exc:
        # the failed model call joins the access line and the request's span as an answered
        # one does: which model failed, and how (its text may echo the prompt: not here)
        request[ACCESS_FIELDS] = {"gen_ai.operation.name": "chat",
                                  "gen_ai.request.model": exc.model,
                                  "error.type": type(exc).__name__}
        raise


async def _plain_one(request: web.Request, state: ServiceState, chat: ChatRequest,
                     model: str, headers: dict[str, str]) -> web.StreamResponse:
    """One pool model: the body passes through to a forwarding backend, else is translated."""
    if state.pool.get(model).forwards:
        if chat.stream:
            return await _relayed(request, state, chat, model, headers)
        return await _forwarded(request, state, chat, model, headers)
    _check_translatable(state, chat, model)
    if chat.stream and chat.n > 1:  # translated streams carry one choice
        raise BadRequestError(f"n > 1 is not supported with stream: true on '{model}' (a "
                              "translated stream carries one choice)", param="n")
    _check_streamed_logprobs(chat, model)
    return await _translated(request, state, chat, model, headers)


def _check_streamed_logprobs(chat: ChatRequest, model: str) -> None:
    """A translated stream carries no logprobs: asked for, they were silently left out."""
    if chat.stream and chat.logprobs:
        raise BadRequestError(f"logprobs are not supported with stream: true on '{model}' (a "
                              "translated stream carries none): ask without stream",
                              param="logprobs", code="unsupported_field")


async def _paired(request: web.Request, state: ServiceState, chat: ChatRequest,
                  plan: PairedRequest) -> web.StreamResponse:
    """A pair: the engine decides, calls both models, compares and records."""
    if chat.n > 1:  # streamed or not: one answer is compared with one answer
        raise BadRequestError("n > 1 is only supported for pool models, not paired calls",
                              param="n")
    prepare = functools.partial(state.engine.prepare, plan.role, plan.primary,
                                request=chat.sample_request(), task=chat.task_text(),
                                request_id=request[REQUEST_ID], body=chat.sent)
    options = plan.options
    forwarding = tuple(n for n in options.candidates or state.pool.names
                       if state.pool.get(n).forwards) \
        if options.partner is None and chat.untranslated_field() is not None else ()
    if forwarding:
        # a body only a forwarding model takes whole (tools…): the policy picks the pair among
        # those first, as it does a failing auditor's replacement (with none that fits, the
        # pair it picks gets the 400 naming the field)
        try:
            call = await prepare(options=dataclasses.replace(options, candidates=forwarding))
        except NoPairError:
            call = await prepare(options=options)
    else:
        call = await prepare(options=options)
    for model in call.models:
        if not state.pool.get(model).forwards:
            _check_translatable(state, chat, model)
    if call.route is not None and chat.untranslated_field() is not None:
        # a failing auditor's replacement must take the body as sent too (tools kept)
        names = call.route.candidates or tuple(state.pool.names)
        call = dataclasses.replace(call, route=dataclasses.replace(call.route, candidates=tuple(
            n for n in names if state.pool.get(n).forwards)))
    if chat.stream:
        if not state.pool.get(call.answering).forwards:
            _check_streamed_logprobs(chat, call.answering)
        return await _paired_stream(request, chat, state, call)
    reply, outcome = await state.engine.complete(call)
    # the outcome's call: the primary answers for an assistant that failed
    body = _reply_json(reply, outcome.call.answering, chat.shown_top_logprobs())
    body["diffroute"] = outcome.to_json()
    trace_outcome(request, body["diffroute"])
    return json_response(body, headers=outcome_headers(outcome))


def _check_translatable(state: ServiceState, chat: ChatRequest, model: str) -> None:
    chat.check_translatable(model, state.pool.get(model).config.backend.kind)


def _reply_json(reply: ModelReply, model: str, top_logprobs: int | None) -> dict[str, Any]:
    """The answering model's completion: the upstream's own object when it was forwarded
    (tool calls and all, with the pool's model name), else built from the backend's result."""
    if reply.completion is not None:
        return {**reply.completion, "model": model}
    if reply.result is None:
        raise TypeError("a model reply has a completion or a result")
    return completion_json(reply.result, model, top_logprobs=top_logprobs)


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


async def _translated(request: web.Request, state: ServiceState, chat: ChatRequest,
                      model: str, headers: dict[str, str]) -> web.StreamResponse:
    """A plain call to a local or scripted model: the request is translated for the backend."""
    sample_request = chat.sample_request()
    log_prompts = state.settings.server.log_prompts
    rid = request[REQUEST_ID]
    if chat.stream:
        return await relay(request, model, state.pool.stream(model, sample_request), headers,
                           chat.include_usage)
    started = time.perf_counter()
    result = await state.pool.sample(model, sample_request)
    duration = time.perf_counter() - started
    fields = generation_fields(model, sample_request.temperature, sample_request.max_tokens,
                               result.usage, duration)
    if log_prompts:  # the bodies are too big for the access line: their own event
        log_generation(_log, model, sample_request, result.usage, duration,
                       texts=[s.text for s in result.samples], log_prompts=True,
                       request_id=rid)
        trace_fields(request, fields)  # the span has the model call's fields all the same
    else:  # one line per request: the model call joins the access log
        request[ACCESS_FIELDS] = fields
    return json_response(completion_json(result, model, top_logprobs=chat.shown_top_logprobs()),
                         headers=headers)


async def _relayed(request: web.Request, state: ServiceState, chat: ChatRequest,
                   model: str, headers: dict[str, str]) -> web.StreamResponse:
    """A streamed plain call passed through: the upstream's chunks are relayed as they come
    (tool-call deltas included) with the pool's model name."""
    started = time.perf_counter()
    usage: object = None

    def seen(chunk: dict[str, Any]) -> None:
        nonlocal usage
        usage = chunk.get("usage") or usage

    response = await relay_chunks(request, model, state.pool.get(model).forward_stream(chat.sent),
                                  headers, seen=seen)
    request[ACCESS_FIELDS] = generation_fields(
        model, chat.temperature, chat.max_completion_tokens or chat.max_tokens,
        upstream_usage(usage), time.perf_counter() - started)
    return response


async def relay_chunks(request: web.Request, model: str,
                       chunks: AsyncGenerator[dict[str, Any], None], headers: dict[str, str],
                       finale: Finale | None = None,
                       seen: Callable[[dict[str, Any]], None] | None = None
                       ) -> web.StreamResponse:
    """Relay an upstream's ``chat.completion.chunk`` objects as they are, with the pool's
    model name, then the ``finale`` (audit result) as the last chunk before [DONE]. The first
    chunk is awaited before the response starts, so an upstream that fails at once still gets
    a 502/504 status; later failures become an ``error`` event."""

    async def write(writer: ChunkWriter) -> None:
        chunk = first
        held: dict[str, Any] | None = None
        while chunk is not None:
            chunk["model"] = model
            if seen is not None:
                seen(chunk)
            writer.follow(chunk)  # the finale shares the upstream's id and created
            if held is not None:
                await writer.send(held)
                held = None
            if finale is not None and chunk.get("usage"):
                # a chunk with the usage is held: the last one's usage goes in the finale,
                # as readers that keep the last chunk's usage and system_fingerprint (the
                # openai SDK's stream helper) would otherwise end with none. Upstreams send
                # it alone (OpenAI: no choices) or with the last choice (llama.cpp's server,
                # vLLM's continuous usage stats): that choice is sent, less the usage.
                held = chunk
            else:
                await writer.send(chunk)
            chunk = await anext(chunks, None)
        extra = await finale() if finale is not None else None
        if held is not None and held.get("choices"):
            usage = held.pop("usage")
            await writer.send(held)
            held = writer.chunk([], usage=usage)
        if held is not None:
            await writer.send(held if extra is None else {**held, "diffroute": extra})
        elif extra is not None:
            await writer.send(writer.chunk([], diffroute=extra))

    try:
        first = await anext(chunks, None)
        return await _sse(request, model, headers, write)
    finally:
        await chunks.aclose()  # the upstream connection and the model's slot, at once


async def _forwarded(request: web.Request, state: ServiceState, chat: ChatRequest,
                     model: str, headers: dict[str, str]) -> web.Response:
    """A plain non-streaming call to a model whose backend passes bodies through: the
    client's body goes upstream as sent (tools, response_format…: nothing diffroute does not
    know is lost) and the upstream's completion comes back with the pool's model name."""
    started = time.perf_counter()
    answer = await state.pool.get(model).forward(chat.sent)
    duration = time.perf_counter() - started
    answer["model"] = model
    usage = upstream_usage(answer.get("usage"))
    fields = generation_fields(model, chat.temperature,
                               chat.max_completion_tokens or chat.max_tokens, usage, duration)
    if state.settings.server.log_prompts:
        texts = [str((c.get("message") or {}).get("content") or "") if isinstance(c, dict)
                 else "" for c in answer["choices"]]
        log_generation(_log, model, chat.sample_request(), usage, duration, texts=texts,
                       log_prompts=True, request_id=request[REQUEST_ID])
        trace_fields(request, fields)  # the span has the model call's fields all the same
    else:
        request[ACCESS_FIELDS] = fields
    return json_response(answer, headers=headers)


async def _paired_stream(request: web.Request, chat: ChatRequest, state: ServiceState,
                         call: PairedCall) -> web.StreamResponse:
    """A streamed pair: the headers go out once the answering model's first delta is there
    (:meth:`PairedStream.open`), so they name who answers — the primary, for an assistant
    that failed before it — and the auditor that replaced one that failed by then."""
    async with state.engine.stream(call) as stream:
        await stream.open()

        async def finale() -> dict[str, Any]:
            extra = (await stream.outcome()).to_json()
            trace_outcome(request, extra)
            return extra

        call = stream.call
        if stream.forwarded:
            return await relay_chunks(request, call.answering, stream.chunks(),
                                      call_headers(call), finale)
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
        usage = await _write_deltas(writer, first, deltas, include_usage and finale is None)
        extra = await finale() if finale is not None else None
        # one last chunk with the usage (when asked for) and the audit: see relay_chunks
        more = {"usage": usage_json(usage)} if include_usage and usage is not None else {}
        if extra is not None:
            more["diffroute"] = extra
        if more and finale is not None:
            await writer.send(writer.chunk([], **more))

    return await _sse(request, model, headers, write)


async def _sse(request: web.Request, model: str, headers: dict[str, str],
               write: Callable[[ChunkWriter], Awaitable[None]]) -> web.StreamResponse:
    """Start an SSE response and ``write`` its chunks; a failure after the start is an
    ``error`` event (the status is sent already), and the stream ends with ``[DONE]``."""
    response = sse_response(headers)
    await prepare_stream(request, response)
    writer = ChunkWriter(response, model)
    try:
        await write(writer)
    except DiffrouteError as exc:
        log_prompts = request.app[SETTINGS].server.log_prompts
        _log.warning("chat.stream_failed", **error_fields(exc, log_prompts=log_prompts))
        trace_failure(request, exc)
        await writer.error(error_body(str(exc), exc.error_type, exc.param, exc.code))
    except ConnectionResetError:
        _log.info("chat.client_gone")
        return response
    await writer.done()
    return response


async def _write_deltas(writer: ChunkWriter, first: StreamDelta | None,
                        deltas: AsyncIterator[StreamDelta], include_usage: bool) -> Usage | None:
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
    return usage


def _model_objects(state: ServiceState) -> list[dict[str, Any]]:
    """The ``model`` objects of the pool's models, then of the virtual ones."""
    data: list[dict[str, Any]] = []
    for cfg in state.settings.models:
        data.append({"id": cfg.name, "object": "model", "created": 0, "owned_by": "diffroute",
                     "diffroute": {"kind": "pool", "backend": cfg.backend.kind,
                                   "family": cfg.family_name,
                                   "circuit": state.pool.circuit(cfg.name).to_json()}})
    for name in virtual_models(state.pool.names):
        role, _, primary = name.partition(":")
        data.append({"id": name, "object": "model", "created": 0, "owned_by": "diffroute",
                     "diffroute": {"kind": "virtual", "role": role, "primary": primary}})
    return data


async def list_models(request: web.Request) -> web.Response:
    """``GET /v1/models``: pool models, then the virtual ``audit:``/``assist:`` models."""
    return web.json_response({"object": "list", "data": _model_objects(request.app[STATE])})


async def retrieve_model(request: web.Request) -> web.Response:
    """``GET /v1/models/{model}``: one model of the list (the openai SDK's
    ``models.retrieve``); a name the service does not answer to is a 404 ``model_not_found``."""
    state = request.app[STATE]
    name = request.match_info["model"]
    found = next((m for m in _model_objects(state) if m["id"] == name), None)
    if found is None:
        raise UnknownModelError(name, state.pool.names)
    return web.json_response(found)
