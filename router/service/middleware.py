"""The service's one middleware: request context, auth, errors, access log, observers.

:func:`service_middleware` does, in this order, what four layers used to (each layer of aiohttp
middleware costs a coroutine and a partial per request, and this runs for every request):

* gives each request an id (``x-request-id``, echoed back, or a process prefix and a counter),
  binds it to the log context and puts it on the response (a handler that starts a streamed
  response itself does so with :func:`prepare_stream`, which puts it there first);
* checks Bearer keys in constant time (:func:`check_auth`); handlers marked with
  :func:`admin_only` need the admin key, those marked with :func:`public` none;
* is the one place where errors become HTTP: every :class:`~router.errors.DiffrouteError` and
  aiohttp HTTP error becomes the OpenAI envelope ``{"error": {"message", "type", "param",
  "code"}}``; anything unexpected is logged with its traceback and answered with a 500 envelope
  without it;
* writes the one ``http.request`` access log line (with the fields a handler added under
  :data:`ACCESS_FIELDS`, e.g. the plain proxy's model call);
* calls the app's :data:`REQUEST_OBSERVERS` (the live module's metrics) with the route, the
  status, the duration and the error, if any.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import itertools
import math
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from aiohttp import web

from profiles.embed import EmbeddingError
from router.errors import AuthError, DiffrouteError, ForbiddenError
from router.service.state import KEYS, SETTINGS, Keys

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Handler)

REQUEST_ID = web.RequestKey("diffroute.request_id", str)
"""Key of the request id in the ``web.Request`` mapping."""
STREAM = web.RequestKey("diffroute.stream", web.StreamResponse)
"""Key of a response a handler started (:func:`prepare_stream`): an error after that cannot be
a response of its own, it ends the stream (:func:`_end_stream`)."""
ACCESS_FIELDS = web.RequestKey("diffroute.access_fields", dict)
"""Key of a ``dict`` in the ``web.Request`` mapping whose items join the access log line."""
REQUEST_ID_HEADER = "x-request-id"
SHOULD_RETRY_HEADER = "x-should-retry"
CLIENT_CLOSED = 499
"""The status logged and counted for a request whose client went away before its answer
(nginx's; no response is sent)."""
OPEN_PATHS = frozenset({"/healthz", "/openapi.json"})
"""Reachable without a key (probes and API discovery)."""

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_ADMIN_ATTR = "__diffroute_admin__"
_PUBLIC_ATTR = "__diffroute_public__"
_log = structlog.get_logger("diffroute.http")


def error_body(message: str, error_type: str = "invalid_request_error",
               param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The OpenAI error envelope."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_response(status: int, message: str, error_type: str = "invalid_request_error",
                   param: str | None = None, code: str | None = None) -> web.Response:
    return web.json_response(error_body(message, error_type, param, code), status=status)


def diffroute_error_response(exc: DiffrouteError) -> web.Response:
    response = error_response(exc.status, str(exc), exc.error_type, exc.param, exc.code)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None and math.isfinite(retry_after):
        response.headers["Retry-After"] = str(int(min(max(retry_after, 0.0), 86_400.0) + 0.999))
    if exc.retryable is False:
        # the openai SDK (and Stainless-generated ones) retry 408, 409, 429 and 5xx unless
        # told otherwise: a request bound to fail again is not sent three times
        response.headers[SHOULD_RETRY_HEADER] = "false"
    return response


def _http_error_response(request: web.Request, exc: web.HTTPException) -> web.Response:
    if exc.status == 404:
        return error_response(404, f"no route {request.method} {request.path}",
                              code="not_found")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        response = error_response(405, f"method {request.method} is not allowed on "
                                  f"{request.path} (allowed: {allowed})",
                                  code="method_not_allowed")
        response.headers["Allow"] = allowed
        return response
    if exc.status == 413:
        limit = request.app[SETTINGS].server.max_body_bytes
        return error_response(413, f"request body is larger than the limit of {limit} bytes "
                                   "(server.max_body_bytes)", code="body_too_large")
    error_type = "server_error" if exc.status >= 500 else "invalid_request_error"
    return error_response(exc.status, exc.text or exc.reason, error_type)


class RequestIds:
    """Request ids: a random per-app prefix and a counter (unique, and cheaper than uuid4)."""

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._counter = itertools.count(1)

    def new(self) -> str:
        return f"{self._prefix}-{next(self._counter):x}"


REQUEST_IDS = web.AppKey("diffroute.request_ids", RequestIds)


def _request_id(request: web.Request, app: web.Application) -> str:
    given = request.headers.get(REQUEST_ID_HEADER)
    if given and _SAFE_ID.match(given):
        return given
    return app[REQUEST_IDS].new()


def _route(request: web.Request) -> str:
    info = request.match_info
    resource = info.route.resource if info is not None else None
    return resource.canonical if resource is not None else "(unmatched)"


Observer = Callable[[web.Request, str, int, float, BaseException | None], None]
"""``observer(request, route, status, seconds, error)`` after each request (must not raise)."""
REQUEST_OBSERVERS = web.AppKey("diffroute.request_observers", list[Observer])
"""Functions the middleware calls after every request; route modules append to it."""


@web.middleware
async def service_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id and log context, auth, errors as OpenAI envelopes, access log, observers."""
    app = request.app  # once: ``request.app`` walks the match info on every access
    rid = _request_id(request, app)
    request[REQUEST_ID] = rid
    started = time.perf_counter()
    # tokens, not bound_contextvars(): the context manager costs three times as much
    tokens = structlog.contextvars.bind_contextvars(request_id=rid)
    error: BaseException | None = None
    response: web.StreamResponse | None = None
    status = 500
    try:
        check_auth(request)
        response = await handler(request)
        return response
    except DiffrouteError as exc:
        error = exc
        response = diffroute_error_response(exc)
        return await _end_stream(request, response)
    except EmbeddingError as exc:  # the configured embedder (a remote one) is away
        error = exc
        response = error_response(503, f"the embedder is unavailable: {exc}", "server_error",
                                  code="embedder_unavailable")
        return await _end_stream(request, response)
    except web.HTTPException as exc:
        if exc.status < 400:
            status = exc.status
            exc.headers[REQUEST_ID_HEADER] = rid
            raise
        error = exc
        response = _http_error_response(request, exc)
        return await _end_stream(request, response)
    except Exception as exc:
        _log.exception("http.unhandled_error", **{"http.route": _route(request)})
        error = exc
        response = error_response(500, f"internal server error (request id {rid})",
                                  "server_error", code="internal_error")
        return await _end_stream(request, response)
    except BaseException as exc:  # cancelled: the client went away; still logged and observed
        error = exc
        if isinstance(exc, asyncio.CancelledError):
            status = CLIENT_CLOSED  # not a server error: nothing was answered, nothing failed
        raise
    finally:
        seconds = time.perf_counter() - started
        if response is not None:
            status = request.get(FAILED_STATUS, response.status)
            # here, not in an on_response_prepare hook: an empty signal is skipped, a hook
            # costs a coroutine per response (streams were tagged by prepare_stream)
            if not response.prepared:
                response.headers[REQUEST_ID_HEADER] = rid
        route = _route(request)
        fields = {"http.request.method": request.method, "http.route": route,
                  "url.path": request.path, "http.response.status_code": status,
                  "duration_ms": round(seconds * 1000, 3)}
        extra = request.get(ACCESS_FIELDS)
        if extra:
            fields.update(extra)
        _log.info("http.request", **fields)
        for observe in app[REQUEST_OBSERVERS]:
            observe(request, route, status, seconds, error)
        structlog.contextvars.reset_contextvars(**tokens)


async def prepare_stream(request: web.Request, response: web.StreamResponse) -> None:
    """Start a streamed response in a handler: with its request id, as every response has."""
    rid = request.get(REQUEST_ID)
    if rid:
        response.headers[REQUEST_ID_HEADER] = rid
    await response.prepare(request)
    request[STREAM] = response


FAILED_STATUS = web.RequestKey("diffroute.failed_status", int)
"""The status of an error that ended a started stream (logged and counted as that)."""


async def _end_stream(request: web.Request, error: web.Response) -> web.StreamResponse:
    """``error`` — or, when the handler had started a stream, that stream, ended with the
    error as its last event (server-sent events) — never a second HTTP response written into
    the body of the first."""
    stream: web.StreamResponse | None = request.get(STREAM)
    if stream is None or not stream.prepared:
        return error
    request[FAILED_STATUS] = error.status
    if stream.content_type == "text/event-stream" and isinstance(error.body, bytes):
        with contextlib.suppress(ConnectionError, RuntimeError):
            await stream.write(b"event: error\ndata: " + error.body + b"\n\n")
    return stream


def admin_only(handler: H) -> H:
    """Mark a handler as needing the admin key."""
    setattr(handler, _ADMIN_ATTR, True)
    return handler


def public(handler: H) -> H:
    """Mark a handler as reachable without a key (it serves no data, e.g. the dashboard's
    static assets)."""
    setattr(handler, _PUBLIC_ATTR, True)
    return handler


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _matches(token: str | None, keys: tuple[str, ...]) -> bool:
    # compare against every key, whatever matched, so timing says nothing about which
    # (a header's bytes that are not UTF-8 reach us as lone surrogates: back to those bytes,
    # which match no key, instead of a UnicodeEncodeError and a 500)
    given = None if token is None else token.encode("utf-8", "surrogateescape")
    found = False
    for key in keys:
        found |= given is not None and hmac.compare_digest(given, key.encode())
    return found


def _marked(request: web.Request, attr: str) -> bool:
    info = request.match_info
    handler = info.route.handler if info is not None else None
    return bool(getattr(handler, attr, False))


def has_valid_key(request: web.Request) -> bool:
    """Whether the request carries a client or admin key (always, when none is configured)."""
    keys: Keys = request.app[KEYS]
    if not keys.client and not keys.admin:
        return True
    return _matches(_bearer(request), keys.client + ((keys.admin,) if keys.admin else ()))


def is_ip(name: str) -> bool:
    """Whether ``name`` is an IPv4 or IPv6 address (not a name to resolve)."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_name(value: str) -> str:
    """The name a ``Host`` header (or a ``server.allowed_hosts`` entry) gives, port aside,
    lower-case, without a trailing dot (an IPv6 address: as written, brackets included)."""
    if value.startswith("["):
        return value.partition("]")[0] + "]"
    return (value.rpartition(":")[0] if ":" in value else value).lower().rstrip(".")


def _host_allowed(value: str, hosts: frozenset[str]) -> bool:
    """Whether a ``Host`` header names this service: an IP address (``127.0.0.1:8080``,
    ``[::1]``), ``localhost`` and its subdomains, or a name of ``hosts``."""
    if value.startswith("["):  # an IPv6 address
        return True
    name = host_name(value)
    return name in hosts or name == "localhost" or name.endswith(".localhost") or is_ip(name)


def _check_host(keys: Keys, value: str) -> None:
    """403 unless ``value`` (a ``Host`` header not seen allowed before) names this service."""
    assert keys.hosts is not None
    if not _host_allowed(value, keys.hosts):
        name = host_name(value)  # (what to list: a port there would never match)
        shown = name if len(name) <= 80 else name[:80] + "…"
        raise ForbiddenError(f"this service does not answer to the host name {shown!r}: add "
                             "it to server.allowed_hosts if it is yours", code="host_not_allowed")
    if len(keys.good_hosts) < 1024:
        keys.good_hosts.add(value)


CROSS_SITE = frozenset({"cross-site", "same-site"})
"""``Sec-Fetch-Site`` values of a request a browser sends for a page of another origin."""


def check_auth(request: web.Request) -> None:
    """401 unless the request carries a valid key; the key itself is never logged.

    A browser's request for a page of another origin (its ``Sec-Fetch-Site``) is a 403
    first, key or not: a page the user visits could otherwise post to a service on
    127.0.0.1 — with no ``server.api_keys``, run models and write live comparisons — since a
    ``text/plain`` POST needs no CORS preflight. The dashboard is same-origin, other clients
    send no such header.

    Before both, on a loopback address, a ``Host`` that names neither an IP address,
    ``localhost`` nor one of ``server.allowed_hosts`` is a 403: a page of the attacker's name,
    pointed at 127.0.0.1 once loaded (DNS rebinding), is same-origin for the browser and could
    otherwise read the live diffs — prompts and answers — of a keyless service."""
    keys: Keys = request.app[KEYS]
    headers = request.headers
    if keys.hosts is not None:
        host = headers.get("Host")  # (HTTP/1.0 without one: no browser sends that)
        if host is not None and host not in keys.good_hosts:
            _check_host(keys, host)
    if headers.get("Sec-Fetch-Site") in CROSS_SITE and not _marked(
            request, _PUBLIC_ATTR):
        raise ForbiddenError("a browser page of another origin may not call this service "
                             "(Sec-Fetch-Site: cross-site)", code="cross_origin_request")
    admin = (keys.admin,) if keys.admin else ()
    if _marked(request, _ADMIN_ATTR):
        if not admin:
            raise ForbiddenError("this route needs the admin key, and none is configured "
                                 "(server.admin_key)", code="admin_key_not_configured")
        token = _bearer(request)
        if _matches(token, admin):
            return
        if _matches(token, keys.client):
            raise ForbiddenError("this route needs the admin key; the key given is a client "
                                 "key")
        raise AuthError("this route needs the admin key (Authorization: Bearer <admin key>)")
    elif keys.client and request.path not in OPEN_PATHS and not _marked(
            request, _PUBLIC_ATTR) and not _matches(_bearer(request), keys.client + admin):
        raise AuthError("missing or invalid API key (Authorization: Bearer <key>)")
