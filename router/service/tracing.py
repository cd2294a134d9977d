"""The request's server span, when tracing is on (:mod:`router.telemetry`).

:func:`tracing_middleware` is added in front of the service's middleware only when tracing is
on, so a service without it pays nothing per request. It continues the caller's trace
(``traceparent``), keeps the span current while the handler runs (model calls and their
upstream requests become its children) and ends it when the response is sent — for a stream,
when the stream ends or the client goes away (the handler is cancelled then). The span gets
the HTTP semantic-convention attributes, the request id, the fields a handler added to the
access log (the plain proxy's ``gen_ai.*`` fields) and, for a paired call, the outcome
(:func:`trace_outcome`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

from router.service.middleware import ACCESS_FIELDS, FAILED_STATUS, REQUEST_ID, Handler
from router.telemetry import Attributes, Tracing, outcome_attributes

if TYPE_CHECKING:
    from opentelemetry.trace import Span

TRACING = web.AppKey("diffroute.tracing", Tracing)
"""The app's tracing; absent when tracing is off."""
SERVER_SPAN = web.RequestKey("diffroute.server_span", object)
"""The request's server span, in the ``web.Request`` mapping, when tracing is on."""


@web.middleware
async def tracing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Wrap the request in its server span (the app's :data:`TRACING`, opened at start)."""
    tracing = request.app[TRACING]
    route = _route(request)
    attributes: Attributes = {"http.request.method": request.method, "url.path": request.path}
    if request.method not in KNOWN_METHODS:  # any token is a method to aiohttp: no new names
        attributes |= {"http.request.method": "_OTHER",
                       "http.request.method_original": request.method}
    method = "HTTP" if request.method not in KNOWN_METHODS else request.method
    if route is not None:
        attributes["http.route"] = route
    # the HTTP semantic conventions' name: "{method} {route}", or the method alone
    span = tracing.server_span(method if route is None else f"{method} {route}",
                               tracing.incoming(request.headers), attributes)
    request[SERVER_SPAN] = span
    with tracing.current(span):
        try:
            response = await handler(request)
        except BaseException:  # cancelled (the client went away): still which request it was
            _annotate(span, request)
            raise
        # a stream that an error ended is logged with that error's status: so is its span
        _finish(span, request, request.get(FAILED_STATUS, response.status))
        return response


KNOWN_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST",
                           "PUT", "TRACE"})


def _route(request: web.Request) -> str | None:
    """The matched route's template; ``None`` for a request no route takes (404, 405)."""
    info = request.match_info
    resource = info.route.resource if info is not None else None
    return resource.canonical if resource is not None else None


def _annotate(span: Span, request: web.Request) -> None:
    """The request id and the fields a handler added to the access line."""
    if not span.is_recording():  # not sampled: nothing is kept, nothing to add
        return
    rid = request.get(REQUEST_ID)
    if rid:
        span.set_attribute("diffroute.request_id", rid)
    extra = request.get(ACCESS_FIELDS)
    if extra:
        span.set_attributes({k: v for k, v in extra.items() if v is not None})


def _finish(span: Span, request: web.Request, status: int) -> None:
    if not span.is_recording():  # not sampled: nothing is kept, nothing to add
        return
    span.set_attribute("http.response.status_code", status)
    _annotate(span, request)
    if status >= 500:
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
        if "error.type" not in (getattr(span, "attributes", None) or {}):
            # the HTTP semantic conventions' fallback when nothing names the error better
            span.set_attribute("error.type", str(status))


def trace_outcome(request: web.Request, outcome: Mapping[str, Any]) -> None:
    """A paired call's outcome (its ``diffroute`` object) on the request's span, if traced."""
    span = request.get(SERVER_SPAN)
    if span is not None:
        cast("Span", span).set_attributes(outcome_attributes(outcome))


def trace_fields(request: web.Request, fields: Mapping[str, Any]) -> None:
    """A plain call's model fields (``gen_ai.*``, no bodies) on the request's span, if traced:
    with ``log_prompts`` they are logged in their own ``gen_ai.chat`` event, not the access
    line the span otherwise takes them from."""
    span = request.get(SERVER_SPAN)
    if span is not None:
        cast("Span", span).set_attributes({k: v for k, v in fields.items() if v is not None})


def trace_failure(request: web.Request, exc: BaseException) -> None:
    """An error that ended a started stream (its status was sent already, an ``error`` event
    tells the client) on the request's span, if traced: the error status and ``error.type``."""
    span = request.get(SERVER_SPAN)
    tracing = request.app.get(TRACING)
    if span is not None and tracing is not None:
        tracing.fail(cast("Span", span), exc)
