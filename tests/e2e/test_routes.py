"""The routing API, health, OpenAPI, logging and graceful shutdown, over a real socket."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from tests.e2e.harness import (
    CAPITAL,
    PARIS,
    Running,
    call,
    make_settings,
    remote,
    scripted,
    serve,
    standard_models,
)

ASK = [{"role": "user", "content": CAPITAL}]


async def test_route_decides_without_calling_models(service: Running) -> None:
    status, body = await call(service, "POST", "/v1/route", {
        "role": "audit", "messages": ASK, "primary": "alpha", "domain": "geo"})
    assert status == 200
    assert (body["primary"], body["partner"], body["role"]) == ("alpha", "beta", "audit")
    assert body["score"] == 0.5 and body["reason"] == "test policy: other family"
    assert body["domains"] == {"geo": 1.0} and body["profile_version"] == "test-v1"
    status, body = await call(service, "POST", "/v1/route", {
        "role": "assist", "task": "x", "candidates": ["alpha-mini", "alpha", "beta"]})
    assert (body["primary"], body["partner"]) == ("alpha-mini", "alpha")


async def test_pairings_are_persisted_and_steer_the_policy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DR_TEST_ADMIN", "adm")
    settings = make_settings(tmp_path, standard_models(), admin_key="env:DR_TEST_ADMIN")
    admin = {"Authorization": "Bearer adm"}
    pairings = {"pinned": {"alpha": {"audit": "gamma"}}, "excluded": [["beta", "gamma"]]}
    async with serve(settings) as running:
        assert await call(running, "GET", "/v1/pairings") == (200, {"pinned": {},
                                                                    "excluded": []})
        status, body = await call(running, "PUT", "/v1/pairings",
                                  {"pinned": {"alpha": {"audit": "zeta"}}}, admin)
        assert status == 400 and "zeta" in body["error"]["message"]
        status, _ = await call(running, "PUT", "/v1/pairings", pairings, admin)
        assert status == 200
    assert (settings.data_dir / "pairings.json").exists()
    async with serve(settings) as running:  # a restart reads them back
        assert (await call(running, "GET", "/v1/pairings"))[1] == pairings
        _, body = await call(running, "POST", "/v1/chat/completions",
                             {"model": "audit:alpha", "messages": ASK})
        assert body["diffroute"]["partner"] == "gamma"
        assert body["diffroute"]["reason"] == "pinned"


async def test_profiles_diff_uses_the_provider(tmp_path: Path) -> None:
    calls: list[tuple[str, str]] = []

    def provider(a: str, b: str) -> dict[str, Any] | None:
        calls.append((a, b))
        if b == "gamma":
            raise LookupError("gamma was never profiled")
        return None if b == "beta" else {"a": a, "b": b, "kappa_p": 0.42}

    async with serve(make_settings(tmp_path, standard_models()),
                     diff_provider=provider) as running:
        assert await call(running, "GET", "/v1/profiles/diff?a=alpha&b=alpha-mini") == (
            200, {"a": "alpha", "b": "alpha-mini", "kappa_p": 0.42})
        status, body = await call(running, "GET", "/v1/profiles/diff?a=alpha&b=beta")
        assert status == 404 and body["error"]["code"] == "profile_not_found"
        status, body = await call(running, "GET", "/v1/profiles/diff?a=alpha&b=gamma")
        assert status == 404 and "never profiled" in body["error"]["message"]
        status, _ = await call(running, "GET",
                               "/v1/profiles/diff?a=alpha&b=alpha-mini&format=json")
        assert status == 200  # the same profiles: served from the cache, not recomputed
    assert calls == [("alpha", "alpha-mini"), ("alpha", "beta"), ("alpha", "gamma")]


async def test_profiles_diff_by_default_diffs_the_stored_profiles(tmp_path: Path) -> None:
    from router.profiling.build import build_profiles

    models = [{"name": "fam-a", "family": "a", "backend": {"kind": "scripted", "prior": "a"}},
              {"name": "fam-b", "family": "b", "backend": {"kind": "scripted", "prior": "b"}}]
    settings = make_settings(tmp_path, models)
    await build_profiles(settings, "default", ["fam-a", "fam-b"], 5, 0.7, 8)
    async with serve(settings) as running:  # no diff_provider: the service's own
        status, body = await call(running, "GET", "/v1/profiles/diff?a=fam-a&b=fam-b")
    assert status == 200, body
    assert body["schema"] == "diffroute.diff/2" and (body["a"], body["b"]) == ("fam-a", "fam-b")
    assert body["suite"] == "default" and body["n_probes_tested"] > 400
    # two different priors: they differ beyond noise in every domain with choice probes
    assert body["flagged_domains"] and body["overall"]["flagged"]


async def test_healthz_reports_pool_readiness(tmp_path: Path) -> None:
    models = [scripted("alpha", "a", PARIS),
              remote("gone", "b", "http://127.0.0.1:9/v1", "x", timeouts={"total": 1})]
    async with serve(make_settings(tmp_path, models)) as running:
        status, body = await call(running, "GET", "/healthz")
        assert status == 200 and body["ready"] is False and body["status"] == "degraded"
        states = {m["name"]: m["state"] for m in body["models"]}
        assert states == {"alpha": "ready", "gone": "unreachable"}
        assert (await call(running, "GET", "/healthz?probe=ready"))[0] == 503


async def test_openapi_describes_the_routing_routes(service: Running) -> None:
    status, doc = await call(service, "GET", "/openapi.json")
    assert status == 200 and doc["openapi"] == "3.1.0"
    assert {"/v1/route", "/v1/pairings", "/v1/profiles/diff", "/healthz"} <= set(doc["paths"])
    schemas = doc["components"]["schemas"]
    assert {"RouteRequest", "Decision", "Pairings", "Error"} <= set(schemas)
    assert schemas["RouteRequest"]["properties"]["role"]["enum"] == ["assist", "audit"]
    assert "put" in doc["paths"]["/v1/pairings"]


async def test_access_log_has_request_id_and_no_prompt(service: Running) -> None:
    with capture_logs() as logs:
        async with aiohttp.ClientSession() as http, http.post(
                service.url + "/v1/chat/completions", headers={"x-request-id": "req-7"},
                json={"model": "audit:alpha", "messages": ASK}) as response:
            assert response.headers["x-request-id"] == "req-7"
            await response.read()
    access = [e for e in logs if e["event"] == "http.request"]
    assert access[0]["http.route"] == "/v1/chat/completions"
    assert access[0]["http.response.status_code"] == 200 and access[0]["duration_ms"] > 0
    calls = [e for e in logs if e["event"] == "gen_ai.chat"]
    assert {e["gen_ai.request.model"] for e in calls} == {"alpha", "beta"}
    assert all(e["request_id"] == "req-7" and e["gen_ai.usage.input_tokens"] > 0 for e in calls)
    assert CAPITAL not in json.dumps(logs, default=str)


async def test_every_kind_of_response_carries_the_request_id(service: Running) -> None:
    """Answers, errors, streams and redirects: each echoes the id it was given."""
    chat = {"model": "alpha", "messages": ASK}
    requests: list[tuple[str, str, Any, int]] = [
        ("POST", "/v1/route", {"role": "audit", "task": CAPITAL}, 200),
        ("GET", "/no/such/route", None, 404),
        ("POST", "/v1/chat/completions", {**chat, "stream": True}, 200),
        ("POST", "/v1/chat/completions", {**chat, "n": 0}, 400),
        ("GET", "/ui", None, 302)]
    async with aiohttp.ClientSession() as http:
        for i, (method, path, body, status) in enumerate(requests):
            async with http.request(method, service.url + path, json=body,
                                    headers={"x-request-id": f"kind-{i}"},
                                    allow_redirects=False) as response:
                await response.read()
                assert response.status == status, path
                assert response.headers["x-request-id"] == f"kind-{i}", path


async def test_prompts_are_logged_only_when_configured(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, standard_models(), log_prompts=True)
    with capture_logs() as logs:
        async with serve(settings) as running:
            await call(running, "POST", "/v1/chat/completions",
                       {"model": "alpha", "messages": ASK})
    chat = next(e for e in logs if e["event"] == "gen_ai.chat")
    assert chat["gen_ai.input.messages"] == ASK
    assert chat["gen_ai.output.messages"] == [PARIS]


async def test_graceful_shutdown_finishes_the_in_flight_request(tmp_path: Path) -> None:
    models = [scripted("slow", "a", "done at last", latency_ms=600)]
    async with serve(make_settings(tmp_path, models)) as running:
        pending = asyncio.create_task(call(running, "POST", "/v1/chat/completions",
                                           {"model": "slow", "messages": ASK}))
        await asyncio.sleep(0.2)  # the request is in the handler now
        await running.runner.cleanup()
        status, body = await pending
    assert status == 200
    assert body["choices"][0]["message"]["content"] == "done at last"


async def test_the_policy_reads_live_outcomes_of_the_running_service(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from router.pairing.decider import PolicyDecider, build_decider
    from router.service import STATE

    monkeypatch.setenv("DR_TEST_ADMIN", "adm")
    settings = make_settings(tmp_path, standard_models(), admin_key="env:DR_TEST_ADMIN")
    async with serve(settings, decider_factory=build_decider) as running:
        state = running.app[STATE]
        assert state.live is not None
        monitor = state.live.monitor
        assert isinstance(state.pairing.decider, PolicyDecider)
        assert state.pairing.decider.live is monitor
        status, _ = await call(running, "PUT", "/v1/pairings", {"pinned": {}, "excluded": []},
                               {"Authorization": "Bearer adm"})
        assert status == 200
        assert isinstance(state.pairing.decider, PolicyDecider)
        assert state.pairing.decider.live is monitor  # rebuilt: still wired
