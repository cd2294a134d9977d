"""HTTP routes of the live diffs: ``add_routes(app)`` (a ``create_app`` route module).

* ``GET /v1/diffs`` — live diffs, oldest first; filters ``pair=A,B`` (or ``primary``,
  ``partner``), ``role``, ``domain``, ``since``/``until`` (epoch seconds or ISO 8601); pages of
  ``limit`` (≤ 1000) after ``cursor`` (the ``next_cursor`` of the previous page); with
  ``order=desc`` newest first, each page before ``cursor``.
* ``GET /v1/diffs/stream`` — Server-Sent Events: each new live diff as ``event: live_diff`` with
  ``id:`` its sequence number, in commit order; ``: heartbeat`` comments every ``heartbeat``
  seconds; resumes after ``Last-Event-ID`` (or ``cursor``) from the store. Same filters.
* ``GET /v1/stats/disagreements?window=S`` — per pair and domain over the last S seconds.
* ``GET /v1/drift`` — drift events and every pair's current drift state.
* ``GET /metrics`` — Prometheus text exposition.

Bad query parameters are a 400 in the OpenAI error envelope. The routes need the durable sink
(:class:`~router.live.sink.DurableLiveDiffSink`, ``ServiceState.live``); with another sink they
answer 503, except ``/metrics``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from router.errors import BadRequestError, DiffrouteError, UpstreamError
from router.live.broadcast import encode_event
from router.live.metrics import CONTENT_TYPE
from router.live.rates import rate_rows
from router.live.sink import DurableLiveDiffSink
from router.service.middleware import REQUEST_OBSERVERS, prepare_stream
from router.service.state import METRICS, STATE
from router.store import DiffQuery, Store, parse_time

MAX_LIMIT = 1000
DEFAULT_WINDOW_S = 3600.0
DEFAULT_HEARTBEAT_S = 15.0


class LiveUnavailableError(DiffrouteError):
    """The service runs without the durable live-diff sink."""

    status = 503
    code = "live_diffs_unavailable"

    def __init__(self) -> None:
        super().__init__("live diffs need the durable store (the default sink of the service)")


def add_routes(app: web.Application) -> None:
    """Register the routes and the request metrics."""
    app[REQUEST_OBSERVERS].append(_observe_request)
    app.on_shutdown.append(_end_streams)
    app.router.add_get("/v1/diffs", list_diffs)
    app.router.add_get("/v1/diffs/stream", stream_diffs)
    app.router.add_get("/v1/stats/disagreements", disagreement_stats)
    app.router.add_get("/v1/drift", drift_state)
    app.router.add_get("/metrics", metrics)


async def _end_streams(app: web.Application) -> None:
    # on_shutdown runs before the server waits for open handlers: SSE streams must end first
    state = app.get(STATE)
    if state is not None and state.live is not None:
        state.live.broadcaster.close()


def _observe_request(request: web.Request, route: str, status: int, seconds: float,
                     error: BaseException | None) -> None:
    """Request latency per route, and upstream errors on their way to the client."""
    metrics = request.app[METRICS]
    metrics.request(request.method, route, status, seconds)
    if isinstance(error, UpstreamError):
        metrics.upstream_errors.labels(error.model, type(error).__name__).inc()


# --- query parameters ------------------------------------------------------------------------


def _sink(request: web.Request) -> DurableLiveDiffSink:
    sink = request.app[STATE].live
    if sink is None:
        raise LiveUnavailableError()
    return sink


def query_number(request: web.Request, name: str, default: float, low: float, high: float,
            cast: Callable[[str], float] = float) -> float:
    """A numeric query parameter within [low, high] (NaN included, a 400 naming it)."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = cast(raw)
    except ValueError:
        kind = "a whole number" if cast is int else "a number"
        raise BadRequestError(f"{name} must be {kind}, got '{raw}'", param=name) from None
    if not low <= value <= high:
        raise BadRequestError(f"{name} must be between {low:g} and {high:g}", param=name)
    return value


def diff_query(request: web.Request, after: int = 0) -> DiffQuery:
    """The filters and page of a live-diff listing, validated."""
    q = request.query
    for name in ("primary", "partner", "pair", "domain"):
        if "\x00" in q.get(name, ""):  # no name holds it; PostgreSQL refuses it outright
            raise BadRequestError(f"{name} must not contain U+0000", param=name)
    primary, partner = q.get("primary"), q.get("partner")
    if "pair" in q:
        names = [n.strip() for n in q["pair"].split(",")]
        if len(names) != 2 or not all(names):
            raise BadRequestError("pair must be two models: pair=A,B", param="pair")
        primary, partner = names
    role = q.get("role")
    if role is not None and role not in ("audit", "assist"):
        raise BadRequestError("role must be audit or assist", param="role")
    since = parse_time(q["since"], "since") if "since" in q else None
    until = parse_time(q["until"], "until") if "until" in q else None
    order = q.get("order", "asc")
    if order not in ("asc", "desc"):
        raise BadRequestError("order must be asc (oldest first) or desc (newest first)",
                              param="order")
    cursor = int(query_number(request, "cursor", after, 0, 2**62, int))
    limit = int(query_number(request, "limit", 50, 1, MAX_LIMIT, int))
    return DiffQuery(primary, partner, role, q.get("domain"), since, until, cursor, limit,
                     newest_first=order == "desc")


def _last_event_id(request: web.Request) -> int | None:
    """``Last-Event-ID``: the sequence number of the last event a client saw (``None`` when
    absent)."""
    raw = request.headers.get("Last-Event-ID", "").strip()
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise BadRequestError("Last-Event-ID must be the id of a live_diff event (a number "
                              "below 10^18)", param="Last-Event-ID")
    return int(raw)


# --- handlers --------------------------------------------------------------------------------


async def list_diffs(request: web.Request) -> web.Response:
    sink = _sink(request)
    query = diff_query(request)
    data = await sink.store.diffs(query)
    cursor = str(data[-1]["seq"]) if len(data) == query.limit else None
    return web.json_response({"object": "list", "data": data, "next_cursor": cursor})


async def stream_diffs(request: web.Request) -> web.StreamResponse:
    """Live diffs as server-sent events: first every stored one after ``Last-Event-ID`` (or
    ``cursor``; ``0``: every stored one), paged until caught up, then each new one as it is
    committed; without either, only the new ones. A subscriber
    that falls a whole buffer behind gets a final ``resume`` event with the id to resume from
    (``Last-Event-ID``) and the stream ends, so it never slows the others."""
    sink = _sink(request)
    query = diff_query(request)
    last_event = _last_event_id(request)
    if last_event is not None:
        # it wins over cursor: an EventSource reconnects to the URL of its first request
        # (cursor included) with the id of the last event it received
        query = dataclasses.replace(query, after=last_event)
    if query.newest_first:
        raise BadRequestError("the stream is in commit order; order=desc is for GET /v1/diffs",
                              param="order")
    heartbeat = query_number(request, "heartbeat", DEFAULT_HEARTBEAT_S, 0.05, 300)
    headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
               "X-Accel-Buffering": "no"}
    if request.method == "HEAD":  # the head alone: events written after it were a body that
        return web.Response(headers=headers)  # broke the connection's next response
    sub = sink.broadcaster.subscribe(query)  # before the backlog read: nothing falls between
    response = web.StreamResponse(headers=headers)
    try:
        await prepare_stream(request, response)
        resume = "cursor" in request.query or bool(request.headers.get("Last-Event-ID",
                                                                       "").strip())
        last = await _backlog(response, sink.store, query) if resume else query.after
        await response.write(b": connected\n\n")
        while not sub.closed:
            if not sub.events and not sub.overflowed:
                try:
                    await asyncio.wait_for(sub.wake.wait(), heartbeat)
                except TimeoutError:
                    await response.write(b": heartbeat\n\n")
                    continue
            fresh = [(seq, event) for seq, event in sub.drain() if seq > last]
            if fresh:
                await response.write(b"".join(event for _, event in fresh))
                last = fresh[-1][0]
            if sub.overflowed:
                await response.write(b"event: resume\ndata: %s\n\n" % orjson.dumps(
                    {"last_event_id": last, "reason": "the stream fell too far behind; "
                     "reconnect with this Last-Event-ID"}))
                break
    except (ConnectionResetError, ConnectionError):
        pass  # the client went away: a normal end of a stream
    finally:
        sink.broadcaster.unsubscribe(sub)
    return response


async def _backlog(response: web.StreamResponse, store: Store, query: DiffQuery) -> int:
    """Every stored diff after ``query.after`` that matches, in pages; the last id sent."""
    last = query.after
    while True:
        page = await store.diffs(dataclasses.replace(query, after=last, limit=MAX_LIMIT))
        if page:
            await response.write(b"".join(encode_event(d) for d in page))
            last = int(page[-1]["seq"])
        if len(page) < MAX_LIMIT:
            return last


async def disagreement_stats(request: web.Request) -> web.Response:
    sink = _sink(request)
    window = query_number(request, "window", DEFAULT_WINDOW_S, 1, 10 * 365 * 86_400)
    counts = await sink.store.counts(time.time() - window)

    def live(primary: str, partner: str, domain: str) -> dict[str, Any]:
        pair = sink.monitor.pairs.get((primary, partner, domain))
        blended = sink.blended_agreement((primary, partner), domain)
        return {"blended_agreement": None if blended is None else round(blended, 6),
                "drift_state": None if pair is None else pair.state}

    rows = rate_rows(counts, sink.baseline.predicted_disagreement, live)
    return web.json_response({"object": "list", "window_s": window, "data": rows,
                              "profile_version": sink.baseline.version or None})


async def drift_state(request: web.Request) -> web.Response:
    sink = _sink(request)
    limit = int(query_number(request, "limit", 100, 1, MAX_LIMIT, int))
    events = await sink.store.drift_events(limit)
    states = [{"primary": k[0], "partner": k[1], "domain": k[2], "state": m.state,
               "comparisons": m.comparisons,
               "expected_rate": None if m.cusum is None else round(m.cusum.p0, 6),
               "statistic": 0.0 if m.cusum is None else round(m.cusum.statistic, 4)}
              for k, m in sorted(sink.monitor.pairs.items())]
    return web.json_response({"object": "list", "data": events, "states": states})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].exposition()
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE
    return response
