"""How the app is served: aiohttp's runner, with aiohttp's own refusals as OpenAI envelopes.

Some requests never reach the app: a request line or header aiohttp's parser cannot read, a
URL past its limit, a method it does not know, a ``Content-Encoding`` it cannot decode, an
``Expect`` other than ``100-continue`` (answered by the route's expect handler, before any
middleware). aiohttp answers those itself (``RequestHandler.handle_error``, or the 417 it
raises) in ``text/plain``. :class:`ServiceRunner`
serves the app with a request handler that answers them with the same ``{"error": …}`` envelope
and status as every other error, so an OpenAI client reads one shape whatever went wrong. The
hot path is aiohttp's, unchanged: only the error answer is replaced.
"""

from __future__ import annotations

from collections.abc import Coroutine
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from router.service.middleware import REQUEST_ID_HEADER, RequestIds, error_body

_MESSAGE_LIMIT = 300
_IDS = RequestIds()
"""Ids of the refusals (the request never reached the app, whose ids the others have)."""
_CODES = {400: "invalid_http_request", 413: "body_too_large", 414: "url_too_long",
          417: "expectation_failed", 431: "headers_too_large"}


def refusal(status: int, message: str | None) -> web.Response:
    """The envelope for a request aiohttp refused before the app saw it (the connection is
    closed after it, as aiohttp does)."""
    if status >= 500:
        body = error_body("internal server error", "server_error", code="internal_error")
    else:
        reason = " ".join((message or HTTPStatus(status).phrase).split())
        if len(reason) > _MESSAGE_LIMIT:
            reason = reason[:_MESSAGE_LIMIT] + "…"
        body = error_body(f"malformed HTTP request: {reason}",
                          code=_CODES.get(status, "invalid_http_request"))
    response = web.json_response(body, status=status)
    response.headers[REQUEST_ID_HEADER] = _IDS.new()  # every response has one
    response.force_close()
    return response


class EnvelopeRequestHandler(RequestHandler):
    """aiohttp's request handler (the connection's protocol), whose own error answers are
    OpenAI envelopes. Logging and the already-sent check stay aiohttp's."""

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs; raises if already sent
        return refusal(status, message)

    def finish_response(self, request: BaseRequest, resp: web.StreamResponse,
                        start_time: float | None,
                        ) -> Coroutine[Any, Any, tuple[web.StreamResponse, bool]]:
        """aiohttp's, except for its own 417 (``Expect: 200-ok``), answered as an envelope.
        Not a coroutine itself: aiohttp's is returned, no frame more per response."""
        if resp.__class__ is web.HTTPExpectationFailed:
            resp = refusal(417, resp.text)
        return RequestHandler.finish_response(self, request, resp, start_time)


class _EnvelopeServer(web.Server):
    def __call__(self) -> RequestHandler:
        return EnvelopeRequestHandler(self, loop=self._loop, **self._kwargs)


class ServiceRunner(web.AppRunner):
    """``web.AppRunner`` whose connections are :class:`EnvelopeRequestHandler` s."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # the server aiohttp built for the app, with one method more: the protocol factory
        server.__class__ = _EnvelopeServer
        return server
