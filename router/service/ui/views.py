"""JSON routes the dashboard needs and no other route gives; public API like any other.

* ``GET /v1/pool`` — every model (family, backend, status, profile summary: coverage,
  accuracy, refusal rate, when it was observed) and the pool's pairwise similarity per domain
  (κp with its bootstrap interval, error consistency, agreement, accuracy), with the families
  and the communities detected on the similarity graph.
* ``GET /v1/pairings/current`` — the policy's current choice for every primary and role, with
  score and reason (or why there is none).
* ``GET /v1/stats/disagreements/series?window=S&buckets=N`` — each pair's disagreement rate
  per domain over time: ``N`` buckets over the last ``S`` seconds, each with a Wilson interval,
  and the rate the profile predicts.

Bad query parameters are a 400 in the OpenAI error envelope.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from router.errors import DiffrouteError
from router.live.rates import wilson_interval
from router.pairing.decision import ROLES, RouteRequest
from router.service.live_routes import LiveUnavailableError, query_number
from router.service.state import SETTINGS, STATE
from router.service.ui.pool_view import PoolViewCache, pool_view

POOL_VIEW = web.AppKey("diffroute.ui.pool_view", PoolViewCache)
DEFAULT_WINDOW_S = 3600.0
DEFAULT_BUCKETS = 30
MAX_BUCKETS = 500


def add_routes(app: web.Application) -> None:
    """Register the routes (and the pool view's cache)."""
    settings = app[SETTINGS]
    app[POOL_VIEW] = PoolViewCache(lambda: pool_view(settings))
    app.router.add_get("/v1/pool", get_pool)
    app.router.add_get("/v1/pairings/current", current_pairings)
    app.router.add_get("/v1/stats/disagreements/series", disagreement_series)


async def get_pool(request: web.Request) -> web.Response:
    """The pool view of the current profiles, with each model's live status."""
    state = request.app[STATE]
    view, statuses = await asyncio.gather(request.app[POOL_VIEW].get(state.pairing.version),
                                          state.health.current())
    status = {s.name: {"state": s.status.state, "detail": s.status.detail, "ok": s.status.ok}
              for s in statuses}
    models = [{**m, "status": status.get(m["name"])} for m in view["models"]]
    return web.json_response({**view, "models": models,
                              "profile_version": state.pairing.version})


async def current_pairings(request: web.Request) -> web.Response:
    """What the policy chooses now for every primary and role (no task: all domains)."""
    state = request.app[STATE]
    rows = []
    for primary in state.pool.names:
        for role in ROLES:
            pinned = state.pairing.pairings.pinned_partner(primary, role)
            try:
                decision = await state.pairing.decide(RouteRequest(role=role, primary=primary))
            except DiffrouteError as exc:
                rows.append({"primary": primary, "role": role, "partner": None, "score": None,
                             "reason": str(exc), "pinned": pinned, "error": exc.code})
                continue
            rows.append({**decision.to_json(), "pinned": pinned, "error": None})
    return web.json_response({"object": "list", "data": rows,
                              "pairings": state.pairing.pairings.model_dump(mode="json"),
                              "profile_version": state.pairing.version})


def _point(start: float, n: int, k: int) -> dict[str, Any]:
    low, high = wilson_interval(k, n)
    return {"start": round(start, 3), "comparisons": n, "disagreements": k,
            "rate": k / n if n else None, "interval": [round(low, 6), round(high, 6)]}


async def disagreement_series(request: web.Request) -> web.Response:
    """Rates per pair, domain and time bucket, each with its Wilson band and the prediction."""
    sink = request.app[STATE].live
    if sink is None:
        raise LiveUnavailableError()
    window = query_number(request, "window", DEFAULT_WINDOW_S, 1, 10 * 365 * 86_400)
    buckets = int(query_number(request, "buckets", DEFAULT_BUCKETS, 1, MAX_BUCKETS, int))
    bucket_s = window / buckets
    start = time.time() - window
    counts = await sink.store.bucketed_counts(start, bucket_s)
    # a comparison recorded while this ran may fall one bucket past the last: fold it in
    totals: dict[tuple[str, str, str], dict[int, list[int]]] = {}
    for primary, partner, domain, bucket, n, k in counts:
        slot = totals.setdefault((primary, partner, domain), {}).setdefault(
            min(bucket, buckets - 1), [0, 0])
        slot[0] += n
        slot[1] += k
    series = {key: [_point(start + b * bucket_s, n, k) for b, (n, k) in sorted(slots.items())]
              for key, slots in totals.items()}
    data = []
    for (primary, partner, domain), points in series.items():
        predicted = sink.baseline.predicted_disagreement(primary, partner, domain)
        drift = sink.monitor.pairs.get((primary, partner, domain))
        data.append({"primary": primary, "partner": partner, "domain": domain,
                     "predicted_rate": None if predicted is None else round(predicted, 6),
                     "drift_state": None if drift is None else drift.state,
                     "points": points})
    return web.json_response({"object": "list", "window_s": window, "bucket_s": bucket_s,
                              "start": round(start, 3), "interval_level": 0.95, "data": data})
