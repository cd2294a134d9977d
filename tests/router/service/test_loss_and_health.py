"""Loss is never silent, start-up problems are one line, health is cached and discreet."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from router.config import LiveSettings
from router.live.sink import DurableLiveDiffSink
from router.store import ComparisonRow, Store
from tests.e2e.harness import (
    PARIS,
    Running,
    call,
    make_settings,
    remote,
    scripted,
    serve,
    standard_models,
)
from tests.fakes import FakeUpstream

AUDIT = {"model": "audit:alpha", "messages": [{"role": "user", "content": "Capital?"}]}


@pytest.fixture
async def small_store(tmp_path: Path) -> AsyncIterator[Running]:
    """A live store capped at 64 KiB: it fills after a few dozen live diffs, like a disk."""
    settings = make_settings(tmp_path, standard_models())
    live = settings.live.model_copy(update={"max_db_bytes": 65_536, "profiles": False})
    async with serve(settings.model_copy(update={"live": live})) as running:
        yield running


async def test_a_live_diff_that_cannot_be_stored_says_so(small_store: Running) -> None:
    errors = []
    for _ in range(120):  # alpha and beta always disagree: each call is a flagged comparison
        status, body = await call(small_store, "POST", "/v1/chat/completions", AUDIT)
        assert status == 200 and body["diffroute"]["flagged"] is True
        if body["diffroute"]["live_diff_id"] is None:
            errors.append(body["diffroute"]["live_diff_error"])
    assert errors and all("full" in e for e in errors)
    async with aiohttp.ClientSession() as http, \
            http.get(small_store.url + "/metrics") as response:
        metrics = await response.text()
    counted = [line for line in metrics.splitlines()
               if line.startswith("diffroute_live_record_errors_total")]
    assert counted and float(counted[0].split()[-1]) == len(errors)
    status, health = await call(small_store, "GET", "/healthz")
    assert status == 200 and health["status"] == "degraded"
    assert "full" in health["problems"][0]


async def test_a_failed_admin_write_is_an_envelope_not_a_500(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DR_LOSS_ADMIN", "adm")
    settings = make_settings(tmp_path, standard_models(), admin_key="env:DR_LOSS_ADMIN")
    async with serve(settings) as running:
        (settings.data_dir / "pairings.json").mkdir()  # the file cannot be replaced now
        status, body = await call(running, "PUT", "/v1/pairings", {"pinned": {}},
                                  {"Authorization": "Bearer adm"})
        assert status == 503 and body["error"]["code"] == "storage_unavailable"
        assert "pairings" in body["error"]["message"]
        status, body = await call(running, "GET", "/v1/pairings")
        assert status == 200 and body == {"pinned": {}, "excluded": []}


async def test_health_is_cached_and_shows_details_only_with_a_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DR_LOSS_KEY", "client-key")
    async with FakeUpstream(answers={"up-a": PARIS}) as fake:
        settings = make_settings(tmp_path, [remote("remote-a", "x", fake.base_url, "up-a"),
                                            scripted("alpha", "a", PARIS)],
                                 api_keys=["env:DR_LOSS_KEY"])
        async with serve(settings) as running:
            for _ in range(10):
                status, anonymous = await call(running, "GET", "/healthz")
                assert status == 200
            status, keyed = await call(running, "GET", "/healthz",
                                       headers={"Authorization": "Bearer client-key"})
    assert fake.count("/v1/models") == 1  # eleven probes, one upstream check
    assert all("detail" not in m for m in anonymous["models"])
    assert fake.base_url.split("//")[1] not in str(anonymous)
    assert {m["name"]: m["state"] for m in keyed["models"]}["remote-a"] == "reachable"
    assert all("detail" in m for m in keyed["models"])


async def test_a_wrong_method_says_which_are_allowed(tmp_path: Path) -> None:
    async with serve(make_settings(tmp_path, standard_models())) as running, \
            aiohttp.ClientSession() as http, \
            http.delete(running.url + "/v1/pairings") as response:
        body = await response.json()
    assert response.status == 405 and set(response.headers["Allow"].split(", ")) >= {"GET",
                                                                                      "PUT"}
    assert body["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize(("file", "named"), [("live.sqlite3", "live-diff store"),
                                              ("observations.sqlite3", "observation store")])
def test_a_corrupt_store_stops_the_server_with_one_line(tmp_path: Path, file: str,
                                                        named: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / file).write_bytes(b"this is not a database" * 100)
    config = tmp_path / "pool.yaml"
    config.write_text(yaml.safe_dump({"data_dir": "data", "live": {"profiles": False},
                                      "models": [scripted("alpha", "a", PARIS)]}))
    done = subprocess.run([sys.executable, "-m", "router", "serve", "--config", str(config),
                           "--port", "0"], capture_output=True, text=True, timeout=120)
    errors = [line for line in done.stderr.splitlines() if line.startswith("diffroute:")]
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(errors) == 1 and named in errors[0] and file in errors[0]
    assert "Traceback" not in done.stderr


async def test_restart_replays_only_the_newest_comparisons(store: Store) -> None:
    for i in range(300):
        store.add_comparison(ComparisonRow(1e9 + i, "alpha", "beta", "audit", "general",
                                           i % 2 == 0))
    sink = DurableLiveDiffSink(store, LiveSettings(profiles=False))
    await store.flush()  # behind the comparisons: all of them committed
    assert await sink.replay(since_s=1e10, limit=100) == 100
    assert sink.monitor.pairs[("alpha", "beta", "general")].comparisons == 100
