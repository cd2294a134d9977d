"""``GET /healthz``: liveness (answering at all) and readiness of the pool, from a cache.

The pool's health is cached (``router.service.health_watch``), refreshed in the background
at most every ``server.health_interval_s``: a probe, which needs no key, never makes
upstream requests itself. Details that could reveal internal addresses (a backend's
``detail``) are shown only to a request with a valid key (or when no keys are configured).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from router.errors import BadRequestError
from router.service.middleware import has_valid_key
from router.service.state import STATE


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)


async def healthz(request: web.Request) -> web.Response:
    """200 with each model's status; ``?probe=ready`` answers 503 while a model is not ready.

    Plain ``/healthz`` stays 200 when an upstream is down, so a liveness probe does not restart
    a healthy process because of someone else's outage. A failing live-diff store makes the
    service ``degraded`` (comparisons are not being kept).
    """
    probe = request.query.get("probe")
    if probe is not None and probe != "ready":
        raise BadRequestError(f"probe must be 'ready' (or absent), not '{probe[:50]}'",
                              param="probe")
    state = request.app[STATE]
    watch = state.health
    statuses = await watch.current()
    ready = all(s.status.ok for s in statuses)
    problems = [] if state.live is None else [p for p in (state.live.problem(),) if p]
    detailed = has_valid_key(request)
    models: list[dict[str, Any]] = []
    for s in statuses:
        row = {"name": s.name, "kind": s.kind, "family": s.family, "state": s.status.state}
        if detailed:
            row["detail"] = s.status.detail
        models.append(row)
    body: dict[str, Any] = {
        "status": "ok" if ready and not problems else "degraded",
        "ready": ready,
        "models": models,
        "checked_at": round(watch.checked_at, 3),
        "profile_version": state.pairing.version,
    }
    if problems:
        body["problems"] = problems
    status = 503 if request.query.get("probe") == "ready" and not ready else 200
    return web.json_response(body, status=status)
