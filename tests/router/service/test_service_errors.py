"""Every error path of the service: status, OpenAI envelope, a message naming the problem."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from router.config import Settings
from router.errors import ConfigError, ForbiddenError
from router.pairing.decision import Decision, LiveSource, RouteRequest
from router.pairing.pinned import Pairings
from router.pool import Pool
from router.service import create_app
from tests.e2e.harness import (
    CAPITAL,
    Running,
    call,
    make_settings,
    remote,
    scripted,
    serve,
    standard_models,
)
from tests.fakes import FakeUpstream, Reply

ASK = [{"role": "user", "content": CAPITAL}]
CHAT = "/v1/chat/completions"


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Running]:
    async with serve(make_settings(tmp_path, standard_models(), max_body_bytes=2048)) as running:
        yield running


def envelope(payload: Any) -> dict[str, Any]:
    """The OpenAI error envelope, checked for shape."""
    assert isinstance(payload, dict) and set(payload) == {"error"}, payload
    error = payload["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    return dict(error)


@pytest.mark.parametrize(("body", "status", "param", "words"), [
    ({"model": "alpha", "messages": []}, 400, "messages", "at least one message"),
    ({"model": "alpha"}, 400, "messages", "Field required"),
    ({"model": "alpha", "messages": "hi"}, 400, "messages", "valid list"),
    ({"model": "alpha", "messages": ASK, "temperature": "hot"}, 400, "temperature", "number"),
    ({"model": "alpha", "messages": ASK, "temperature": 3}, 400, "temperature", "less than"),
    ({"model": "alpha", "messages": [{"role": "wizard", "content": "x"}]}, 400,
     "messages[0].role", "Input should be"),
    ({"model": "nope", "messages": ASK}, 404, "model", "'nope' is not in the pool"),
    ({"model": "audit:nope", "messages": ASK}, 404, "model", "'nope' is not in the pool"),
    ({"model": "audit:alpha", "messages": ASK, "diffroute": {"partnr": "beta"}}, 400,
     "diffroute.partnr", "unknown diffroute option 'partnr'"),
    ({"model": "audit:alpha", "messages": ASK, "diffroute": {"audit_mode": "vote"}}, 400,
     "diffroute.audit_mode", "'concurrent' or 'review'"),
    ({"model": "audit:alpha", "messages": ASK, "diffroute": {"partner": "nobody"}}, 404,
     "diffroute.partner", "'nobody' is not in the pool"),
    ({"model": "audit:alpha", "messages": ASK, "diffroute": {"partner": "alpha"}}, 400,
     "diffroute.partner", "is the primary itself"),
    ({"model": "audit:alpha", "messages": ASK, "diffroute": {"role": "assist"}}, 400,
     "diffroute.role", "contradicts"),
    ({"model": "alpha", "messages": ASK, "diffroute": {"partner": "beta"}}, 400,
     "diffroute.partner", "needs a paired call"),
    ({"model": "audit:alpha", "messages": ASK, "n": 2}, 400, "n", "only supported for pool"),
    ({"model": "audit:alpha", "messages": ASK, "n": 2, "stream": True}, 400, "n",
     "only supported for pool"),
    ({"model": "alpha", "messages": ASK, "n": 2, "stream": True}, 400, "n", "stream"),
    ({"model": "audit:alpha", "messages": ASK, "diffroute": {"candidates": ["alpha"]}}, 409,
     None, "no audit partner for 'alpha'"),
    # a content part's own problem, not "content: Input should be a valid string"
    ({"model": "alpha", "messages": [{"role": "user", "content": [{"type": "text"}]}]}, 400,
     "messages[0].content[0].text", "Field required"),
    ({"model": "alpha", "messages": [{"role": "user", "content": [
        {"type": "text", "text": None}]}]}, 400, "messages[0].content[0].text", "valid string"),
    ({"model": "alpha", "messages": [{"role": "user", "content": {"text": "x"}}]}, 400,
     "messages[0].content", "valid string"),
])
async def test_chat_request_errors(service: Running, body: Any, status: int, param: str | None,
                                   words: str) -> None:
    got, payload = await call(service, "POST", CHAT, body=body)
    error = envelope(payload)
    assert got == status, payload
    assert error["param"] == param
    assert words in error["message"]


async def test_malformed_json_and_non_object(service: Running) -> None:
    status, payload = await call(service, "POST", CHAT, raw=b'{"model": "alpha",')
    assert status == 400
    error = envelope(payload)
    assert "malformed JSON" in error["message"] and error["code"] == "invalid_json"
    status, payload = await call(service, "POST", CHAT, raw=b"[1, 2]")
    assert status == 400 and "must be a JSON object" in envelope(payload)["message"]
    status, payload = await call(service, "POST", CHAT, raw=b"")
    assert status == 400 and "empty" in envelope(payload)["message"]


async def test_unknown_diffroute_header(service: Running) -> None:
    status, payload = await call(service, "POST", CHAT, body={"model": "audit:alpha",
                                 "messages": ASK}, headers={"x-diffroute-partnr": "beta"})
    error = envelope(payload)
    assert status == 400 and "unknown header 'x-diffroute-partnr'" in error["message"]
    status, payload = await call(service, "POST", CHAT, body={"model": "assist:alpha",
                                 "messages": ASK}, headers={"x-diffroute-shadow-rate": "lots"})
    assert status == 400 and "x-diffroute-shadow-rate" in envelope(payload)["message"]


async def test_an_option_given_as_a_header_is_named_as_the_header(service: Running) -> None:
    """A header option that needs a paired call, or contradicts the model's role, was named
    ``diffroute.<option>``: a field the client never wrote."""
    cases = [({"model": "alpha"}, {"x-diffroute-audit-mode": "review"},
              "x-diffroute-audit-mode", "needs a paired call"),
             ({"model": "audit:alpha"}, {"x-diffroute-role": "assist"}, "x-diffroute-role",
              "contradicts"),
             ({"model": "alpha", "diffroute": {"partner": "beta"}}, {"x-diffroute-partner": "x"},
              "diffroute.partner", "needs a paired call")]  # the body's wins, and is named
    for body, headers, param, words in cases:
        status, payload = await call(service, "POST", CHAT, body={**body, "messages": ASK},
                                     headers=headers)
        error = envelope(payload)
        assert status == 400 and error["param"] == param and words in error["message"], error


@pytest.mark.parametrize(("body", "headers", "status", "param", "words"), [
    ({"model": "audit:alpha"}, {"x-diffroute-partner": "nobody"}, 404,
     "x-diffroute-partner", "'nobody' is not in the pool"),
    ({"model": "audit:alpha"}, {"x-diffroute-partner": "alpha"}, 400,
     "x-diffroute-partner", "is the primary itself"),
    ({"model": "audit:alpha"}, {"x-diffroute-candidates": "beta, nobody"}, 404,
     "x-diffroute-candidates", "'nobody' is not in the pool"),
    ({"model": "alpha"}, {"x-diffroute-domain": "nowhere"}, 400, "x-diffroute-domain",
     "unknown domain 'nowhere'"),
    ({"model": "audit:alpha", "diffroute": {"partner": "nobody"}},
     {"x-diffroute-partner": "beta"}, 404, "diffroute.partner", "'nobody' is not"),
])
async def test_an_option_the_engine_refuses_is_named_as_the_client_gave_it(
        service: Running, body: Any, headers: dict[str, str], status: int, param: str,
        words: str) -> None:
    """An unknown partner, candidate or domain given as a header was named
    ``diffroute.<option>`` (a body field the client never wrote)."""
    got, payload = await call(service, "POST", CHAT, body={**body, "messages": ASK},
                              headers=headers)
    error = envelope(payload)
    assert (got, error["param"]) == (status, param) and words in error["message"], error


async def test_body_too_large(service: Running) -> None:
    big = {"model": "alpha", "messages": [{"role": "user", "content": "x" * 4000}]}
    status, payload = await call(service, "POST", CHAT, body=big)
    error = envelope(payload)
    assert status == 413 and "2048 bytes" in error["message"]


async def test_unknown_route_and_method(service: Running) -> None:
    status, payload = await call(service, "GET", "/v1/nothing")
    assert status == 404 and "no route GET /v1/nothing" in envelope(payload)["message"]
    status, payload = await call(service, "GET", CHAT)
    assert status == 405 and "method GET is not allowed" in envelope(payload)["message"]


async def test_route_errors(service: Running) -> None:
    status, payload = await call(service, "POST", "/v1/route", body={"role": "audit"})
    assert status == 400 and "'task'" in envelope(payload)["message"]
    status, payload = await call(service, "POST", "/v1/route",
                                 body={"role": "judge", "task": "x"})
    assert status == 400 and envelope(payload)["param"] == "role"
    status, payload = await call(service, "POST", "/v1/route",
                                 body={"role": "audit", "task": "x", "primary": "zeta"})
    assert status == 404 and "'zeta'" in envelope(payload)["message"]


async def test_profiles_diff_needs_both_models(service: Running) -> None:
    status, payload = await call(service, "GET", "/v1/profiles/diff?a=alpha")
    assert status == 400 and envelope(payload)["param"] == "b"
    status, payload = await call(service, "GET", "/v1/profiles/diff?a=alpha&b=beta")
    assert status == 404 and "no profile for model" in envelope(payload)["message"]
    status, payload = await call(service, "GET", "/v1/profiles/diff?a=alpha&b=zeta")
    assert status == 404 and "'zeta'" in envelope(payload)["message"]
    assert envelope(payload)["param"] == "b"
    status, payload = await call(service, "GET", "/v1/profiles/diff?a=zeta&b=alpha")
    assert status == 404 and envelope(payload)["param"] == "a"


# --- auth -------------------------------------------------------------------------------------


async def test_client_and_admin_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DR_TEST_ADMIN", "admin-secret-9")
    settings = make_settings(tmp_path, standard_models(), api_keys=["client-secret-1"],
                             admin_key="env:DR_TEST_ADMIN")
    body = {"model": "alpha", "messages": ASK}
    with capture_logs() as logs:
        async with serve(settings) as running:
            for headers in ({}, {"Authorization": "Bearer wrong"},
                            {"Authorization": "Basic client-secret-1"}):
                status, payload = await call(running, "POST", CHAT, body=body, headers=headers)
                assert status == 401
                assert envelope(payload)["code"] == "invalid_api_key"
            ok = {"Authorization": "Bearer client-secret-1"}
            assert (await call(running, "POST", CHAT, body=body, headers=ok))[0] == 200
            assert (await call(running, "GET", "/healthz"))[0] == 200  # probes need no key
            assert (await call(running, "GET", "/openapi.json"))[0] == 200
            pairings = {"pinned": {"alpha": {"audit": "gamma"}}}
            status, payload = await call(running, "PUT", "/v1/pairings", body=pairings,
                                         headers=ok)
            assert status == 403 and "admin key" in envelope(payload)["message"]
            assert envelope(payload)["code"] == "forbidden"
            status, payload = await call(running, "PUT", "/v1/pairings", body=pairings,
                                         headers={"Authorization": "Bearer wrong"})
            assert status == 401 and envelope(payload)["code"] == "invalid_api_key"
            admin = {"Authorization": "Bearer admin-secret-9"}
            assert (await call(running, "PUT", "/v1/pairings", body=pairings,
                               headers=admin))[0] == 200
            assert (await call(running, "GET", "/v1/models", headers=admin))[0] == 200
    logged = json.dumps(logs, default=str)
    assert "client-secret-1" not in logged and "admin-secret-9" not in logged
    assert any(e.get("http.response.status_code") == 401 for e in logs)


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
async def test_a_browser_page_of_another_origin_may_not_call_the_service(
        service: Running, site: str) -> None:
    """With no keys (the default), a page the user visits could post JSON as ``text/plain``
    (no CORS preflight) to the service on 127.0.0.1: run models, write live comparisons."""
    browser = {"Content-Type": "text/plain", "Sec-Fetch-Site": site, "Origin": "http://evil"}
    status, payload = await call(service, "POST", CHAT, body={"model": "alpha",
                                                              "messages": ASK}, headers=browser)
    assert status == 403 and envelope(payload)["code"] == "cross_origin_request"
    assert (await call(service, "GET", "/v1/diffs", headers=browser))[0] == 403
    # the dashboard's own calls (same-origin), its assets, and every non-browser client pass
    same = {"Sec-Fetch-Site": "same-origin"}
    assert (await call(service, "POST", CHAT, body={"model": "alpha", "messages": ASK},
                       headers=same))[0] == 200
    assert (await call(service, "GET", "/ui/app.js", headers=browser))[0] == 200
    assert (await call(service, "GET", "/v1/models"))[0] == 200


async def test_a_name_pointed_at_the_loopback_service_is_refused(tmp_path: Path) -> None:
    """DNS rebinding: a page of the attacker's name, re-pointed at 127.0.0.1 once loaded, is
    same-origin for the browser (no ``Sec-Fetch-Site: cross-site``) and read the live diffs —
    prompts and answers — of a keyless service: ``Host: evil.example`` got a 200."""
    settings = make_settings(tmp_path, standard_models(), allowed_hosts=["gw.internal"])
    async with serve(settings) as running:
        for host in ("evil.example", "evil.example:8080", "EVIL.example.", ""):
            status, payload = await call(running, "GET", "/v1/diffs", headers={"Host": host})
            assert status == 403 and envelope(payload)["code"] == "host_not_allowed", host
            assert "server.allowed_hosts" in envelope(payload)["message"]
        status, _ = await call(running, "POST", CHAT, body={"model": "alpha", "messages": ASK},
                               headers={"Host": "evil.example"})
        assert status == 403
        for host in ("127.0.0.1:8080", "localhost", "localhost:9", "app.localhost",
                     "[::1]:8080", "10.0.0.7", "gw.internal:443", "GW.Internal"):
            assert (await call(running, "GET", "/v1/diffs", headers={"Host": host}))[0] == 200, \
                host


def test_which_host_names_a_service_answers_to() -> None:
    from router.config import ServerConfig
    from router.service.app import allowed_hosts

    assert allowed_hosts(ServerConfig()) == {"localhost"}  # 127.0.0.1
    assert allowed_hosts(ServerConfig(host="::1", allowed_hosts=("A.example",))) == {
        "localhost", "a.example"}
    assert allowed_hosts(ServerConfig(host="127.0.0.1", allowed_hosts=("*",))) is None
    # on another address (behind a proxy, in a container): any name unless some are given
    assert allowed_hosts(ServerConfig(host="0.0.0.0")) is None
    assert allowed_hosts(ServerConfig(host="0.0.0.0", allowed_hosts=("gw.example",))) == {
        "gw.example"}


def test_a_refused_host_is_named_as_it_must_be_listed() -> None:
    """The 403 said "does not answer to the host name 'gw.internal:8080': add it to
    server.allowed_hosts"; listed so, with its port, it was never matched (the header's port
    is set aside), and the same 403 came back."""
    from router.config import ServerConfig
    from router.service.app import allowed_hosts
    from router.service.middleware import _check_host
    from router.service.state import Keys

    with pytest.raises(ForbiddenError) as refused:
        _check_host(Keys(hosts=allowed_hosts(ServerConfig())), "GW.internal:8080")
    assert "'gw.internal'" in str(refused.value), str(refused.value)
    for listed in ("gw.internal", "gw.internal:8080", "GW.Internal.:443"):
        _check_host(Keys(hosts=allowed_hosts(ServerConfig(allowed_hosts=(listed,)))),
                    "gw.internal:8080")  # no 403


async def test_put_pairings_without_configured_admin_key(service: Running) -> None:
    status, payload = await call(service, "PUT", "/v1/pairings", body={"pinned": {}})
    assert status == 403 and "none is configured" in envelope(payload)["message"]
    assert envelope(payload)["code"] == "admin_key_not_configured"


def test_unset_key_variable_fails_at_start(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DR_TEST_UNSET", raising=False)
    settings = make_settings(tmp_path, standard_models(), api_keys=["env:DR_TEST_UNSET"])
    with pytest.raises(ConfigError, match="env:DR_TEST_UNSET is not set"):
        create_app(settings)


# --- upstream failures ------------------------------------------------------------------------


async def test_upstream_errors_are_502_and_504_naming_the_model(tmp_path: Path) -> None:
    async with FakeUpstream() as fake:
        models = [remote("remote-a", "x", fake.base_url, "up-a",
                         timeouts={"total": 0.5, "read": 0.5}),
                  remote("remote-b", "y", fake.base_url, "up-b")]
        async with serve(make_settings(tmp_path, models)) as running:
            body = {"model": "remote-a", "messages": ASK}
            fake.enqueue(Reply.error(500, "kaput"))
            status, payload = await call(running, "POST", CHAT, body=body)
            error = envelope(payload)
            assert status == 502 and "'remote-a'" in error["message"]
            assert error["type"] == "upstream_error"

            fake.enqueue(Reply(delay=2.0))
            status, payload = await call(running, "POST", CHAT, body=body)
            assert status == 504 and "'remote-a'" in envelope(payload)["message"]

            fake.enqueue(Reply.malformed())
            status, payload = await call(running, "POST", CHAT, body=body)
            assert status == 502 and envelope(payload)["code"] == "upstream_bad_response"

            fake.enqueue(Reply.error(503, "down"))
            status, payload = await call(running, "POST", CHAT, body={**body, "stream": True})
            assert status == 502 and "'remote-a'" in envelope(payload)["message"]


async def test_failing_partner_does_not_fail_the_audit(tmp_path: Path) -> None:
    models = [scripted("alpha", "a", "fine"),
              scripted("broken", "b", "never", failure_rate=1.0)]
    async with serve(make_settings(tmp_path, models)) as running:
        status, payload = await call(running, "POST", CHAT,
                                     body={"model": "audit:alpha", "messages": ASK})
    assert status == 200
    assert payload["choices"][0]["message"]["content"] == "fine"
    assert payload["diffroute"]["agreement"] is None
    assert "'broken'" in payload["diffroute"]["partner_error"]


async def test_stream_failing_midway_ends_with_an_error_event(tmp_path: Path) -> None:
    async with FakeUpstream() as fake:
        cut = [{"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "up",
                "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]}]
        fake.enqueue(Reply(chunks=cut, done=False))
        models = [remote("remote-a", "x", fake.base_url, "up")]
        async with serve(make_settings(tmp_path, models)) as running, \
                aiohttp.ClientSession() as http, http.post(running.url + CHAT, json={
                "model": "remote-a", "messages": ASK, "stream": True}) as response:
            assert response.status == 200
            events = [line.removeprefix(b"data: ").strip()
                      async for line in response.content if line.startswith(b"data: ")]
    # the upstream's chunk is relayed as it came (a plain call passes the stream through)
    assert json.loads(events[0])["choices"][0]["delta"]["content"] == "Hel"
    assert json.loads(events[0])["model"] == "remote-a"
    error = envelope(json.loads(events[-2]))
    assert "'remote-a'" in error["message"] and "ended before completion" in error["message"]
    assert events[-1] == b"[DONE]"


class ExplodingDecider:
    version = "boom"
    domains = frozenset({"general", "geography", "arithmetic"})

    def __init__(self, settings: Settings, pool: Pool, pairings: Pairings,
                 live: LiveSource | None = None) -> None:
        pass

    def with_pairings(self, pairings: Pairings) -> ExplodingDecider:
        return self

    def blocking(self, request: RouteRequest) -> bool:
        return False

    def decide(self, request: RouteRequest) -> Decision:
        raise RuntimeError("internal detail that must not leak")


async def test_unexpected_exception_is_a_500_envelope_without_traceback(
        tmp_path: Path) -> None:
    with capture_logs() as logs:
        async with serve(make_settings(tmp_path, standard_models()),
                         decider_factory=ExplodingDecider) as running:
            status, payload = await call(running, "POST", CHAT,
                                         body={"model": "audit:alpha", "messages": ASK})
    error = envelope(payload)
    assert status == 500 and error["type"] == "server_error"
    assert "must not leak" not in error["message"] and "Traceback" not in error["message"]
    assert "request id" in error["message"]
    assert any(e["event"] == "http.unhandled_error" for e in logs)


async def test_a_key_that_is_not_utf8_is_a_401_not_a_500(tmp_path: Path) -> None:
    """A header's bytes that are not UTF-8 (a Latin-1 key) reached the key comparison as lone
    surrogates: `str.encode` raised, a 500 with a traceback on every keyed route — /healthz
    included, whose backend details depend on the key."""
    settings = make_settings(tmp_path, standard_models(), api_keys=["client-secret-1"])
    async with serve(settings) as running:
        host, port = running.url.removeprefix("http://").split(":")
        for path, expected in (("/v1/models", 401), ("/healthz", 200)):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n".encode()
                         + b"Authorization: Bearer client-secr\xe9t-1\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            head, _, body = answer.partition(b"\r\n\r\n")
            assert int(head.split()[1]) == expected, answer[:300]
            if expected == 401:
                assert envelope(json.loads(body))["code"] == "invalid_api_key"


async def test_a_remote_embedder_that_is_away_is_no_500(tmp_path: Path) -> None:
    """`embedder: {kind: openai}` answering 503 while serving: every paired call and
    `/v1/route` on a task not seen before (the task is embedded to find its domains), and
    `/v1/pool` or `/v1/profiles/diff` when they had to compute, were a 500 `internal_error`
    with a traceback in the log. A task that cannot be embedded is paired over all domains;
    a route that cannot do without the embedder is a 503 naming it."""
    from profiles.embed import EmbeddingError
    from router.config import settings_from_mapping
    from router.pairing.decider import build_decider

    async with FakeUpstream() as fake:
        settings = settings_from_mapping({
            "models": standard_models(), "data_dir": str(tmp_path / "data"),
            "embedder": {"kind": "openai", "base_url": fake.base_url, "model": "e"},
            "policy": {"suite": "smoke", "task_embedder": "responses", "bootstrap": 0},
            "live": {"profiles": False}, "server": {"shutdown_timeout": 5}})

        def add_routes(app: Any) -> None:
            async def embeds(_request: Any) -> Any:
                raise EmbeddingError(f"{fake.base_url}/embeddings answered 503")
            app.router.add_get("/test/embeds", embeds)

        async with serve(settings, decider_factory=build_decider,
                         route_modules=[add_routes]) as running:
            fake.enqueue(*[Reply.error(503, "down")] * 4, path="/v1/embeddings")
            status, body = await call(running, "POST", "/v1/route", {
                "role": "audit", "primary": "alpha", "task": "A task never seen before"})
            assert status == 200, body
            assert body["domains"] == {"all": 1.0}
            status, body = await call(running, "POST", CHAT, {
                "model": "audit:alpha", "messages": [{"role": "user", "content": "Another"}]})
            assert status == 200 and body["diffroute"]["domains"] == ["all"], body
            status, body = await call(running, "GET", "/test/embeds")
            assert status == 503 and envelope(body)["code"] == "embedder_unavailable"
            assert "/embeddings answered 503" in body["error"]["message"]


@pytest.mark.parametrize("stream", [False, True])
async def test_an_upstream_5xx_retry_after_is_passed_on(tmp_path: Path, stream: bool) -> None:
    """An overloaded upstream's 503 with ``Retry-After`` became a 502 without it (only a 429's
    was passed on): the client's SDK retried at once, twice, into the same overload."""
    async with FakeUpstream() as fake:
        fake.enqueue(Reply.error(503, "overloaded", retry_after="9"))
        settings = make_settings(tmp_path, [remote("remote-a", "x", fake.base_url, "m")])
        async with serve(settings) as running, aiohttp.ClientSession() as http, http.post(
                running.base_url + "/chat/completions",
                json={"model": "remote-a", "messages": ASK, "stream": stream}) as response:
            payload = await response.json()
            assert response.status == 502, payload
            assert envelope(payload)["code"] == "upstream_error"
            assert response.headers.get("Retry-After") == "9"


async def test_no_pair_for_an_open_circuit_may_be_retried(tmp_path: Path) -> None:
    """``no_pair`` was always ``x-should-retry: false`` ("the same request finds no partner
    again"), but a partner whose circuit breaker is open is back once it half-opens: the
    client was told not to retry a request that succeeds after the ``Retry-After``."""
    from router.config import settings_from_mapping
    from router.pairing.decider import build_decider

    async with FakeUpstream() as fake:
        fake.enqueue(Reply.error(500, "down"))
        beta = remote("beta", "fb", fake.base_url, "b", circuit={"failures": 1, "open_s": 30})
        beta["backend"]["max_retries"] = 0
        settings = settings_from_mapping({
            "models": [remote("alpha", "fa", fake.base_url, "a"), beta],
            "data_dir": str(tmp_path / "data"),
            "policy": {"suite": "smoke", "task_embedder": "responses", "bootstrap": 0},
            "live": {"profiles": False}, "server": {"shutdown_timeout": 5}})
        async with serve(settings, decider_factory=build_decider) as running, \
                aiohttp.ClientSession() as http:
            async with http.post(running.base_url + "/chat/completions",
                                 json={"model": "beta", "messages": ASK}) as response:
                assert response.status == 502
            async with http.post(running.base_url + "/chat/completions",
                                 json={"model": "audit:alpha", "messages": ASK}) as response:
                payload = await response.json()
                assert response.status == 409, payload
                assert "circuit open" in envelope(payload)["message"], payload
                assert response.headers.get("x-should-retry") != "false"
