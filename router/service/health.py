"""``GET /healthz``: liveness (answering at all) and readiness of the pool."""

from __future__ import annotations

from aiohttp import web

from router.service.state import STATE


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)


async def healthz(request: web.Request) -> web.Response:
    """200 with each model's status; ``?probe=ready`` answers 503 while a model is not ready.

    Plain ``/healthz`` stays 200 when an upstream is down, so a liveness probe does not restart
    a healthy process because of someone else's outage.
    """
    state = request.app[STATE]
    statuses = await state.pool.status()
    ready = all(s.status.ok for s in statuses)
    body = {
        "status": "ok" if ready else "degraded",
        "ready": ready,
        "models": [{"name": s.name, "kind": s.kind, "family": s.family,
                    "state": s.status.state, "detail": s.status.detail} for s in statuses],
        "profile_version": state.pairing.version,
    }
    status = 503 if request.query.get("probe") == "ready" and not ready else 200
    return web.json_response(body, status=status)
