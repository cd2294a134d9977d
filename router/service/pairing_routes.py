"""The routing routes: ``POST /v1/route``, ``GET/PUT /v1/pairings``, ``GET /v1/profiles/diff``
(JSON, or ``format=html``: the self-contained HTML report).

None of them calls a model: they ask the policy, the pairings store or the diff provider. A
routed decision is kept for a while under its ``decision_id``, for ``POST /v1/diffs``
(:mod:`router.service.report_routes`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from profiles.diff import Diff
from profiles.report.html import render_html
from router.errors import BadRequestError, DiffrouteError, UnknownModelError
from router.pairing.decision import RouteRequest
from router.pairing.pinned import parse_pairings
from router.service.diff_cache import DiffCache
from router.service.middleware import admin_only, error_response
from router.service.schema import parse_route, read_json
from router.service.state import STATE
from router.service.wire import json_response

DIFFS = web.AppKey("diffroute.diffs", DiffCache)
"""The diffs ``GET /v1/profiles/diff`` computed, kept per profile version."""


def add_routes(app: web.Application) -> None:
    """Register the routing routes."""
    app.router.add_post("/v1/route", route)
    app.router.add_get("/v1/pairings", get_pairings)
    app.router.add_put("/v1/pairings", put_pairings)
    app.router.add_get("/v1/profiles/diff", profiles_diff)
    app[DIFFS] = DiffCache()


async def route(request: web.Request) -> web.Response:
    """A pairing decision: ``{decision_id, primary, partner, role, score, reason, …}``; the id
    is kept (``RecentDecisions``) so the framework can report the pair's answers."""
    state = request.app[STATE]
    body = parse_route(await read_json(request))
    if body.primary not in (None, "auto"):  # "auto" is a primary's word, not a candidate's
        state.pool.get(body.primary, param="primary")
    for name in body.candidates or ():
        state.pool.get(name, param="candidates")
    primary = None if body.primary in (None, "auto") else body.primary
    route_request = RouteRequest(
        role=body.role, primary=primary, task=body.task_text(),
        candidates=tuple(body.candidates) if body.candidates else None, domain=body.domain)
    decision = await state.pairing.decide(route_request)
    routed = state.decisions.add(decision, body.task_messages())
    return json_response({"decision_id": routed.id, **decision.to_json(),
                          "expires_in_s": state.decisions.ttl_s})


async def get_pairings(request: web.Request) -> web.Response:
    """The configured pinned partners and exclusions."""
    return web.json_response(request.app[STATE].pairing.pairings.model_dump(mode="json"))


@admin_only
async def put_pairings(request: web.Request) -> web.Response:
    """Replace the pairings (admin key); persisted in the store; unknown models are a 400."""
    state = request.app[STATE]
    pairings = parse_pairings(await read_json(request))
    known = set(state.pool.names)
    unknown = pairings.unknown_models(known)
    if unknown:
        raise BadRequestError(f"unknown model(s) in pairings: {', '.join(map(_quoted, unknown))} "
                              f"(known: {', '.join(state.pool.names)})",
                              param=pairings.unknown_param(known))
    await state.pairing.replace(pairings)  # rebuilt off the event loop, then persisted
    return web.json_response(pairings.model_dump(mode="json"))


async def profiles_diff(request: web.Request) -> web.Response:
    """The behavioral diff of models ``a`` and ``b``, from the injected diff provider, once
    per profile version (:class:`~router.service.diff_cache.DiffCache`)."""
    state = request.app[STATE]
    a, b = request.query.get("a", ""), request.query.get("b", "")
    if request.query.get("format", "json") not in ("json", "html"):
        raise BadRequestError("format must be json or html", param="format")
    for param, value in (("a", a), ("b", b)):
        if not value:
            raise BadRequestError(f"query parameter '{param}' (a model name) is required",
                                  param=param)
    if state.diff_provider is None:
        return _no_profile(a, b, "no behavioral profiles are loaded")
    try:
        diff = await request.app[DIFFS].get(state.diff_provider, a, b, state.pairing.version)
    except UnknownModelError as exc:
        exc.param = "a" if exc.model == a else "b"  # the query parameter that named it
        raise
    except DiffrouteError:
        raise
    except LookupError as exc:
        return _no_profile(a, b, str(exc).strip("'\"") or "no profile")
    if diff is None:
        return _no_profile(a, b, "no profile")
    if request.query.get("format", "json") == "html":
        return web.Response(text=_report(diff), content_type="text/html",
                            headers={"Content-Security-Policy": "default-src 'none'; "
                                     "style-src 'unsafe-inline'; frame-ancestors 'none'",
                                     "X-Content-Type-Options": "nosniff"})
    return web.json_response(diff)


def _report(diff: dict[str, Any]) -> str:
    """The diff as the self-contained HTML report (``diffroute diff --format html``)."""
    try:
        return render_html(Diff.from_json(diff))
    except (KeyError, TypeError) as exc:
        raise DiffrouteError(f"the diff provider's answer is not a diff ({exc!r}): "
                             "ask for format=json") from None


def _no_profile(a: str, b: str, why: str) -> web.Response:
    return error_response(404, f"no behavioral diff for '{a}' and '{b}': {why}",
                          param="a", code="profile_not_found")


def _quoted(name: str) -> str:
    """A model name as a message shows it: quoted (a pin to ``""`` read "pairings:  "), cut."""
    return f"'{name}'" if len(name) <= 100 else f"'{name[:100]}…'"
