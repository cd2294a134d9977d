"""The service on PostgreSQL while its database goes away: completions go on, the loss is
visible, recording resumes by itself."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import aiohttp
from structlog.testing import capture_logs

from tests.e2e.harness import Running, call, make_settings, serve, standard_models
from tests.stores import fresh_database, on_postgres, outage

ASK = [{"role": "user", "content": "Capital?"}]
AUDIT = {"model": "audit:alpha", "messages": ASK, "diffroute": {"partner": "beta"}}


async def comparisons(running: Running) -> int:
    status, body = await call(running, "GET", "/v1/stats/disagreements?window=600")
    return sum(r["comparisons"] for r in body["data"]) if status == 200 else -1


async def paired(running: Running) -> dict[str, Any]:
    status, body = await call(running, "POST", "/v1/chat/completions", AUDIT)
    assert status == 200, body
    result: dict[str, Any] = body["diffroute"]
    return result


async def test_completions_are_served_through_a_database_outage(tmp_path: Path) -> None:
    async with fresh_database() as dsn:
        settings = on_postgres(make_settings(tmp_path, standard_models()), dsn)
        async with serve(settings) as running:
            assert (await paired(running))["live_diff_id"]
            async with outage(dsn):
                status, plain = await call(running, "POST", "/v1/chat/completions",
                                           {"model": "alpha", "messages": ASK})
                assert status == 200 and plain["choices"][0]["message"]["content"]
                lost = await paired(running)
                assert lost["flagged"] and lost["live_diff_id"] is None
                # the live diff, not the comparison: that one is queued and counted later
                assert lost["live_diff_error"].startswith("the live diff was not confirmed "
                                                          "stored: writing to postgresql://")
                status, health = await call(running, "GET", "/healthz")
                assert health["status"] == "degraded", health
                # routes that need the database answer 503, never a 500 (they were 500s)
                for method, path, body in (("GET", "/v1/pool", None),
                                           ("GET", "/v1/diffs", None),
                                           ("GET", "/v1/profiles/diff?a=alpha&b=beta", None)):
                    status, answer = await call(running, method, path, body)
                    assert status == 503 and set(answer["error"]) == {
                        "message", "type", "param", "code"}, (path, status, answer)
                # a stream whose backlog cannot be read once it has started ends with an error
                # event (a second HTTP response was written into its body)
                async with aiohttp.ClientSession() as http, http.get(
                        running.base_url + "/diffs/stream?cursor=0") as response:
                    text = await asyncio.wait_for(response.text(), 10)
                assert response.status == 200 and "HTTP/1.1" not in text, text
                assert text.endswith("\n\n") and "event: error\ndata: " in text
                assert '"code":"storage_unavailable"' in text.replace(" ", ""), text
            # back: recording resumes by itself, the outage's comparisons included
            async with asyncio.timeout(15):
                while not (await paired(running))["live_diff_id"]:  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
                while await comparisons(running) < 3:  # noqa: ASYNC110  # polls the API
                    await asyncio.sleep(0.1)
            # and the service is healthy again at once (it said degraded for 5 minutes)
            status, health = await call(running, "GET", "/healthz")
            assert health["status"] == "ok" and "problems" not in health, health


async def test_counts_queued_when_the_service_stops_in_an_outage_are_said_lost(
        tmp_path: Path) -> None:
    """Stopping while the database is away dropped the queued comparisons without a word."""
    async with fresh_database() as dsn:
        settings = on_postgres(make_settings(tmp_path, standard_models()), dsn)
        with capture_logs() as logs:
            # the outage (entered on the stack) outlasts the service
            async with contextlib.AsyncExitStack() as later, serve(settings) as running:
                await later.enter_async_context(outage(dsn))
                for _ in range(3):
                    await paired(running)
        dropped = [e for e in logs if e["event"] == "store.writes_dropped_at_close"]
        assert len(dropped) == 1 and dropped[0]["writes"] >= 3, " ".join(e["event"] for e in logs)
