"""The dashboard (``/ui/``) and the JSON routes it reads: a ``create_app`` route module.

* :mod:`.assets` — the static page (HTML, CSS, JS modules) shipped as package data;
* :mod:`.views` — ``/v1/pool``, ``/v1/pairings/current``, ``/v1/stats/disagreements/series``;
* :mod:`.pool_view` — what ``/v1/pool`` computes from the profiles;
* ``static/grafana-dashboard.json`` — a Grafana dashboard over ``/metrics``.

The page talks to the same JSON API as any client; it has no data path of its own.
"""

from __future__ import annotations

from aiohttp import web

from router.service.ui import assets, views

DASHBOARD_PATH = "/ui/"


def add_routes(app: web.Application) -> None:
    """Register the dashboard's assets and its JSON routes."""
    assets.add_routes(app)
    views.add_routes(app)
