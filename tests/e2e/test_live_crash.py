"""kill -9 under paired load: every live diff id a client received survives the restart."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.e2e.harness import CAPITAL, PARIS, scripted

REQUESTS = 200
CLIENTS = 4
KILL_AFTER = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start(config: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "router", "serve", "--config", str(config), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})


async def ready(url: str, within_s: float = 30.0) -> None:
    async with asyncio.timeout(within_s), aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url + "/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)


async def load(url: str, server: subprocess.Popen[bytes] | None) -> list[str]:
    """Paired load from a few clients; the server (if given) is killed after KILL_AFTER
    answers."""
    acknowledged: list[str] = []
    todo = iter(range(REQUESTS))
    body: dict[str, Any] = {"model": "audit:alpha", "diffroute": {"partner": "beta"},
                            "messages": [{"role": "user", "content": CAPITAL}]}

    async def client(http: aiohttp.ClientSession) -> None:
        for i in todo:
            if i == KILL_AFTER and server is not None:
                server.send_signal(signal.SIGKILL)
            try:
                async with http.post(url + "/v1/chat/completions", json=body) as resp:
                    data = await resp.json()
            except (TimeoutError, aiohttp.ClientError):
                continue  # the server is gone: those requests were never acknowledged
            live_id = data["diffroute"]["live_diff_id"]
            assert live_id, data
            acknowledged.append(live_id)

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(client(http) for _ in range(CLIENTS)))
    return acknowledged


async def stored_ids(url: str) -> set[str]:
    ids: set[str] = set()
    cursor = "0"
    async with aiohttp.ClientSession() as http:
        while cursor:
            async with http.get(f"{url}/v1/diffs?limit=1000&cursor={cursor}") as resp:
                page = await resp.json()
            ids |= {d["id"] for d in page["data"]}
            cursor = page["next_cursor"]
    return ids


async def test_acknowledged_live_diffs_survive_sigkill(tmp_path: Path) -> None:
    config = tmp_path / "pool.yaml"
    config.write_text(yaml.safe_dump({
        "data_dir": "data", "server": {"shutdown_timeout": 2},
        "live": {"profiles": False},
        "models": [scripted("alpha", "a", PARIS), scripted("beta", "b", "Lyon.")]}))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start(config, port)
    try:
        await ready(url)
        acknowledged = await load(url, server)
        assert server.wait(10) == -signal.SIGKILL
    finally:
        server.kill()
    print(f"{len(acknowledged)} live diff ids acknowledged before SIGKILL")
    assert KILL_AFTER // 2 <= len(acknowledged) < REQUESTS
    server = start(config, port)
    try:
        await ready(url)
        missing = set(acknowledged) - await stored_ids(url)
    finally:
        server.terminate()
        server.wait(10)
    assert not missing, f"{len(missing)} acknowledged live diffs lost"
