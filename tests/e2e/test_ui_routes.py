"""The routes the dashboard reads, over a socket, as any client would use them; the static
assets and their auth; the shipped Grafana dashboard against the real ``/metrics``."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from router.pairing.decider import build_decider
from router.pool import Pool
from router.service.app import announce
from tests.e2e.harness import Running, call
from tests.e2e.ui_world import (
    ADMIN_KEY,
    CLIENT_KEY,
    MODEL_NAMES,
    api,
    audit,
    profiled_fixture,  # noqa: F401  # a fixture the tests use by name
    running_fixture,  # noqa: F401
    ui_settings,
)

CLIENT = {"Authorization": f"Bearer {CLIENT_KEY}"}


async def test_pool_is_what_the_policy_reads(running: Running, tmp_path: Path) -> None:
    pool = await api(running, "GET", "/v1/pool")
    assert [m["name"] for m in pool["models"]] == MODEL_NAMES
    assert pool["families"] == {"a": ["alpha", "alpha-mini"], "b": ["beta"], "c": ["gamma"]}
    alpha = pool["models"][0]
    assert alpha["backend"] == "scripted" and alpha["status"]["state"] == "ready"
    assert alpha["profile"]["coverage"] == 1.0 and alpha["profile"]["shipped"] is False
    assert alpha["profile"]["observed_at"] > 0 and 0 <= alpha["profile"]["accuracy"] <= 1
    # the world's build took 5 samples of each probe where the policy asks 20: the view says
    # what the profile holds, not only what was asked
    assert (alpha["profile"]["samples_held"], alpha["profile"]["samples"]) == (5, 20)
    settings = ui_settings(tmp_path)
    decider = build_decider(settings, Pool(settings), running.app[_state_key(running)]
                            .pairing.pairings)
    sim = pool["similarity"]
    n = len(sim["models"])
    compared = 0
    for domain, matrix in sim["domains"].items():
        for i, a in enumerate(sim["models"]):
            for j, b in enumerate(sim["models"]):
                edge = decider.graph.edge(a, b, domain) if i != j else None
                if edge is None:
                    continue
                for ours, theirs in (("kappa", "kappa"), ("agreement", "agreement"),
                                     ("error_consistency", "error_consistency")):
                    assert matrix[ours][i * n + j] == pytest.approx(edge[theirs], abs=1e-4)
                if edge["interval"] is not None:
                    assert [matrix["kappa_low"][i * n + j], matrix["kappa_high"][i * n + j]] \
                        == pytest.approx(list(edge["interval"]), abs=1e-4)
                compared += 1
    assert compared == len(sim["domains"]) * n * (n - 1)
    assert pool["profile_version"] == decider.version


def _state_key(running: Running) -> Any:
    from router.service.state import STATE

    return STATE


async def test_current_pairings_follow_pins(running: Running) -> None:
    current = await api(running, "GET", "/v1/pairings/current")
    assert [(r["primary"], r["role"]) for r in current["data"]] == [
        (m, role) for m in MODEL_NAMES for role in ("assist", "audit")]
    assert all(r["partner"] and r["reason"] and r["pinned"] is None for r in current["data"])
    await api(running, "PUT", "/v1/pairings",
              {"pinned": {"beta": {"assist": "gamma"}}, "excluded": [["alpha", "alpha-mini"]]},
              key=ADMIN_KEY)
    current = await api(running, "GET", "/v1/pairings/current")
    rows = {(r["primary"], r["role"]): r for r in current["data"]}
    assert rows[("beta", "assist")]["partner"] == "gamma"
    assert rows[("beta", "assist")]["pinned"] == "gamma"
    assert rows[("alpha", "assist")]["partner"] != "alpha-mini"  # excluded
    assert current["pairings"]["excluded"] == [["alpha", "alpha-mini"]]


async def test_series_adds_up_to_the_window_stats(running: Running) -> None:
    for partner in ("beta", "gamma", "beta"):
        await audit(running, partner)
    series = await api(running, "GET", "/v1/stats/disagreements/series?window=600&buckets=12")
    stats = await api(running, "GET", "/v1/stats/disagreements?window=600")
    assert series["bucket_s"] == 50 and series["interval_level"] == 0.95
    totals = {(r["primary"], r["partner"], r["domain"]): (
        sum(p["comparisons"] for p in r["points"]), sum(p["disagreements"] for p in r["points"]))
        for r in series["data"]}
    assert totals == {(r["primary"], r["partner"], r["domain"]): (
        r["comparisons"], r["disagreements"]) for r in stats["data"]}
    beta = next(r for r in series["data"] if r["partner"] == "beta")
    assert beta["predicted_rate"] is not None and beta["drift_state"] in ("ok", "learning")
    point = beta["points"][-1]
    assert point["rate"] == 1.0 and 0 < point["interval"][0] < 1 == point["interval"][1]
    assert series["start"] <= point["start"] < series["start"] + 600


async def test_diffs_newest_first_page_backwards(running: Running) -> None:
    ids = [(await audit(running, "beta"))["live_diff_id"] for _ in range(5)]
    first = await api(running, "GET", "/v1/diffs?order=desc&limit=2")
    assert [d["id"] for d in first["data"]] == ids[:-3:-1]
    second = await api(running, "GET", f"/v1/diffs?order=desc&limit=2&cursor="
                                       f"{first['next_cursor']}")
    assert [d["id"] for d in second["data"]] == [ids[2], ids[1]]
    oldest = await api(running, "GET", "/v1/diffs?limit=2")
    assert [d["id"] for d in oldest["data"]] == ids[:2]


async def test_profile_diff_as_the_html_report(running: Running) -> None:
    status, html = await call(running, "GET", "/v1/profiles/diff?a=alpha&b=beta&format=html",
                              headers=CLIENT)
    assert status == 200 and html.startswith("<!doctype html>")
    assert "diff --behavior a/alpha b/beta" in html and "<script" not in html
    async with aiohttp.ClientSession() as http, http.get(
            running.url + "/v1/profiles/diff?a=alpha&b=beta&format=html",
            headers=CLIENT) as resp:
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]


@pytest.mark.parametrize("path", [
    "/v1/stats/disagreements/series?window=0",
    "/v1/stats/disagreements/series?window=soon",
    "/v1/stats/disagreements/series?window=nan",
    "/v1/stats/disagreements/series?buckets=0",
    "/v1/stats/disagreements/series?buckets=100000",
    "/v1/stats/disagreements/series?buckets=inf",
    "/v1/stats/disagreements/series?buckets=1.5",
    "/v1/diffs?order=sideways",
    "/v1/diffs/stream?order=desc",
    "/v1/profiles/diff?a=alpha&b=beta&format=pdf",
])
async def test_bad_input_is_a_400_envelope(running: Running, path: str) -> None:
    status, body = await call(running, "GET", path, headers=CLIENT)
    assert status == 400, body
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["param"]


@pytest.mark.parametrize("path", ["/v1/pool", "/v1/pairings/current",
                                  "/v1/stats/disagreements/series"])
async def test_data_routes_need_the_key(running: Running, path: str) -> None:
    status, body = await call(running, "GET", path)
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    status, body = await call(running, "GET", path, headers={"Authorization": "Bearer nope"})
    assert status == 401


async def test_assets_are_open_shipped_and_nothing_else(running: Running) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(running.url + "/ui", allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "/ui/"
        async with http.get(running.url + "/ui/") as resp:
            page = await resp.text()
            assert resp.status == 200 and "<main" in page
            assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
            etag = resp.headers["ETag"]
        async with http.get(running.url + "/ui/", headers={"If-None-Match": etag}) as resp:
            assert resp.status == 304
        # every script and stylesheet the page loads is served from the package, no CDN
        for name in re.findall(r'(?:src|href)="/ui/([^"]+)"', page):
            async with http.get(f"{running.url}/ui/{name}") as resp:
                assert resp.status == 200, name
        for name in ("app.js", "api.js", "pool.js", "diff.js", "pairings.js", "live.js"):
            async with http.get(f"{running.url}/ui/{name}") as resp:
                text = await resp.text()
                assert resp.headers["Content-Type"].startswith("text/javascript")
                assert "http://" not in text and "https://" not in text, name
        for path in ("/ui/nothing.js", "/ui/%2e%2e%2fapp.py", "/ui/../router/cli.py"):
            async with http.get(running.url + path, headers=CLIENT) as resp:
                assert resp.status == 404, path
                assert (await resp.json())["error"]["code"] == "not_found"


async def test_start_up_log_line_links_the_dashboard(running: Running) -> None:
    with capture_logs() as logs:
        announce(running.app, running.url)
    started = next(e for e in logs if e["event"] == "service.started")
    assert started["dashboard"] == running.url + "/ui/"


# --- Grafana ---------------------------------------------------------------------------------

SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum",
                                                             "_created"),
            "gauge": ("",), "summary": ("_count", "_sum", "_created")}


def grafana_dashboard() -> dict[str, Any]:
    path = resources.files("router").joinpath("service/ui/static/grafana-dashboard.json")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def queried_metrics(dashboard: dict[str, Any]) -> set[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return {name for e in exprs for name in re.findall(r"\bdiffroute_[a-z_]+", e)}


async def test_grafana_dashboard_queries_only_metrics_that_exist(running: Running) -> None:
    dashboard = grafana_dashboard()
    wanted = queried_metrics(dashboard)
    assert len(wanted) >= 9 and len(dashboard["panels"]) >= 10
    await audit(running, "beta")  # a paired call, so the labelled series have samples too
    async with aiohttp.ClientSession() as http, http.get(running.url + "/metrics",
                                                         headers=CLIENT) as resp:
        exposition = await resp.text()
    exposed = {family.name + suffix for family in text_string_to_metric_families(exposition)
               for suffix in SUFFIXES[family.type]}
    assert wanted <= exposed, sorted(wanted - exposed)
    # what the issue asks for: rates per pair, disagreements, overhead, drift, upstream errors
    assert {"diffroute_paired_comparisons_total", "diffroute_disagreements_total",
            "diffroute_pairing_overhead_seconds_bucket", "diffroute_drift_state",
            "diffroute_upstream_errors_total"} <= wanted
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"]


async def test_openapi_describes_the_dashboards_routes(running: Running) -> None:
    status, doc = await call(running, "GET", "/openapi.json")
    assert status == 200
    assert {"/v1/pool", "/v1/pairings/current", "/v1/stats/disagreements/series"} <= set(
        doc["paths"])
    formats = next(p for p in doc["paths"]["/v1/profiles/diff"]["get"]["parameters"]
                   if p["name"] == "format")
    assert formats["schema"]["enum"] == ["json", "html"]


async def test_pool_without_profiles_is_empty_not_an_error(service: Running) -> None:
    """The standard scripted pool has no profile: models are listed, the matrix is empty, and
    the live routes say they need the durable store."""
    status, pool = await call(service, "GET", "/v1/pool")
    assert status == 200, pool
    assert [m["name"] for m in pool["models"]] == ["alpha", "alpha-mini", "beta", "gamma"]
    assert all(m["profile"] is None for m in pool["models"])
    assert pool["similarity"]["models"] == [] and pool["similarity"]["domains"] == {}
    status, current = await call(service, "GET", "/v1/pairings/current")
    assert status == 200 and len(current["data"]) == 8
    status, body = await call(service, "GET", "/v1/stats/disagreements/series")
    assert status == 503 and body["error"]["code"] == "live_diffs_unavailable"
