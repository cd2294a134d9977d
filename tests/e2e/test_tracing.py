"""Traces of the real service over a socket (``router.telemetry``, ``router.service.tracing``).

Spans are read from the SDK's in-memory exporter, or from a real OTLP/HTTP receiver on
loopback that decodes the protobuf export requests; upstreams are real aiohttp apps.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from structlog.testing import capture_logs

from router.cli import main
from router.errors import StartupError
from router.paired.record import InMemoryLiveDiffSink
from router.service.tracing import TRACING
from tests.e2e.harness import (
    CAPITAL,
    Running,
    call,
    make_settings,
    remote,
    serve,
    standard_models,
)
from tests.fakes import FakeUpstream, Reply, until

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
ASK = {"model": "audit:alpha", "messages": [{"role": "user", "content": CAPITAL}]}


@asynccontextmanager
async def traced_service(tmp_path: Path, models: Sequence[dict[str, Any]],
                         exporter: InMemorySpanExporter, **server: Any
                         ) -> AsyncIterator[Running]:
    """The service with spans going to ``exporter``; records acknowledged before answers."""
    sink = InMemoryLiveDiffSink()

    @asynccontextmanager
    async def sink_factory(_settings: object) -> AsyncIterator[InMemoryLiveDiffSink]:
        yield sink

    async with serve(make_settings(tmp_path, models, **server), sink_factory=sink_factory,
                     ack_records=True, span_exporter=exporter) as running:
        yield running


def by_name(spans: Sequence[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in spans}


def children_of(parent: ReadableSpan, spans: Sequence[ReadableSpan]) -> set[str]:
    return {s.name for s in spans
            if s.parent is not None and s.parent.span_id == parent.context.span_id}


async def test_a_paired_audit_is_a_request_span_with_primary_partner_compare_and_record(
        tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    async with traced_service(tmp_path, standard_models(), exporter) as running:
        status, body = await call(running, "POST", "/v1/chat/completions", ASK)
    assert status == 200
    spans = exporter.get_finished_spans()
    named = by_name(spans)
    request = named["POST /v1/chat/completions"]
    assert request.kind == SpanKind.SERVER and request.parent is None
    assert children_of(request, spans) == {"chat alpha", "chat beta", "diffroute.compare",
                                           "diffroute.record"}
    outcome = body["diffroute"]
    assert request.attributes is not None
    assert request.attributes["http.response.status_code"] == 200
    assert request.attributes["diffroute.role"] == "audit"
    assert request.attributes["diffroute.partner"] == "beta"
    assert request.attributes["diffroute.flagged"] is True
    assert request.attributes["diffroute.live_diff_id"] == outcome["live_diff_id"]
    assert request.attributes["diffroute.agreement"] == outcome["agreement"]
    for model, member in (("alpha", "primary"), ("beta", "partner")):
        span = named[f"chat {model}"]
        assert span.kind == SpanKind.CLIENT
        assert span.attributes is not None
        assert span.attributes["gen_ai.operation.name"] == "chat"
        assert span.attributes["gen_ai.request.model"] == model
        assert span.attributes["gen_ai.system"] == "diffroute.scripted"
        assert span.attributes["gen_ai.usage.input_tokens"] > 0
        assert span.attributes["gen_ai.usage.output_tokens"] > 0
        assert span.attributes["diffroute.member"] == member
        assert span.attributes["diffroute.role"] == "audit"
        assert span.attributes["diffroute.partner"] == "beta"
    compare = named["diffroute.compare"].attributes
    assert compare is not None and compare["diffroute.flagged"] is True
    assert compare["diffroute.agreement"] == pytest.approx(outcome["agreement"])
    record = named["diffroute.record"].attributes
    assert record is not None and record["diffroute.live_diff_id"] == outcome["live_diff_id"]


def traceparent_ids(value: str) -> tuple[str, str]:
    version, trace_id, span_id, _flags = value.split("-")
    assert version == "00"
    return trace_id, span_id


async def test_b_a_callers_traceparent_is_continued_and_carried_to_the_upstream(
        tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    async with FakeUpstream(answers={"up-a": "Paris.", "up-b": "Lyon."}) as fake:
        models = [remote("ra", "a", fake.base_url, "up-a"),
                  remote("rb", "b", fake.base_url, "up-b")]
        async with traced_service(tmp_path, models, exporter) as running:
            status, _ = await call(running, "POST", "/v1/chat/completions",
                                   {**ASK, "model": "audit:ra"},
                                   headers={"traceparent": TRACEPARENT})
    assert status == 200
    spans = exporter.get_finished_spans()
    assert spans and {format(s.context.trace_id, "032x") for s in spans} == {TRACE_ID}
    request = by_name(spans)["POST /v1/chat/completions"]
    assert request.parent is not None and format(request.parent.span_id, "016x") == PARENT_ID
    model_spans = {format(s.context.span_id, "016x") for s in spans if s.name.startswith("chat")}
    upstream = [traceparent_ids(c.headers["traceparent"]) for c in fake.calls]
    assert len(upstream) == 2
    assert {trace for trace, _ in upstream} == {TRACE_ID}
    # each upstream request is a child of its own model call's span
    assert {parent for _, parent in upstream} == model_spans
    response_models = {s.attributes["gen_ai.response.model"] for s in spans
                       if s.name.startswith("chat") and s.attributes is not None}
    assert response_models == {"up-a", "up-b"}


@pytest.mark.parametrize("log_prompts", [False, True])
async def test_d_prompts_and_answers_are_in_spans_only_with_log_prompts(
        tmp_path: Path, log_prompts: bool) -> None:
    exporter = InMemorySpanExporter()
    async with traced_service(tmp_path, standard_models(), exporter,
                              log_prompts=log_prompts) as running:
        status, _ = await call(running, "POST", "/v1/chat/completions", ASK)
    assert status == 200
    values = " ".join(str(v) for s in exporter.get_finished_spans()
                      for v in (s.attributes or {}).values())
    assert (CAPITAL in values) is log_prompts
    assert ("Lyon." in values) is log_prompts
    primary = by_name(exporter.get_finished_spans())["chat alpha"].attributes or {}
    assert ("gen_ai.input.messages" in primary) is log_prompts
    # streamed, the answering model's span carries the prompt too (it carried "[]")
    exporter = InMemorySpanExporter()  # the first one was shut down with its service
    async with traced_service(tmp_path, standard_models(), exporter,
                              log_prompts=log_prompts) as running:
        await read_stream(running, {**ASK, "stream": True})
    streamed = by_name(exporter.get_finished_spans())["chat alpha"].attributes or {}
    if log_prompts:
        assert CAPITAL in str(streamed["gen_ai.input.messages"])
    else:
        assert "gen_ai.input.messages" not in streamed


# -- (c) a streamed audit, exported over OTLP/HTTP to a real receiver ------------------------


class OtlpReceiver:
    """An OTLP/HTTP traces receiver on loopback: ``POST /v1/traces`` (protobuf)."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.resources: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def receive(self, request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        for resource_spans in message.resource_spans:
            self.resources.append({a.key: a.value.string_value
                                   for a in resource_spans.resource.attributes})
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(scope_spans.spans)
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def __aenter__(self) -> OtlpReceiver:
        app = web.Application()
        app.router.add_post("/v1/traces", self.receive)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def attributes(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in span.attributes:
        kind = a.value.WhichOneof("value")
        out[a.key] = getattr(a.value, kind)
    return out


async def read_stream(running: Running, body: dict[str, Any]) -> list[dict[str, Any]]:
    events = []
    async with aiohttp.ClientSession() as http, http.post(
            running.base_url + "/chat/completions", json=body) as response:
        assert response.status == 200
        async for line in response.content:
            text = line.decode().strip()
            if text.startswith("data: ") and text != "data: [DONE]":
                events.append(json.loads(text[6:]))
    return events


async def test_c_a_streamed_audit_reaches_an_otlp_receiver_as_a_span_tree(
        tmp_path: Path) -> None:
    async with OtlpReceiver() as receiver:
        settings = make_settings(tmp_path, standard_models())
        settings = settings.model_copy(update={"telemetry": settings.telemetry.model_copy(
            update={"otlp_endpoint": receiver.url, "service_name": "diffroute-test"})})
        async with serve(settings) as running:
            events = await read_stream(running, {**ASK, "stream": True})
            # the batch exporter posts from its thread, to this loop's receiver
            await asyncio.to_thread(running.app[TRACING].provider.force_flush)
        assert events[-1]["diffroute"]["flagged"] is True
        spans = {span.name: span for span in receiver.spans}
    assert set(spans) >= {"POST /v1/chat/completions", "chat alpha", "chat beta",
                          "diffroute.compare", "diffroute.record"}
    request = spans["POST /v1/chat/completions"]
    assert request.parent_span_id == b""
    for name in ("chat alpha", "chat beta", "diffroute.compare", "diffroute.record"):
        assert spans[name].parent_span_id == request.span_id, name
        assert spans[name].trace_id == request.trace_id
        assert spans[name].end_time_unix_nano >= spans[name].start_time_unix_nano > 0
    primary = attributes(spans["chat alpha"])
    assert primary["diffroute.member"] == "primary"
    assert primary["gen_ai.usage.output_tokens"] > 0
    assert attributes(request)["diffroute.live_diff_id"] == events[-1]["diffroute"][
        "live_diff_id"]
    assert {"service.name": "diffroute-test"} .items() <= receiver.resources[0].items()


# -- (e) off: nothing of OpenTelemetry is even imported -----------------------------------------

OFF_SCRIPT = textwrap.dedent("""
    import asyncio, json, sys
    from pathlib import Path
    from tests.e2e.harness import call, make_settings, serve, standard_models

    async def main(tmp):
        async with serve(make_settings(Path(tmp), standard_models())) as running:
            status, body = await call(running, "POST", "/v1/chat/completions",
                {"model": "audit:alpha",
                 "messages": [{"role": "user", "content": "What is 2 + 2?"}]})
            assert status == 200 and body["diffroute"]["partner"] == "beta", body
            app = running.app
            return {"tracing": app.get(__import__("router.service.tracing",
                                                   fromlist=["TRACING"]).TRACING) is not None,
                    "modules": sorted(m for m in sys.modules if m.startswith("opentelemetry"))}

    print(json.dumps(asyncio.run(main(sys.argv[1]))))
""")


def test_e_telemetry_off_imports_no_opentelemetry_and_makes_no_spans(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(Path(__file__).parents[2])
    done = subprocess.run([sys.executable, "-c", OFF_SCRIPT, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"tracing": False, "modules": []}


def test_the_standard_variable_turns_tracing_on(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from router.service import create_app
    from router.service.tracing import tracing_middleware

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    assert tracing_middleware in create_app(make_settings(tmp_path, standard_models())).middlewares
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    app = create_app(make_settings(tmp_path, standard_models()))
    assert tracing_middleware not in app.middlewares
    # a variable without a scheme is refused at start, as the setting is (it failed at every
    # export, with an error line each time)
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:18999")
    with pytest.raises(StartupError, match="OTEL_EXPORTER_OTLP_ENDPOINT must be an http"):
        create_app(make_settings(tmp_path, standard_models()))


def test_tracing_asked_for_without_opentelemetry_fails_at_start_with_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "pool.yaml"
    config.write_text(json.dumps({
        "models": standard_models(), "data_dir": str(tmp_path / "data"),
        "telemetry": {"otlp_endpoint": "http://127.0.0.1:4318"}}))
    for name in [m for m in sys.modules if m.startswith("opentelemetry.sdk")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk", None)  # as if not installed
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--config", str(config), "--port", "0"])
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["diffroute: error: tracing is asked for (telemetry.otlp_endpoint) but "
                     "OpenTelemetry is not installed: pip install 'diffroute[telemetry]'"]


async def test_a_stream_the_client_leaves_ends_its_spans(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    piece = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "up-a",
             "choices": [{"index": 0, "delta": {"content": "Par"}, "finish_reason": None}]}
    async with FakeUpstream() as slow, FakeUpstream(answer="Paris.") as partner:
        slow.enqueue(Reply(chunks=[piece] * 20, chunk_delay=0.2))
        models = [remote("ra", "a", slow.base_url, "up-a"),
                  remote("rb", "b", partner.base_url, "up-b")]
        async with traced_service(tmp_path, models, exporter) as running:
            async with aiohttp.ClientSession() as http, http.post(
                    running.base_url + "/chat/completions",
                    json={**ASK, "model": "audit:ra", "stream": True}) as response:
                assert response.status == 200
                assert (await response.content.readline()).startswith(b"data: ")
            # the client is gone after one chunk of twenty

            def ended() -> bool:
                return {"chat ra", "POST /v1/chat/completions"} <= set(
                    by_name(exporter.get_finished_spans()))

            await asyncio.wait_for(until(ended), 3)
    primary = by_name(exporter.get_finished_spans())["chat ra"]
    assert not primary.status.is_ok
    # the streamed upstream request is a child of the stream's span
    assert traceparent_ids(slow.calls[0].headers["traceparent"]) == (
        format(primary.context.trace_id, "032x"), format(primary.context.span_id, "016x"))
    assert primary.end_time is not None and primary.end_time - primary.start_time < 3e9


@pytest.mark.parametrize("log_prompts", [False, True])
async def test_a_failing_partner_is_an_error_span_whose_upstream_text_follows_log_prompts(
        tmp_path: Path, log_prompts: bool) -> None:
    exporter = InMemorySpanExporter()
    async with FakeUpstream(answer="Paris.") as primary, FakeUpstream() as partner:
        partner.enqueue(Reply.error(400, f"cannot answer {CAPITAL!r}"))  # echoes the prompt
        models = [remote("ra", "a", primary.base_url, "up-a"),
                  remote("rb", "b", partner.base_url, "up-b")]
        async with traced_service(tmp_path, models, exporter,
                                  log_prompts=log_prompts) as running:
            status, body = await call(running, "POST", "/v1/chat/completions",
                                      {**ASK, "model": "audit:ra",
                                       "diffroute": {"partner": "rb"}})
    assert status == 200 and "partner_error" in body["diffroute"]
    failed = by_name(exporter.get_finished_spans())["chat rb"]
    assert not failed.status.is_ok
    assert failed.attributes is not None
    assert failed.attributes["error.type"] == "UpstreamRequestError"  # a 400: the request refused
    assert (CAPITAL in (failed.status.description or "")) is log_prompts
    texts = [str(e.attributes) for s in exporter.get_finished_spans() for e in s.events]
    assert not any(CAPITAL in t for t in texts) or log_prompts


async def test_a_plain_call_is_one_server_span_whose_context_reaches_the_upstream(
        tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    async with FakeUpstream(answer="Paris.") as fake, traced_service(
            tmp_path, [remote("ra", "a", fake.base_url, "up-a")], exporter) as running:
        status, _ = await call(running, "POST", "/v1/chat/completions",
                               {**ASK, "model": "ra"}, headers={"traceparent": TRACEPARENT})
    assert status == 200
    [request] = exporter.get_finished_spans()
    assert request.name == "POST /v1/chat/completions" and request.attributes is not None
    assert request.attributes["gen_ai.request.model"] == "ra"
    assert request.attributes["gen_ai.usage.output_tokens"] > 0
    [upstream] = fake.calls
    assert traceparent_ids(upstream.headers["traceparent"]) == (
        TRACE_ID, format(request.context.span_id, "016x"))


async def test_a_collector_that_never_answers_does_not_hold_the_shutdown(
        tmp_path: Path) -> None:
    """A hanging collector held a stopping service ~10 s per batch of spans left (30 s with a
    2 s grace): the last export gets the shutdown's grace, then the spans are dropped, said
    in a warning."""
    hang = asyncio.Event()

    async def never(request: web.Request) -> web.Response:
        await hang.wait()  # until the test ends
        return web.Response()

    app = web.Application()
    app.router.add_post("/v1/traces", never)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    settings = make_settings(tmp_path, standard_models())
    settings = settings.model_copy(update={
        "telemetry": settings.telemetry.model_copy(update={"otlp_endpoint": url}),
        "server": settings.server.model_copy(update={"shutdown_timeout": 0.5})})
    try:
        with capture_logs() as logs:
            async with asyncio.timeout(8):  # a hang, not a measurement: 10 s per batch before
                async with serve(settings) as running:
                    for _ in range(3):
                        await read_stream(running, {**ASK, "stream": True})
        assert any(e["event"] == "tracing.shutdown_incomplete" for e in logs), logs
    finally:
        hang.set()
        await runner.cleanup()


async def test_a_failing_plain_call_names_its_model_and_error_type_on_its_span(
        tmp_path: Path) -> None:
    """A plain call whose upstream failed was a 502 span with neither the model nor
    ``error.type``: nothing in the trace (or the access line) said which model failed."""
    exporter = InMemorySpanExporter()
    async with FakeUpstream() as fake:
        fake.enqueue(*[Reply.error(500, f"cannot answer {CAPITAL!r}")] * 4)  # retries too
        async with traced_service(tmp_path, [remote("ra", "a", fake.base_url, "up-a")],
                                  exporter) as running:
            with capture_logs() as logs:
                status, _ = await call(running, "POST", "/v1/chat/completions",
                                       {**ASK, "model": "ra"})
    assert status == 502
    [request] = exporter.get_finished_spans()
    assert not request.status.is_ok and request.attributes is not None
    assert request.attributes["gen_ai.request.model"] == "ra"
    assert request.attributes["error.type"].startswith("Upstream")
    assert not any(CAPITAL in str(v) for v in request.attributes.values())  # log_prompts off
    [access] = [e for e in logs if e["event"] == "http.request"]
    assert access["gen_ai.request.model"] == "ra" and access["http.response.status_code"] == 502


@pytest.mark.parametrize("backend", ["openai", "scripted"])
async def test_a_plain_call_keeps_its_model_fields_on_its_span_with_log_prompts(
        tmp_path: Path, backend: str) -> None:
    """With ``log_prompts`` a plain (non-streamed) call's model fields go to their own
    ``gen_ai.chat`` event, not the access line: its span lost ``gen_ai.request.model`` and the
    usage (a streamed call kept them)."""
    exporter = InMemorySpanExporter()
    async with FakeUpstream(answer="Paris.") as fake:
        model = (remote("ra", "a", fake.base_url, "up-a") if backend == "openai"
                 else standard_models()[0] | {"name": "ra"})
        async with traced_service(tmp_path, [model], exporter, log_prompts=True) as running:
            status, _ = await call(running, "POST", "/v1/chat/completions",
                                   {**ASK, "model": "ra"})
    assert status == 200
    [request] = exporter.get_finished_spans()
    assert request.attributes is not None
    assert request.attributes["gen_ai.request.model"] == "ra"
    assert request.attributes["gen_ai.usage.output_tokens"] > 0


async def test_a_plain_stream_its_upstream_cut_is_an_error_span(tmp_path: Path) -> None:
    """The client got an ``error`` event after a 200, the log a ``chat.stream_failed``: the
    request's span was a success (status unset, no ``error.type``)."""
    exporter = InMemorySpanExporter()
    piece = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "up-a",
             "choices": [{"index": 0, "delta": {"content": "Par"}, "finish_reason": None}]}
    async with FakeUpstream() as fake:
        fake.enqueue(Reply(chunks=[piece] * 3, done=False))  # cut: no finish, no [DONE]
        async with traced_service(tmp_path, [remote("ra", "a", fake.base_url, "up-a")],
                                  exporter) as running:
            events = await read_stream(running, {**ASK, "model": "ra", "stream": True})
    assert "error" in events[-1]
    [request] = exporter.get_finished_spans()
    assert not request.status.is_ok and request.attributes is not None
    assert request.attributes["error.type"] == "UpstreamProtocolError"
    assert request.attributes["gen_ai.request.model"] == "ra"


async def test_a_request_the_client_leaves_keeps_its_request_id_on_its_span(
        tmp_path: Path) -> None:
    """A cancelled handler skipped the span's finishing touches: a span without the request
    id its access line (status 499) has, nothing to join them on."""
    exporter = InMemorySpanExporter()
    piece = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "up-a",
             "choices": [{"index": 0, "delta": {"content": "Par"}, "finish_reason": None}]}
    async with FakeUpstream() as slow:
        slow.enqueue(Reply(chunks=[piece] * 20, chunk_delay=0.2))
        async with traced_service(tmp_path, [remote("ra", "a", slow.base_url, "up-a")],
                                  exporter) as running:
            async with aiohttp.ClientSession() as http, http.post(
                    running.base_url + "/chat/completions",
                    json={**ASK, "model": "ra", "stream": True}) as response:
                assert (await response.content.readline()).startswith(b"data: ")
                rid = response.headers["x-request-id"]
            await asyncio.wait_for(until(lambda: bool(exporter.get_finished_spans())), 3)
    [request] = exporter.get_finished_spans()
    assert request.attributes is not None
    assert request.attributes["diffroute.request_id"] == rid


async def test_a_paired_call_that_fails_is_a_5xx_span_with_an_error_type(tmp_path: Path) -> None:
    """A 502 from an audit whose primary failed: the request's span had the error status but
    no ``error.type``, which the HTTP semantic conventions require of a failed request."""
    exporter = InMemorySpanExporter()
    async with FakeUpstream() as fake:
        fake.enqueue(*[Reply.error(500, "down")] * 8)  # the primary and its retries
        models = [remote("ra", "a", fake.base_url, "up-a"),
                  remote("rb", "b", fake.base_url, "up-b")]
        async with traced_service(tmp_path, models, exporter) as running:
            status, _ = await call(running, "POST", "/v1/chat/completions",
                                   {**ASK, "model": "audit:ra", "diffroute": {"partner": "rb"}})
    assert status >= 500
    request = by_name(exporter.get_finished_spans())["POST /v1/chat/completions"]
    assert not request.status.is_ok and request.attributes is not None
    assert request.attributes["error.type"] == str(status)


async def test_a_request_no_route_takes_is_named_by_its_method_alone(tmp_path: Path) -> None:
    """``POST (unmatched)`` with ``http.route = "(unmatched)"`` (a 404, a 405 on a known path),
    and any token a method name: the HTTP conventions name such a span by its method, without
    ``http.route``, and an unknown method ``_OTHER``, so that span names stay few."""
    exporter = InMemorySpanExporter()
    async with traced_service(tmp_path, standard_models(), exporter) as running:
        assert (await call(running, "POST", "/v1/nothing", {}))[0] == 404
        assert (await call(running, "POST", "/v1/models", {}))[0] == 405
        assert (await call(running, "PROPFIND", "/v1/models"))[0] == 405
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["POST", "POST", "HTTP"]
    assert all(s.attributes is not None and "http.route" not in s.attributes for s in spans)
    assert spans[2].attributes is not None
    assert spans[2].attributes["http.request.method"] == "_OTHER"
    assert spans[2].attributes["http.request.method_original"] == "PROPFIND"
