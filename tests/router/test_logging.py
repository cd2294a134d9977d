"""The log pipeline: the fused JSON processor, redaction, buffering."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from structlog.testing import capture_logs

from router import logging as rlog
from router.logging import (
    FailureRun,
    ForeignHandler,
    JsonLine,
    configure_logging,
    flush_logs,
    processor_chain,
    render_json,
)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put it all back after each test (a
    structlog console renderer left on the root logger renders asyncio's tracebacks with
    rich, slowly enough to stall later tests' event loops)."""
    root, access = logging.getLogger(), logging.getLogger("aiohttp.access")
    handlers, level, access_level = root.handlers[:], root.level, access.level
    yield
    factory = structlog.get_config().get("logger_factory")
    if hasattr(factory, "close"):
        factory.close()
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)
    access.setLevel(access_level)


class Named:
    name = "diffroute.test"


def chained(method: str, event: dict[str, Any]) -> dict[str, Any]:
    for step in processor_chain():
        event = step(Named(), method, event)
    line = orjson.loads(render_json(Named(), method, event))
    assert isinstance(line, dict)
    return line


def test_the_fused_processor_writes_what_the_chain_writes() -> None:
    tokens = structlog.contextvars.bind_contextvars(request_id="r-1")
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            failure = sys.exc_info()
        for method, event in [
            ("info", {"event": "http.request", "http.route": "/v1/route", "n": 3}),
            ("warn", {"event": "careful", "API_KEY": "sk-123", "Authorization": "Bearer x"}),
            ("exception", {"event": "failed", "exc_info": failure}),
        ]:
            fused = orjson.loads(JsonLine()(Named(), method, dict(event)))
            chain = chained(method, dict(event))
            assert fused.pop("timestamp")[:16] == chain.pop("timestamp")[:16]
            assert fused == chain
            assert fused["request_id"] == "r-1" and fused["logger"] == "diffroute.test"
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
    assert chain["level"] == "error" and "ValueError: boom" in chain["exception"]


def test_secret_named_fields_are_redacted_whatever_their_case() -> None:
    event = {"event": "x", "Api_Key": "sk-1", "token": "t", "model": "alpha"}
    out = rlog.redact_secrets(None, "info", dict(event))
    assert out == {"event": "x", "Api_Key": "[redacted]", "token": "[redacted]",
                   "model": "alpha"}
    # past the cap on remembered names, new names are still checked
    saved = set(rlog._KNOWN_NAMES)
    rlog._KNOWN_NAMES.update(f"field{i}" for i in range(5000))
    try:
        out = rlog.redact_secrets(None, "info", {"event": "y", "PASSWORD": "p", "fresh": 1})
        assert out == {"event": "y", "PASSWORD": "[redacted]", "fresh": 1}
    finally:
        rlog._KNOWN_NAMES.clear()
        rlog._KNOWN_NAMES.update(saved)


def test_configured_json_lines_are_buffered_then_written() -> None:
    stream = io.BytesIO()
    configure_logging("json", "INFO", stream=stream)
    log = structlog.get_logger("diffroute.http")
    log.debug("hidden")
    log.info("http.request", status=200, admin_key="never")
    assert stream.getvalue() == b""  # info waits for the flusher
    log.warning("now")  # warnings go at once, with what is pending before them
    lines = [orjson.loads(x) for x in stream.getvalue().splitlines()]
    assert [x["event"] for x in lines] == ["http.request", "now"]
    assert lines[0]["admin_key"] == "[redacted]" and lines[1]["level"] == "warning"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", lines[0]["timestamp"])
    log.info("later")
    flush_logs()
    assert orjson.loads(stream.getvalue().splitlines()[-1])["event"] == "later"


def test_the_access_line_goes_through_the_configured_processor_chain() -> None:
    """No logger writes past structlog: replacing the processors (as capture_logs does) or
    the level catches the service's access line like any other event."""
    stream = io.BytesIO()
    configure_logging("json", "INFO", stream=stream)
    tokens = structlog.contextvars.bind_contextvars(request_id="r-9")
    try:
        fields = {"http.route": "/v1/route", "http.response.status_code": 200, "api_key": "k"}
        structlog.get_logger("diffroute.http").info("http.request", **fields)
        flush_logs()
        line = orjson.loads(stream.getvalue().splitlines()[-1])
        assert line["request_id"] == "r-9" and line["api_key"] == "[redacted]"
        assert line["logger"] == "diffroute.http" and line["level"] == "info"
        with capture_logs() as captured:
            structlog.get_logger("diffroute.http").info("http.request", **fields)
        assert captured and captured[0]["http.route"] == "/v1/route"
    finally:
        structlog.contextvars.reset_contextvars(**tokens)


def test_console_lines_print_plain_tracebacks_without_local_variables() -> None:
    stream = io.BytesIO()
    configure_logging("console", "INFO", stream=stream)

    def fail(api_key: str) -> None:
        raise RuntimeError("upstream down")

    secret = "-".join(["sk", "secret", "123"])  # not in any source line a traceback shows
    try:
        fail(secret)
    except RuntimeError:
        structlog.get_logger("diffroute.test").exception("call.failed")
    flush_logs()
    text = stream.getvalue().decode()
    assert "call.failed" in text and "RuntimeError: upstream down" in text
    assert "sk-secret-123" not in text


def test_auto_format_is_console_at_a_terminal_and_json_elsewhere() -> None:
    import os

    from router.logging import resolve_format

    leader, follower = os.openpty()
    try:
        with open(follower, "wb", closefd=False) as terminal:
            assert resolve_format("auto", terminal) == "console"
    finally:
        os.close(leader)
        os.close(follower)
    assert resolve_format("auto", io.BytesIO()) == "json"
    assert resolve_format("console", io.BytesIO()) == "console"


@pytest.mark.parametrize(("level", "shown"), [("INFO", False), ("DEBUG", True)])
def test_third_party_chatter_is_shown_only_at_debug(level: str, shown: bool) -> None:
    stream = io.BytesIO()
    configure_logging("json", level, stream=stream)
    logging.getLogger("faiss.loader").info("Could not load library with AVX512 support")
    logging.getLogger("faiss.loader").warning("a real problem")
    flush_logs()
    text = stream.getvalue().decode()
    assert ("AVX512" in text) == shown and "a real problem" in text


SILENCED_LOAD = """
import sys
import structlog
from llama_cpp._utils import suppress_stdout_stderr
from router.logging import configure_logging, flush_logs

configure_logging("json", stream=getattr(sys, sys.argv[1]).buffer)
log = structlog.get_logger("diffroute.test")
with suppress_stdout_stderr(disable=False):  # what llama-cpp-python does around a load
    log.info("while.silenced")
    flush_logs()
    log.warning("warned.while.silenced")
log.info("after")
flush_logs()
"""


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_no_line_is_lost_while_a_library_points_the_descriptors_at_dev_null(
        stream: str) -> None:
    """llama-cpp-python silences a model load by ``dup2``-ing descriptors 1 and 2 to
    /dev/null (in the background, while the service starts): the log lines written in that
    window reach the real stdout (or stderr) all the same."""
    done = subprocess.run([sys.executable, "-c", SILENCED_LOAD, stream], capture_output=True,
                          timeout=120, cwd=Path(__file__).parents[2], check=True)
    lines = [orjson.loads(x) for x in getattr(done, stream).splitlines()]
    assert [x["event"] for x in lines] == ["while.silenced", "warned.while.silenced", "after"]


class _BrokenStdout(io.BytesIO):
    """Descriptor 1, already broken: flushing it fails."""

    def fileno(self) -> int:
        return 1

    def flush(self) -> None:
        raise BrokenPipeError("the reader went away")


def test_a_broken_stdout_is_logged_to_as_before_not_duplicated() -> None:
    broken = _BrokenStdout()
    assert rlog.own_descriptor(broken) is broken
    plain = io.BytesIO()  # no descriptor at all
    assert rlog.own_descriptor(plain) is plain


async def test_a_malformed_request_is_a_400_and_one_warning_line_without_a_traceback(
        tmp_path: Path) -> None:
    """A body whose Content-Encoding does not decode, a request line past aiohttp's limit:
    the client's errors — a 4xx, and a warning with the reason, not an error traceback."""
    from tests.e2e.harness import call, make_settings, serve, standard_models

    root = logging.getLogger()  # as configure_logging sets it (put back by the fixture)
    root.handlers[:] = [ForeignHandler()]
    root.setLevel(logging.INFO)
    with capture_logs() as logs:
        async with serve(make_settings(tmp_path, standard_models())) as running:
            for path in ("/v1/chat/completions", "/v1/route"):
                status, payload = await call(running, "POST", path, raw=b"not gzip at all",
                                             headers={"Content-Encoding": "gzip"})
                assert status == 400 and payload["error"]["code"] == "invalid_body", payload
                assert "content-encoding: gzip" in payload["error"]["message"]
            status, _ = await call(running, "GET", "/v1/diffs?domain=" + "x" * 9000)
            assert status in (400, 414)
            status, _ = await call(running, "GET", "/healthz")
            assert status == 200
    assert not [x for x in logs if "exc_info" in x or x["log_level"] in ("error", "critical")]
    refused = [x for x in logs if "error.type" in x]
    assert refused and all(x["log_level"] == "warning" and x["error"] for x in refused)
    assert {"RequestPayloadError", "LineTooLong"} <= {x["error.type"] for x in refused}


def test_a_librarys_warning_with_an_exception_is_one_line_without_its_traceback() -> None:
    """asyncpg's pool warns with a traceback each time it fails to reconnect while the
    database is away: five tracebacks in 20 s of outage. One line each now; errors keep
    theirs."""
    handler = ForeignHandler()
    try:
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")
    except ConnectionRefusedError:
        warned = logging.LogRecord("asyncpg.pool", logging.WARNING, __file__, 1,
                                   "Failed to restore the pool connection floor", None,
                                   sys.exc_info())
        failed = logging.LogRecord("asyncpg.pool", logging.ERROR, __file__, 1, "broken", None,
                                   sys.exc_info())
    with capture_logs() as logs:
        handler.emit(warned)
        handler.emit(failed)
    assert logs[0]["log_level"] == "warning" and "exc_info" not in logs[0]
    assert logs[0]["error.type"] == "ConnectionRefusedError" and "5432" in logs[0]["error"]
    assert logs[1]["log_level"] == "error" and "exc_info" in logs[1]


def test_a_background_loops_failures_are_logged_as_a_run() -> None:
    """A store away for a minute wrote a warning per second per loop: now the first failure,
    one line a minute with the count, and one when it works again."""
    run = FailureRun("live.follow_failed", every_s=60.0)
    with capture_logs() as logs:
        for second in range(125):
            run.failed(RuntimeError("database away"), now=float(second))
        run.succeeded(now=125.0)
        run.succeeded(now=126.0)
    assert [(e["event"], e.get("failures")) for e in logs] == [
        ("live.follow_failed", None), ("live.follow_failed", 61), ("live.follow_failed", 121),
        ("live.follow_recovered", 125)]
    assert logs[-1]["failed_for_s"] == 125.0
