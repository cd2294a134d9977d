"""The dashboard's static files, served from the package under ``/ui/``.

Every asset ships as package data (``router/service/ui/static``): no CDN, no build step. They
are read once when the app is built and served from memory; they hold no data, so they need no
key (:func:`router.service.middleware.public`) — every data call the page makes carries the
key the page asked for.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

from router.service.middleware import public

STATIC = "service/ui/static"
CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css",
                 ".json": "application/json", ".svg": "image/svg+xml"}
# the page may only load what it ships and talk to its own origin; a diff report is shown in
# a sandboxed frame (srcdoc), which needs no source of its own
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; connect-src 'self'; frame-src 'self'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


ASSETS = web.AppKey("diffroute.ui.assets", dict[str, Asset])


def load_assets() -> dict[str, Asset]:
    """Every file of the static folder, by its name."""
    folder = resources.files("router").joinpath(STATIC)
    assets = {}
    for entry in folder.iterdir():
        suffix = entry.name[entry.name.rfind("."):]
        if entry.is_file() and suffix in CONTENT_TYPES:
            body = entry.read_bytes()
            assets[entry.name] = Asset(body, CONTENT_TYPES[suffix],
                                       '"' + hashlib.sha256(body).hexdigest()[:16] + '"')
    return assets


def add_routes(app: web.Application) -> None:
    app[ASSETS] = load_assets()
    app.router.add_get("/ui", to_index)
    app.router.add_get("/ui/", index)
    app.router.add_get("/ui/{name}", asset)


@public
async def to_index(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/")


@public
async def index(request: web.Request) -> web.Response:
    return _serve(request, "index.html")


@public
async def asset(request: web.Request) -> web.Response:
    return _serve(request, request.match_info["name"])


def _serve(request: web.Request, name: str) -> web.Response:
    found = request.app[ASSETS].get(name)
    if found is None:
        raise web.HTTPNotFound()
    headers = {"ETag": found.etag, "Cache-Control": "no-cache",
               "X-Content-Type-Options": "nosniff", "Content-Security-Policy": CSP,
               "Referrer-Policy": "no-referrer"}
    if request.headers.get("If-None-Match") == found.etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=found.body, content_type=found.content_type, charset="utf-8",
                        headers=headers)
