"""A soak under faults: paired audit load for a minute while a fifth of upstream calls fail.

``diffroute serve`` (its own process, JSON logs to a file) fronts two ``kind: openai`` models
on a faulty upstream (its own process): of the upstream's chat calls, ``--fail`` answer a 500
at once and ``--hang`` never answer in time (they sleep past ``timeouts.total``); the rest
answer after a few milliseconds. ``wrk`` (64 connections) sends ``audit:a`` calls with the
partner ``b`` for ``--duration`` seconds while ``--subscribers`` clients follow
``/v1/diffs/stream``. Reported:

* statuses: 200 (an answer), 502/504 (the primary failed or timed out — expected under these
  faults, with an OpenAI envelope); anything else, and socket errors, count as *unexpected*;
* latency p50/p99 from wrk, against the configured ``timeouts.total``;
* the server's RSS at the start and the end of the load (and its peak);
* whether every subscriber received every stored live diff, in order.

Run: ``python -m benchmarks.soak [--duration 60] [--connections 64]`` (needs ``wrk``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from benchmarks._common import serve_app, spawn_server

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '%s'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) s200 = 0; s502 = 0; s504 = 0; other = 0 end
function response(status, headers, body)
  if status == 200 then s200 = s200 + 1
  elseif status == 502 then s502 = s502 + 1
  elseif status == 504 then s504 = s504 + 1
  else other = other + 1 end
end
function done(summary, latency, requests)
  local t200, t502, t504, tother = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    t200 = t200 + t:get("s200"); t502 = t502 + t:get("s502")
    t504 = t504 + t:get("s504"); tother = tother + t:get("other")
  end
  io.write(string.format('STATUSES {"200": %%d, "502": %%d, "504": %%d, "other": %%d}\\n',
           t200, t502, t504, tother))
  io.write(string.format("LATENCY %%d %%d %%d\\n", latency:percentile(50),
           latency:percentile(99), latency.max))
  io.write(string.format("ERRORS %%d %%d %%d %%d\\n", summary.errors.connect,
           summary.errors.read, summary.errors.write, summary.errors.timeout))
end
"""


# --- the faulty upstream (child process) -----------------------------------------------------


def faulty_app(fail: float, hang: float, hang_s: float, seed: int) -> web.Application:
    rng = random.Random(seed)

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        roll = rng.random()
        if roll < fail:
            return web.json_response({"error": {"message": "injected failure", "type":
                                                "server_error", "param": None, "code": None}},
                                     status=500)
        if roll < fail + hang:
            await asyncio.sleep(hang_s)
        else:
            await asyncio.sleep(rng.uniform(0.002, 0.01))
        answer = "Paris." if body.get("model") == "up-a" else "Lyon."
        return web.json_response({
            "id": "c", "object": "chat.completion", "created": 1, "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": answer}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})

    async def models(_request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "up-a"}, {"id": "up-b"}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    return app


# --- the run ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(found.group(1)) / 1024 if found else float("nan")


async def wait_ready(url: str, within_s: float = 60) -> None:
    async with asyncio.timeout(within_s), aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url + "/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)


async def subscriber(url: str, stop: asyncio.Event) -> list[int]:
    seqs: list[int] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as http, \
            http.get(url + "/v1/diffs/stream?heartbeat=1") as stream:
        while not stop.is_set():
            try:
                line = await asyncio.wait_for(stream.content.readline(), 1.0)
            except TimeoutError:
                continue
            if not line:
                break
            if line.startswith(b"id: "):
                seqs.append(int(line[4:]))
    return seqs


async def stored_seqs(url: str) -> list[int]:
    seqs: list[int] = []
    cursor = "0"
    async with aiohttp.ClientSession() as http:
        while cursor:
            async with http.get(f"{url}/v1/diffs?limit=1000&cursor={cursor}") as response:
                page = await response.json()
            seqs += [d["seq"] for d in page["data"]]
            cursor = page["next_cursor"]
    return seqs


def start_server(config: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """``diffroute serve`` in its own process, its output in ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "router", "serve", "--config", str(config), "--port",
             str(port)], stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("benchmarks.soak needs wrk (apt-get install wrk)")
    upstream_argv = ["-m", "benchmarks.soak", "--upstream", "--fail", str(args.fail),
                     "--hang", str(args.hang), "--hang-s", str(args.total * 3)]
    async with spawn_server(upstream_argv) as upstream:
        with tempfile.TemporaryDirectory() as tmp:
            port = free_port()
            config = Path(tmp) / "pool.yaml"
            timeouts = {"connect": 1, "read": args.total, "total": args.total}
            config.write_text(yaml.safe_dump({
                "data_dir": "data", "server": {"shutdown_timeout": 5},
                "live": {"profiles": False},
                "models": [{"name": n, "family": n, "max_concurrency": 256,
                            "timeouts": timeouts,
                            "backend": {"kind": "openai", "base_url": upstream.url + "/v1",
                                        "model": f"up-{n}"}} for n in ("a", "b")]}))
            server = start_server(config, port, Path(tmp) / "serve.log")
            url = f"http://127.0.0.1:{port}"
            try:
                await wait_ready(url)
                return await _load(args, wrk, url, server.pid, Path(tmp))
            finally:
                server.terminate()
                await asyncio.to_thread(server.wait, 30)


async def _load(args: argparse.Namespace, wrk: str, url: str, pid: int,
                tmp: Path) -> dict[str, Any]:
    body = json.dumps({"model": "audit:a", "messages": [{"role": "user", "content": "Capital?"}],
                       "diffroute": {"partner": "b"}})
    script = tmp / "soak.lua"
    script.write_text(LUA % body)
    stop = asyncio.Event()
    readers = [asyncio.create_task(subscriber(url, stop)) for _ in range(args.subscribers)]
    await asyncio.sleep(0.5)
    rss_start, peak = rss_mb(pid), 0.0
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        wrk, "-t2", f"-c{args.connections}", f"-d{args.duration}s",
        f"--timeout={int(args.total * 4)}s", "-s", str(script), url + "/v1/chat/completions",
        stdout=asyncio.subprocess.PIPE)
    while process.returncode is None:
        peak = max(peak, rss_mb(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), 2)
    out = (await process.stdout.read()).decode() if process.stdout else ""
    elapsed = time.monotonic() - started
    rss_end = rss_mb(pid)
    await asyncio.sleep(1)  # the last commits reach the streams
    stored = await stored_seqs(url)
    stop.set()
    received = await asyncio.gather(*readers)
    return {"wrk": out, "elapsed_s": elapsed, "rss_start_mb": rss_start, "rss_end_mb": rss_end,
            "rss_peak_mb": peak, "stored": stored, "received": received}


def report(args: argparse.Namespace, result: dict[str, Any]) -> int:
    out = result["wrk"]
    found = re.search(r"STATUSES (\{.*\})", out)
    if found is None:
        raise SystemExit(f"wrk printed no statuses:\n{out}")
    counted = json.loads(found.group(1))
    statuses = {int(k): v for k, v in counted.items() if k != "other" and v}
    if counted["other"]:
        statuses[0] = counted["other"]  # 0: any status but 200/502/504
    p50, p99, worst = (int(x) / 1e6 for x in re.search(
        r"LATENCY (\d+) (\d+) (\d+)", out).groups())  # type: ignore[union-attr]
    errors = [int(x) for x in re.search(r"ERRORS (\d+) (\d+) (\d+) (\d+)",
                                        out).groups()]  # type: ignore[union-attr]
    total = sum(statuses.values())
    expected = {200, 502, 504}
    unexpected = sum(v for k, v in statuses.items() if k not in expected) + sum(errors)
    stored = result["stored"]
    complete = [r == stored for r in result["received"]]
    print(f"soak: {args.duration} s, {args.connections} connections, upstream calls failing "
          f"{args.fail:.0%} / hanging {args.hang:.0%}, timeouts.total {args.total} s")
    print(f"  requests      {total} ({total / result['elapsed_s']:.0f}/s); statuses "
          + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())))
    print(f"  unexpected    {unexpected} (statuses outside 200/502/504: "
          f"{total - sum(statuses.get(k, 0) for k in expected)}; socket errors "
          f"connect/read/write/timeout {errors})")
    print(f"  latency       p50 {p50 * 1000:.1f} ms, p99 {p99:.2f} s, max {worst:.2f} s "
          f"(total bound {args.total} s: {'held' if worst <= args.total * 1.5 else 'EXCEEDED'})")
    print(f"  server RSS    start {result['rss_start_mb']:.0f} MB, end "
          f"{result['rss_end_mb']:.0f} MB, peak {result['rss_peak_mb']:.0f} MB")
    print(f"  live diffs    {len(stored)} stored; subscribers complete: "
          f"{sum(complete)}/{len(complete)}")
    return 0 if unexpected == 0 and all(complete) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=60)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--subscribers", type=int, default=4)
    parser.add_argument("--fail", type=float, default=0.10)
    parser.add_argument("--hang", type=float, default=0.10)
    parser.add_argument("--total", type=float, default=2.0, help="timeouts.total of the models")
    parser.add_argument("--upstream", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--hang-s", type=float, default=6.0, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.upstream:
        asyncio.run(serve_app(faulty_app(args.fail, args.hang, args.hang_s, args.seed)))
        return
    sys.exit(report(args, asyncio.run(soak(args))))


if __name__ == "__main__":
    main()
