"""What an upstream or a model writes reaches the terminal of ``diffroute`` as text: an error
body's line breaks joined (errors are one line) and control characters shown escaped, never
as ESC sequences (a clear screen, a title or clipboard write)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.fakes import FakeUpstream, Reply
from tests.router.test_cli_diff import Run, _start
from tests.router.test_cli_diff import cli as run_cli

HOSTILE = "bad request\nsecond line\x1b]0;pwned\x07 end"


@pytest.fixture
def upstream() -> Iterator[str]:
    """A fake upstream on its own loop in a thread (the command line runs its own loop):
    every chat call is a 400 whose message spans two lines and sets the terminal's title."""
    started, stop = threading.Event(), threading.Event()
    url: list[str] = []

    async def serve() -> None:
        async with FakeUpstream() as fake:
            for _ in range(64):
                fake.enqueue(Reply.error(400, HOSTILE))
            url.append(fake.base_url)
            started.set()
            await asyncio.to_thread(stop.wait)

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    assert started.wait(10)
    yield url[0]
    stop.set()
    thread.join(10)


def test_an_upstream_error_is_one_line_without_its_control_characters(
        upstream: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "pool.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), "models": [
        {"name": "up", "backend": {"kind": "openai", "base_url": upstream, "model": "m"}}]}),
        encoding="utf-8")
    run: Run = run_cli(["ask", "--config", str(config), "up", "hi"], capsys)
    assert run.code == 1 and run.out == ""
    assert run.err.count("\n") == 1, run.err  # was: two lines
    assert "\x1b" not in run.err and "\x07" not in run.err
    assert "bad request second line\\x1b]0;pwned\\x07 end" in run.err


def test_ask_on_a_terminal_shows_a_models_control_characters_escaped(tmp_path: Path) -> None:
    config = tmp_path / "pool.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), "models": [
        {"name": "s", "backend": {"kind": "scripted", "seed": 1, "answers": {"B": 1.0},
                                  "template": "\x1b[2J\x1b]0;pwned\x07{answer}"}}]}),
        encoding="utf-8")
    argv = ["ask", "--config", str(config), "s", "hi"]
    proc, reader, chunks = _start(argv, tty=True)
    _, err = proc.communicate(timeout=60)
    assert reader is not None
    reader.join(timeout=10)
    out = b"".join(chunks).decode()
    assert proc.returncode == 0, err
    assert "\x1b" not in out and "\x07" not in out, repr(out)  # was: sent to the terminal
    assert "\\x1b[2J\\x1b]0;pwned\\x07B" in out
    piped, _, _ = _start(argv, tty=False)  # a pipe gets the answer as the model wrote it
    raw, _ = piped.communicate(timeout=60)
    assert b"\x1b]0;pwned\x07B" in raw
