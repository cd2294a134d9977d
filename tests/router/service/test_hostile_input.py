"""Hostile input gets a 4xx envelope naming the problem, never a 500, and never grows state.

Each case was once a 500 or an unbounded growth (issue #15): lone surrogates, nesting deeper
than any parser's stack, numbers beyond a double, a 31-digit ``Last-Event-ID``, and client
chosen domains that became metric labels.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.harness import Running, call, make_settings, serve, standard_models

ADMIN = {"Authorization": "Bearer adm"}
SURROGATE = b'{"model": "alpha", "messages": [{"role": "user", "content": "x\\ud800y"}]}'
DEEP = b"[" * 5000 + b"]" * 5000
READABLE_DEEP = b'{"model": "alpha", "messages": [], "metadata": ' + b"[" * 300 + b"]" * 300 + b"}"
"""Read by orjson (up to 1,024 levels) but not written (254): a 500 wherever it was forwarded."""
INFINITE = b'{"model": "alpha", "messages": [], "temperature": 1e400}'


@pytest.fixture
async def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Running]:
    monkeypatch.setenv("DR_HOSTILE_ADMIN", "adm")
    settings = make_settings(tmp_path, standard_models(), admin_key="env:DR_HOSTILE_ADMIN")
    async with serve(settings) as running:
        yield running


def envelope(status: int, payload: Any) -> dict[str, Any]:
    assert 400 <= status < 500, (status, payload)
    assert isinstance(payload, dict) and set(payload["error"]) == {"message", "type", "param",
                                                                   "code"}
    return dict(payload["error"])


@pytest.mark.parametrize(("method", "path", "headers"), [
    ("POST", "/v1/chat/completions", {}),
    ("POST", "/v1/route", {}),
    ("PUT", "/v1/pairings", ADMIN),
])
@pytest.mark.parametrize("raw", [SURROGATE, DEEP, READABLE_DEEP, INFINITE],
                         ids=["surrogate", "deep", "deep-300", "inf"])
async def test_unacceptable_json_is_a_400_on_every_json_route(
        service: Running, method: str, path: str, headers: dict[str, str], raw: bytes) -> None:
    status, payload = await call(service, method, path, headers=headers, raw=raw)
    error = envelope(status, payload)
    assert status == 400 and error["code"] == "invalid_json"
    assert "surrogate" in error["message"] or "depth" in error["message"] or \
        "infinity" in error["message"]


async def test_a_paired_call_with_a_surrogate_is_a_400(service: Running) -> None:
    raw = SURROGATE.replace(b'"alpha"', b'"audit:alpha"')
    status, payload = await call(service, "POST", "/v1/chat/completions", raw=raw)
    assert envelope(status, payload)["code"] == "invalid_json"


async def test_a_huge_last_event_id_is_a_400_not_a_broken_stream(service: Running) -> None:
    status, payload = await call(service, "GET", "/v1/diffs/stream",
                                 headers={"Last-Event-ID": "1" + "0" * 30})
    error = envelope(status, payload)
    assert error["param"] == "Last-Event-ID"
    status, payload = await call(service, "GET", "/v1/diffs/stream",
                                 headers={"Last-Event-ID": "١٢"})  # digits, but not ASCII
    assert envelope(status, payload)["param"] == "Last-Event-ID"


async def metrics_text(service: Running) -> str:
    async with aiohttp.ClientSession() as http, http.get(service.url + "/metrics") as response:
        return await response.text()


async def test_client_chosen_domains_are_validated_and_never_become_labels(
        service: Running) -> None:
    base = {"model": "audit:alpha", "messages": [{"role": "user", "content": "hi"}]}
    status, body = await call(service, "POST", "/v1/chat/completions", {
        **base, "diffroute": {"partner": "beta", "domain": "general"}})
    assert status == 200 and body["diffroute"]["domains"] == ["general"]
    # the drift monitor reads the comparison from the store: its gauges come a moment later
    async with asyncio.timeout(5):
        while "diffroute_drift_state{" not in (  # noqa: ASYNC110  # polls the HTTP API
                before := await metrics_text(service)):
            await asyncio.sleep(0.02)
    for i in range(20):
        status, payload = await call(service, "POST", "/v1/chat/completions", {
            **base, "diffroute": {"partner": "beta", "domain": f"made-up-{i}"}})
        error = envelope(status, payload)
        assert error["param"] == "diffroute.domain" and "general" in error["message"]
    after = await metrics_text(service)
    assert "made-up" not in after
    series = [line for line in after.splitlines() if line and not line.startswith("#")
              and "http_request" not in line]
    assert len(series) == len([line for line in before.splitlines() if line and not
                               line.startswith("#") and "http_request" not in line])


async def test_a_plain_call_validates_its_domain_too(service: Running) -> None:
    """A plain call has no pair to route, but a domain that does not exist (a typo in a header
    an agent sets on every call) is the same 400 a paired call gets, not silently ignored."""
    base = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}]}
    status, payload = await call(service, "POST", "/v1/chat/completions",
                                 {**base, "diffroute": {"domain": "genral"}})
    error = envelope(status, payload)
    assert status == 400 and error["param"] == "diffroute.domain" and "general" in error["message"]
    status, payload = await call(service, "POST", "/v1/chat/completions", base,
                                 headers={"x-diffroute-domain": "genral"})
    assert envelope(status, payload)["param"] == "x-diffroute-domain"  # named as the client gave it
    status, body = await call(service, "POST", "/v1/chat/completions",
                              {**base, "diffroute": {"domain": "general"}})
    assert status == 200 and body["model"] == "alpha"


async def test_exclusions_hold_when_the_client_names_the_partner(service: Running) -> None:
    status, _ = await call(service, "PUT", "/v1/pairings",
                           {"pinned": {}, "excluded": [["alpha", "beta"]]}, ADMIN)
    assert status == 200
    status, payload = await call(service, "POST", "/v1/chat/completions", {
        "model": "audit:alpha", "messages": [{"role": "user", "content": "hi"}],
        "diffroute": {"partner": "beta"}})
    assert status == 409 and "excluded" in payload["error"]["message"]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400"])
@pytest.mark.parametrize("param", ["since", "until"])
async def test_a_time_that_is_not_finite_is_a_400(service: Running, param: str,
                                                  value: str) -> None:
    for path in ("/v1/diffs", "/v1/diffs/stream"):
        status, payload = await call(service, "GET", f"{path}?{param}={value}")
        error = envelope(status, payload)
        assert error["param"] == param and "finite" in error["message"], error


@pytest.mark.parametrize(("pairings", "param", "words"), [
    ({"pinned": {"alpha": {"audit": "beta"}}, "excluded": [["beta", "alpha"]]},
     "pinned.alpha.audit", "excluded[0]"),
    ({"pinned": {"alpha": {"audit": "alpha"}}}, "pinned.alpha.audit", "itself"),
    ({"excluded": [["alpha", "beta"], ["beta", "beta"]]}, "excluded[1]", "itself"),
    ({"excluded": [["alpha", "nosuch"]]}, "excluded[0]", "nosuch"),
    ({"pinned": {"alpha": {"judge": "beta"}}}, "pinned.alpha.judge", "audit"),
    # a pin to "" read "unknown model(s) in pairings:  (known: …)"
    ({"pinned": {"alpha": {"audit": ""}}}, "pinned.alpha.audit", "pairings: '' "),
])
async def test_pairings_that_cannot_hold_are_refused_and_change_nothing(
        service: Running, pairings: dict[str, Any], param: str, words: str) -> None:
    status, payload = await call(service, "PUT", "/v1/pairings", pairings, ADMIN)
    error = envelope(status, payload)
    assert status == 400 and error["param"] == param and words in error["message"], error
    assert await call(service, "GET", "/v1/pairings") == (200, {"pinned": {}, "excluded": []})


async def test_an_unknown_model_is_named_by_the_field_that_named_it(service: Running) -> None:
    ask = [{"role": "user", "content": "hi"}]
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("/v1/route", {"role": "audit", "primary": "nosuch", "task": "hi"}, "primary"),
        ("/v1/route", {"role": "audit", "primary": "alpha", "task": "hi",
                       "candidates": ["beta", "nosuch"]}, "candidates"),
        # "auto" is a primary's word: as a candidate it was a 404 on 'model'
        ("/v1/route", {"role": "audit", "primary": "auto", "task": "hi",
                       "candidates": ["alpha", "auto"]}, "candidates"),
        ("/v1/chat/completions", {"model": "audit:alpha", "messages": ask,
                                  "diffroute": {"partner": "nosuch"}}, "diffroute.partner"),
        ("/v1/chat/completions", {"model": "audit:alpha", "messages": ask,
                                  "diffroute": {"candidates": ["nosuch"]}},
         "diffroute.candidates"),
        ("/v1/chat/completions", {"model": "nosuch", "messages": ask}, "model"),
    ]
    for path, body, param in cases:
        status, payload = await call(service, "POST", path, body)
        error = envelope(status, payload)
        assert status == 404 and error["param"] == param, (body, error)
    status, payload = await call(service, "POST", "/v1/chat/completions",
                                 {"model": "x" * 100_000, "messages": ask})
    assert len(envelope(status, payload)["message"]) < 500


async def _raw(service: Running, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request written as bytes on a new connection; the status line, headers, body."""
    host, port = service.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)  # the refusal closes the connection
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize(("request_bytes", "status", "code"), [
    (b"FOO\x01 /v1/route HTTP/1.1\r\nHost: x\r\n\r\n", 400, "invalid_http_request"),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 400, "invalid_http_request"),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n", 400, "invalid_http_request"),
    (b"POST /v1/route HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"zz\r\n{}\r\n0\r\n\r\n", 400, "invalid_http_request"),
    (b"POST /v1/route HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
     400, "invalid_http_request"),
    (b"POST /v1/route HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 2\r\n\r\n{}",
     417, "expectation_failed"),
    (b"GET /nowhere HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n", 417, "expectation_failed"),
], ids=["bad-method", "long-url", "bad-header", "bad-chunk", "two-lengths", "expect",
        "expect-no-route"])
async def test_requests_aiohttp_refuses_get_the_envelope_too(
        service: Running, request_bytes: bytes, status: int, code: str) -> None:
    """What aiohttp's parser refuses before the app sees it is answered in the same JSON
    envelope as every other error (it was aiohttp's text/plain), and the service goes on."""
    got, headers, body = await _raw(service, request_bytes)
    assert got == status and headers["content-type"].startswith("application/json"), headers
    assert re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", headers["x-request-id"]), headers  # as all
    error = envelope(got, json.loads(body))
    assert error["code"] == code and error["message"].startswith("malformed HTTP request: ")
    assert len(error["message"]) < 400
    status_after, _ = await call(service, "GET", "/healthz")
    assert status_after == 200


async def test_expect_100_continue_still_continues(service: Running) -> None:
    """The envelope for an unknown ``Expect`` leaves ``100-continue`` (curl's, on large bodies)
    to aiohttp: the interim answer, then the route's own."""
    host, port = service.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"POST /v1/route HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
                     b"Connection: close\r\nContent-Length: 2\r\n\r\n")
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert interim.startswith(b"HTTP/1.1 100 Continue"), interim
        writer.write(b"{}")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split()[1] == b"400", head  # no messages: the route's own validation
    assert json.loads(body)["error"]["param"] is not None, body


async def test_a_nul_in_a_filter_is_a_400(service: Running) -> None:
    """A U+0000 in a filter was a 503 on PostgreSQL (and, in a stream, an error after 200)."""
    for query in ("domain=%00", "pair=a%00,b", "primary=x%00"):
        for path in ("/v1/diffs", "/v1/diffs/stream"):
            status, payload = await call(service, "GET", f"{path}?{query}")
            assert status == 400 and "U+0000" in envelope(status, payload)["message"]


async def test_the_param_of_a_400_is_the_field_the_client_sent(service: Running) -> None:
    """pydantic's union branch leaked into ``param`` ("messages[0].content.str"); a paired
    call's unknown domain said "domain" (the policy's name), not "diffroute.domain"; a route
    request with empty messages blamed "task"."""
    ask = [{"role": "user", "content": "hi"}]
    cases = [
        ("/v1/chat/completions", {"model": "alpha", "messages": [{"role": "user", "content": 5}]},
         "messages[0].content"),
        ("/v1/chat/completions", {"model": "alpha", "messages": ask, "stop": 5}, "stop"),
        ("/v1/chat/completions", {"model": "audit:alpha", "messages": ask,
                                  "diffroute": {"domain": "zzz"}}, "diffroute.domain"),
        ("/v1/route", {"role": "audit", "messages": []}, "messages"),
    ]
    for path, body, param in cases:
        status, payload = await call(service, "POST", path, body)
        error = envelope(status, payload)
        assert error["param"] == param, (body, error)
        assert ".str" not in error["message"], error


async def test_bad_pairings_are_named_where_they_are(service: Running) -> None:
    """``excluded.0`` (the rest of the API says ``excluded[0]``), and an unknown model only
    ever named ``pinned`` or ``excluded``, not where it was."""
    cases = [({"excluded": [["alpha", "beta", "gamma"]]}, "excluded[0]"),
             ({"pinned": {"alpha": {"audit": "zz"}}}, "pinned.alpha.audit"),
             ({"pinned": {"zz": {"audit": "beta"}}}, "pinned.zz"),
             ({"excluded": [["alpha", "beta"], ["gamma", "zz"]]}, "excluded[1]"),
             ({"pinned": {"": {"audit": "beta"}}}, 'pinned[""]')]  # was "pinned."
    for body, param in cases:
        status, payload = await call(service, "PUT", "/v1/pairings", body, headers=ADMIN)
        assert envelope(status, payload)["param"] == param, (body, payload)


async def test_a_primary_with_nothing_pinned_is_not_kept(service: Running) -> None:
    """``{"pinned": {"alpha": {}}}`` pins nothing, and was stored and listed as a pin."""
    body = {"pinned": {"alpha": {}, "beta": {"audit": "alpha"}}}
    assert (await call(service, "PUT", "/v1/pairings", body, headers=ADMIN))[0] == 200
    assert await call(service, "GET", "/v1/pairings") == (
        200, {"pinned": {"beta": {"audit": "alpha"}}, "excluded": []})


async def test_what_the_openapi_document_says_is_what_the_service_does(
        service: Running) -> None:
    """413 on /v1/route and PUT /v1/pairings, order=desc on /v1/diffs, 405 everywhere, and
    /healthz?probe= other than ready (it answered 200 to values its enum refuses)."""
    _, document = await call(service, "GET", "/openapi.json")
    paths = document["paths"]
    assert "413" in paths["/v1/route"]["post"]["responses"]
    assert "413" in paths["/v1/pairings"]["put"]["responses"]
    assert any(p["name"] == "order" for p in paths["/v1/diffs"]["get"]["parameters"])
    assert all("405" in op["responses"] for ops in paths.values() for op in ops.values())
    status, payload = await call(service, "GET", "/healthz?probe=zzz")
    assert envelope(status, payload)["param"] == "probe"
    huge = b'{"role": "audit", "task": "' + b"x" * (2 << 20) + b'"}'
    for method, path in (("POST", "/v1/route"), ("PUT", "/v1/pairings")):
        status, payload = await call(service, method, path, raw=huge, headers=ADMIN)
        assert status == 413 and envelope(status, payload)["code"] == "body_too_large"
    status, payload = await call(service, "DELETE", "/v1/route")
    assert status == 405 and envelope(status, payload)["code"] == "method_not_allowed"


async def test_an_exclusion_given_twice_or_reversed_is_kept_once(service: Running) -> None:
    body = {"excluded": [["alpha", "beta"], ["alpha", "beta"], ["beta", "alpha"],
                         ["beta", "gamma"]]}
    status, stored = await call(service, "PUT", "/v1/pairings", body, headers=ADMIN)
    assert status == 200 and stored["excluded"] == [["alpha", "beta"], ["beta", "gamma"]]
    assert (await call(service, "GET", "/v1/pairings"))[1]["excluded"] == stored["excluded"]


async def test_head_on_the_event_stream_is_a_head_alone(service: Running) -> None:
    """HEAD /v1/diffs/stream sent its first event after the head (no body belongs there) and
    stayed subscribed: the next response on the kept-alive connection began with
    ': connected' — a bad status line."""
    host, port = service.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"HEAD /v1/diffs/stream HTTP/1.1\r\nHost: localhost\r\n\r\n"
                     b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head
    assert rest.startswith(b"HTTP/1.1 200"), rest[:100]  # the next response, whole
