"""Live diffs over HTTP: /v1/diffs, the SSE stream, stats, drift and /metrics, end to end."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.harness import CAPITAL, PARIS, Running, make_settings, scripted, serve

ASK = [{"role": "user", "content": CAPITAL}]


def models(**beta: Any) -> list[dict[str, Any]]:
    """alpha says Paris; beta (another family) says Lyon; gamma agrees with alpha."""
    return [scripted("alpha", "a", PARIS), scripted("beta", "b", "Lyon.", **beta),
            scripted("gamma", "c", PARIS)]


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Running]:
    async with serve(make_settings(tmp_path, models())) as running:
        yield running


async def chat(http: aiohttp.ClientSession, running: Running,
               partner: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "audit:alpha", "messages": ASK}
    if partner is not None:
        body["diffroute"] = {"partner": partner}
    async with http.post(running.base_url + "/chat/completions", json=body) as resp:
        assert resp.status == 200, await resp.text()
        out: dict[str, Any] = (await resp.json())["diffroute"]
        return out


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as resp:
        return resp.status, await resp.json()


async def test_disagreement_is_listed_and_agreement_only_counted(live: Running) -> None:
    async with aiohttp.ClientSession() as http:
        agreed = await chat(http, live, partner="gamma")
        flagged = await chat(http, live)
        assert agreed["live_diff_id"] is None and not agreed["flagged"]
        assert flagged["flagged"] and flagged["live_diff_id"]
        status, page = await get(http, live.base_url + "/diffs?pair=alpha,beta")
        assert status == 200
        assert [d["id"] for d in page["data"]] == [flagged["live_diff_id"]]
        assert page["data"][0]["partner_text"] == "Lyon."
        _, stats = await get(http, live.base_url + "/stats/disagreements?window=600")
        rows = {(r["primary"], r["partner"]): r for r in stats["data"]}
        assert rows[("alpha", "gamma")]["comparisons"] == 1
        assert rows[("alpha", "gamma")]["disagreements"] == 0
        beta = rows[("alpha", "beta")]
        assert beta["rate"] == 1.0 and beta["interval"][0] > 0.0
        assert beta["predicted_rate"] is None  # a scripted pool has no profile
        async with http.get(live.url + "/metrics") as resp:
            text = await resp.text()
        assert ('diffroute_paired_comparisons_total{partner="gamma",primary="alpha",'
                'role="audit"} 1.0') in text
        assert ('diffroute_disagreements_total{partner="beta",primary="alpha",'
                'role="audit"} 1.0') in text
        assert "diffroute_http_request_duration_seconds_bucket" in text
        # every request so far is counted
        chats = ('diffroute_http_request_duration_seconds_count{method="POST",'
                 'route="/v1/chat/completions",status="200"} 2.0')
        assert chats in text


@pytest.mark.parametrize("query", ["limit=0", "limit=x", "since=yesterday", "pair=alpha",
                                   "role=judge", "cursor=-1"])
async def test_bad_query_parameters_are_400_envelopes(live: Running, query: str) -> None:
    async with aiohttp.ClientSession() as http:
        status, body = await get(http, f"{live.base_url}/diffs?{query}")
        assert status == 400 and body["error"]["type"] == "invalid_request_error"
        status, body = await get(http, f"{live.base_url}/stats/disagreements?window=-5")
        assert status == 400 and body["error"]["param"] == "window"


async def read_events(resp: aiohttp.ClientResponse, count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("data: "):
            events.append(json.loads(line[6:]))
            if len(events) == count:
                return events
    return events


async def test_sse_stream_delivers_live_diffs_in_order(live: Running) -> None:
    async with aiohttp.ClientSession() as http, http.get(
            live.base_url + "/diffs/stream?heartbeat=0.05",
            headers={"x-request-id": "sse-1"}) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        assert stream.headers["x-request-id"] == "sse-1"
        assert (await stream.content.readline()).startswith(b": connected")
        reader = asyncio.create_task(read_events(stream, 12))
        ids = [(await chat(http, live))["live_diff_id"] for _ in range(4)]
        ids += [d["live_diff_id"] for d in await asyncio.gather(
            *(chat(http, live) for _ in range(8)))]
        events = await asyncio.wait_for(reader, 10)
        seqs = [e["seq"] for e in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == 12
        assert [e["id"] for e in events[:4]] == ids[:4] and {e["id"] for e in events} == set(ids)
        # a reconnecting client resumes after its last event id from the store
        async with http.get(live.base_url + "/diffs/stream?heartbeat=0.05",
                            headers={"Last-Event-ID": str(seqs[9])}) as again:
            replay = await asyncio.wait_for(read_events(again, 2), 5)
        assert [e["id"] for e in replay] == [e["id"] for e in events[10:]]
        # cursor=0: every stored diff first; no cursor: only what comes next
        async with http.get(live.base_url + "/diffs/stream?heartbeat=0.05&cursor=0") as whole:
            everything = await asyncio.wait_for(read_events(whole, 12), 5)
        assert [e["seq"] for e in everything] == seqs
        async with http.get(live.base_url + "/diffs/stream?heartbeat=0.05") as fresh:
            assert (await fresh.content.readline()).startswith(b": connected")
            newest = await chat(http, live)
            assert [e["id"] for e in await asyncio.wait_for(read_events(fresh, 1), 5)] == \
                [newest["live_diff_id"]]


async def test_a_reconnecting_event_source_resumes_after_its_last_event_not_its_cursor(
        live: Running) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(4):
            await chat(http, live)
        _, page = await get(http, live.base_url + "/diffs")
        seqs = [d["seq"] for d in page["data"]]
        # connected first with ?cursor=<the first>, saw up to the third: an EventSource
        # reconnects to the same URL with Last-Event-ID, and must not be sent the third again
        async with http.get(live.base_url + f"/diffs/stream?heartbeat=0.05&cursor={seqs[0]}",
                            headers={"Last-Event-ID": str(seqs[2])}) as again:
            replay = await asyncio.wait_for(read_events(again, 1), 5)
        assert [e["seq"] for e in replay] == [seqs[3]]


async def test_the_stream_keeps_its_time_filter_for_new_diffs(live: Running) -> None:
    stream = live.base_url + "/diffs/stream?heartbeat=0.05"
    async with aiohttp.ClientSession() as http, http.get(
            stream + "&until=2020-01-01") as past, http.get(
            stream + "&since=2000-01-01") as recent:
        assert (await past.content.readline()).startswith(b": connected")
        assert (await recent.content.readline()).startswith(b": connected")
        flagged = await chat(http, live)
        got = await asyncio.wait_for(read_events(recent, 1), 5)
        assert [e["id"] for e in got] == [flagged["live_diff_id"]]
        with pytest.raises(TimeoutError):  # recorded after `until`: not for this stream
            await asyncio.wait_for(read_events(past, 1), 1.0)

async def test_scripted_drift_is_detected_through_the_service(tmp_path: Path) -> None:
    drifting = models()
    drifting[2] = scripted("gamma", "c", PARIS, drift_after=120,
                           drift={"answers": {"Marseille.": 1.0}})
    async with serve(make_settings(tmp_path, drifting)) as running, \
            aiohttp.ClientSession() as http:
        detected = None
        for n in range(1, 301):
            await chat(http, running, partner="gamma")
            _, drift = await get(http, running.base_url + "/drift")
            if drift["data"]:
                detected = n
                break
        assert detected is not None, "no drift within 300 requests"
        print(f"drift detected {detected - 120} requests after the partner changed")
        assert detected - 120 <= 30
        [event] = drift["data"]
        assert (event["primary_model"], event["partner"], event["direction"]) == (
            "alpha", "gamma", "up")
        async with http.get(running.url + "/metrics") as resp:
            text = await resp.text()
        assert 'diffroute_drift_state{domain="general",partner="gamma",primary="alpha"} 2.0' \
            in text
