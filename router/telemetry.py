"""Traces (OpenTelemetry): off by default, and free when off.

Tracing is on when the settings name a collector (``telemetry.otlp_endpoint``) or the standard
variables do (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``OTEL_EXPORTER_OTLP_ENDPOINT``; headers
from ``telemetry.headers`` or ``OTEL_EXPORTER_OTLP_HEADERS``), unless ``OTEL_SDK_DISABLED`` is
true. Then :func:`plan_tracing` checks, when the app is built, that the packages are there, and
:func:`open_tracing` builds, when it starts, one :class:`Tracing`: its own tracer provider
(never installed as the process's global one), a batching OTLP/HTTP exporter, and the W3C trace
context propagator. When it is off, :func:`plan_tracing` returns ``None`` and OpenTelemetry is
not even imported: every component that traces holds ``Tracing | None`` and checks it.

The spans (names, kinds, attributes) are those of the README's "Tracing (OpenTelemetry)":

* the HTTP request, a server span continuing the caller's ``traceparent``
  (:mod:`router.service.tracing`);
* for a paired call, one ``chat {model}`` client span per model call (GenAI semantic
  conventions, plus ``diffroute.member``: ``primary`` or ``partner``), ``diffroute.compare``
  and ``diffroute.record`` (:mod:`router.paired.spans`);
* the upstream HTTP request of an ``openai`` backend carries the current span's
  ``traceparent`` (:meth:`Tracing.trace_head`).

Prompts and answers become span attributes only when ``server.log_prompts`` is true.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from profiles.protocol import Message, Usage
from router.config import url_problem
from router.errors import StartupError
from router.logging import FailureRun, error_fields

if TYPE_CHECKING:  # OpenTelemetry is imported only when tracing is on
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

    from router.config import TelemetrySettings

TRACES_PATH = "/v1/traces"
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
"""The standard variables that turn tracing on when the settings name no endpoint."""
INSTALL_HINT = "pip install 'diffroute[telemetry]'"
PROVIDERS = {"openai": "openai", "llamacpp": "llama_cpp", "scripted": "diffroute.scripted"}
"""``gen_ai.provider.name`` of each backend kind."""

Attributes = dict[str, str | bool | int | float]
"""Span attributes (OpenTelemetry refuses ``None`` values: leave those out)."""


@dataclass(frozen=True, slots=True)
class TraceTarget:
    """Where spans go: the collector's traces URL and headers (``None``: the exporter reads
    the standard variables), and what asked for it (for error messages)."""

    endpoint: str | None
    headers: Mapping[str, str] | None
    source: str


def traces_url(endpoint: str) -> str:
    """A collector's base URL (``http://host:4318``) → its traces URL (``…/v1/traces``)."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(TRACES_PATH) else endpoint + TRACES_PATH


def trace_target(settings: TelemetrySettings,
                 environ: Mapping[str, str]) -> TraceTarget | None:
    """Where to send spans, or ``None`` when tracing is off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    headers = _resolved_headers(settings) if settings.headers else None
    if settings.otlp_endpoint is not None:
        _check_header_variables(environ)  # the exporter reads them, given headers or not
        return TraceTarget(traces_url(settings.otlp_endpoint), headers,
                           "telemetry.otlp_endpoint")
    named = [v for v in ENDPOINT_VARIABLES if environ.get(v, "").strip()]
    for variable in named[:1]:  # the one the exporter reads: checked as the setting is
        problem = url_problem(environ[variable].strip())
        if problem is not None:
            raise StartupError(f"{variable} {problem}, not "
                               f"'{environ[variable].strip()[:100]}'")
        _check_header_variables(environ)
    return TraceTarget(None, headers, named[0]) if named else None


HEADER_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")
"""The standard variables of the export's headers, the first set one being read."""
_HEADER_ITEM = re.compile(  # the exporter's (liberal) name=value
    r"[ \t]*[\x21\x23-\x27\x2a\x2b\x2d\x2e\x30-\x39\x41-\x5a\x5e-\x7a\x7c\x7e]+[ \t]*="
    r"[ \t]*[\x20\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*[ \t]*")


def _check_header_variables(environ: Mapping[str, str]) -> None:
    """A malformed entry was left out by the exporter (the export went without it) with a
    warning quoting it whole: an ``Authorization:Bearer …`` token in the logs."""
    variable = next((v for v in HEADER_VARIABLES if environ.get(v)), None)
    if variable is None:
        return
    for number, item in enumerate(re.split(r"[ \t]*,[ \t]*", environ[variable]), 1):
        if item and not _HEADER_ITEM.fullmatch(item.strip()):
            raise StartupError(f"{variable}: entry {number} is not name=value (a comma-separated "
                               "list, values URL-encoded); not shown, as it may hold a secret")


def _resolved_headers(settings: TelemetrySettings) -> dict[str, str]:
    missing = [f"{name} ({ref.describe()})" for name, ref in settings.headers.items()
               if ref.value() is None]
    if missing:  # name the variable to set, as a missing server key does
        raise StartupError(f"telemetry.headers: {', '.join(missing)} is not set in the "
                           "environment")
    return {name: str(ref.value()) for name, ref in settings.headers.items()}


@dataclass(frozen=True, slots=True)
class TracePlan:
    """Tracing asked for, and possible here: checked when the app is built, opened when it
    starts (:func:`open_tracing`)."""

    settings: TelemetrySettings
    target: TraceTarget | None
    exporter: SpanExporter | None
    """Given instead of a collector (tests, embedding): spans go to it as they end."""


SDK_MODULE = "opentelemetry.sdk.trace"
EXPORTER_MODULE = "opentelemetry.exporter.otlp.proto.http.trace_exporter"


def plan_tracing(settings: TelemetrySettings, *, exporter: SpanExporter | None = None,
                 environ: Mapping[str, str] | None = None) -> TracePlan | None:
    """``None`` when tracing is off (nothing of OpenTelemetry is imported then); else the
    plan, once the packages it needs are known to import (a :class:`StartupError` naming the
    extra to install, if not)."""
    target = trace_target(settings, os.environ if environ is None else environ)
    if exporter is None and target is None:
        return None
    needed = [SDK_MODULE] if exporter is not None else [SDK_MODULE, EXPORTER_MODULE]
    for module in needed:
        try:
            importlib.import_module(module)
        except ImportError:
            raise StartupError(f"tracing is asked for ({_source(target)}) but OpenTelemetry "
                               f"is not installed: {INSTALL_HINT}") from None
    return TracePlan(settings, target, exporter)


def open_tracing(plan: TracePlan, *, log_prompts: bool) -> Tracing:
    """The app's tracer provider, sampler and span processor (batching, to the collector;
    or one span at a time, to a given exporter)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    settings = plan.settings
    if "service_name" in settings.model_fields_set:
        resource = Resource.create({"service.name": settings.service_name})
    else:  # the standard OTEL_SERVICE_NAME (or OTEL_RESOURCE_ATTRIBUTES) names it, else ours
        resource = Resource.create({})
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": settings.service_name}))
    provider = TracerProvider(
        resource=resource,
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
        shutdown_on_exit=False)  # shut down by the app, within its grace (Tracing.shutdown)
    if plan.exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(plan.exporter))
    else:
        try:  # the batching reads OTEL_BSP_* (a queue smaller than a batch is refused)
            batching = BatchSpanProcessor(_otlp_exporter(plan.target))
        except ValueError as exc:
            raise StartupError(f"tracing: the span batching settings (OTEL_BSP_* variables) "
                               f"are invalid: {exc}") from None
        provider.add_span_processor(batching)
    return Tracing(provider, log_prompts)


def _source(target: TraceTarget | None) -> str:
    return "an exporter was given" if target is None else target.source


def _otlp_exporter(target: TraceTarget | None) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    if target is None:
        exporter = OTLPSpanExporter()
    else:  # an endpoint or headers left None: the exporter reads the standard variables
        exporter = OTLPSpanExporter(
            endpoint=target.endpoint,
            headers=None if target.headers is None else dict(target.headers))
    return _reported(exporter)


EXPORTER_LOGGER = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
"""Where the OTLP/HTTP exporter says that a batch failed (and each retry of it)."""
_export_failures = FailureRun("tracing.export_failed")
"""A collector away: the first failure, one line a minute, one when it takes spans again
(the exporter's own lines were four per batch, every 5 s, for as long as it was away)."""


class _ExportFailures(logging.Filter):
    """Keeps the exporter's last warning or error (why a batch failed) instead of logging
    it: the batch's failure is logged as part of a run (:func:`_reported`)."""

    last = ""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        _ExportFailures.last = record.getMessage()[:500]
        return False


def _reported(exporter: SpanExporter) -> SpanExporter:
    """``exporter``, whose failed batches are logged as a run (:data:`_export_failures`)."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    logger = logging.getLogger(EXPORTER_LOGGER)
    if not any(isinstance(f, _ExportFailures) for f in logger.filters):
        logger.addFilter(_ExportFailures())

    class Reported(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            _ExportFailures.last = ""
            result = exporter.export(spans)
            if result is SpanExportResult.SUCCESS:
                _export_failures.succeeded()
            else:
                _export_failures.failed(RuntimeError(
                    _ExportFailures.last or "the collector did not take a batch of spans"))
            return result

        def shutdown(self) -> None:
            exporter.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return exporter.force_flush(timeout_millis)

    return Reported()


CONTENT_LIMIT = 32_768
"""Characters of a prompt or an answer kept in a span (``log_prompts``): the exporter drops a
whole batch — every request's spans of those 5 s — past 64 MiB, and queues up to 2048 spans."""


class Tracing:
    """One app's tracer and propagator, and the ``log_prompts`` rule for span contents."""

    def __init__(self, provider: TracerProvider, log_prompts: bool) -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("diffroute")
        self.log_prompts = log_prompts
        self._propagator = TraceContextTextMapPropagator()

    def incoming(self, headers: Mapping[str, str]) -> Context:
        """The caller's trace context (``traceparent``), or an empty one."""
        return self._propagator.extract(headers)

    def server_span(self, name: str, parent: Context, attributes: Attributes) -> Span:
        """A started server span (the caller ends it)."""
        from opentelemetry.trace import SpanKind

        return self.tracer.start_span(name, parent, SpanKind.SERVER, attributes)

    @contextmanager
    def current(self, span: Span) -> Iterator[Span]:
        """``span`` as the current span inside the block; ended on leaving it (an exception
        sets the error status: :meth:`fail`)."""
        from opentelemetry.trace import use_span

        with use_span(span, end_on_exit=True, record_exception=False,
                      set_status_on_exception=False):
            try:
                yield span
            except BaseException as exc:
                self.fail(span, exc)
                raise

    @contextmanager
    def span(self, name: str, attributes: Attributes, *, client: bool = False) -> Iterator[Span]:
        """A child of the current span, current inside the block."""
        from opentelemetry.trace import SpanKind

        kind = SpanKind.CLIENT if client else SpanKind.INTERNAL
        with self.current(self.tracer.start_span(name, kind=kind, attributes=attributes)) as span:
            yield span

    def fail(self, span: Span, exc: BaseException) -> None:
        """The error status and ``error.type``; the description is the error's text unless an
        upstream's text (which may echo the prompt) is kept out by ``log_prompts``."""
        from opentelemetry.trace import Status, StatusCode

        fields = error_fields(exc, log_prompts=self.log_prompts)
        described = fields.get("error")
        if described is None:
            status = fields.get("http.response.status_code")
            described = type(exc).__name__ + ("" if status is None else f" (status {status})")
        span.set_attribute("error.type", type(exc).__name__)
        span.set_status(Status(StatusCode.ERROR, str(described)))

    def start(self, name: str, attributes: Attributes, *, client: bool = False) -> Span:
        """A started child of the current span that is not made current (a stream's, which
        outlives the block that starts it); the caller ends it."""
        from opentelemetry.trace import SpanKind

        kind = SpanKind.CLIENT if client else SpanKind.INTERNAL
        return self.tracer.start_span(name, kind=kind, attributes=attributes)

    @contextmanager
    def within(self, span: Span) -> Iterator[None]:
        """``span`` current inside the block, not ended on leaving it (no ``yield`` of a
        generator may happen inside: the block must enter and leave in one context)."""
        from opentelemetry import context
        from opentelemetry.trace import set_span_in_context

        token = context.attach(set_span_in_context(span))
        try:
            yield
        finally:
            context.detach(token)

    def trace_head(self) -> bytes:
        """The ``traceparent`` (and ``tracestate``) header lines of the current span, encoded
        for an upstream request; empty outside any span."""
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier)
        return "".join(f"{k}: {v}\r\n" for k, v in carrier.items()).encode("latin-1")

    def add_contents(self, span: Span, messages: Sequence[Message],
                     texts: Sequence[str]) -> None:
        """The prompt and the answers, only when ``log_prompts`` allows them; each cut at
        :data:`CONTENT_LIMIT` characters (``diffroute.contents_truncated``)."""
        if self.log_prompts:
            for key, value in (("gen_ai.input.messages", [dict(m) for m in messages]),
                               ("gen_ai.output.messages", list(texts))):
                text = json.dumps(value, ensure_ascii=False)
                if len(text) > CONTENT_LIMIT:
                    text = f"{text[:CONTENT_LIMIT]}…[{len(text) - CONTENT_LIMIT} more characters]"
                    span.set_attribute("diffroute.contents_truncated", True)
                span.set_attribute(key, text)

    def shutdown(self, timeout_s: float | None) -> bool:
        """Export what is left and stop, waiting ``timeout_s`` at most (0 or ``None``: no
        limit, as ``server.shutdown_timeout``; blocking: run it in a worker thread); whether it
        ended in time. A collector that hangs would hold the exit for ~10 s per batch left:
        past the timeout the export goes on in a daemon thread, which the process's exit
        ends."""
        done = threading.Event()

        def run() -> None:
            self.provider.shutdown()
            done.set()

        threading.Thread(target=run, name="tracing-shutdown", daemon=True).start()
        return done.wait(timeout_s or None)


def model_attributes(model: str, backend_kind: str, member: str, role: str,
                     partner: str) -> Attributes:
    """The attributes a paired call's model span starts with."""
    provider = PROVIDERS.get(backend_kind, backend_kind)
    return {"gen_ai.operation.name": "chat", "gen_ai.request.model": model,
            "gen_ai.provider.name": provider, "gen_ai.system": provider,
            "diffroute.member": member, "diffroute.role": role, "diffroute.partner": partner}


def set_usage(span: Span, usage: Usage | None, response_model: object = None) -> None:
    """The token counts and the model that answered (as the upstream named it), if known."""
    if usage is not None:
        span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
    if isinstance(response_model, str) and response_model:
        span.set_attribute("gen_ai.response.model", response_model)


def outcome_attributes(json_outcome: Mapping[str, Any]) -> Attributes:
    """The request span's attributes of a paired call, from its ``diffroute`` object."""
    out: Attributes = {}
    for key in ("role", "primary", "partner", "answered_by", "agreement", "flagged",
                "live_diff_id"):
        value = json_outcome.get(key)
        if value is not None:
            out[f"diffroute.{key}"] = value
    return out
