"""Where spans go (``router.telemetry.trace_target``): settings first, then the standard
variables; off when neither names an endpoint or the SDK is disabled."""

from __future__ import annotations

import pytest

from router.config import TelemetrySettings
from router.errors import StartupError
from router.telemetry import trace_target, traces_url


def test_off_unless_an_endpoint_is_named() -> None:
    assert trace_target(TelemetrySettings(), {}) is None
    assert trace_target(TelemetrySettings(), {"OTEL_EXPORTER_OTLP_HEADERS": "a=b"}) is None


def test_the_settings_endpoint_gets_the_traces_path_once() -> None:
    target = trace_target(TelemetrySettings(otlp_endpoint="http://c:4318/"), {})
    assert target is not None and target.endpoint == "http://c:4318/v1/traces"
    assert traces_url("http://c:4318/v1/traces") == "http://c:4318/v1/traces"


@pytest.mark.parametrize("variable", ["OTEL_EXPORTER_OTLP_ENDPOINT",
                                      "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"])
def test_a_standard_variable_turns_it_on_and_the_exporter_reads_it(variable: str) -> None:
    target = trace_target(TelemetrySettings(), {variable: "http://c:4318"})
    assert target is not None and target.endpoint is None and target.source == variable


def test_sdk_disabled_wins() -> None:
    settings = TelemetrySettings(otlp_endpoint="http://c:4318")
    assert trace_target(settings, {"OTEL_SDK_DISABLED": "true"}) is None


def test_header_secrets_are_read_when_tracing_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = TelemetrySettings.model_validate(
        {"otlp_endpoint": "http://c:4318", "headers": {"Authorization": "env:OTLP_TOKEN_T"}})
    monkeypatch.delenv("OTLP_TOKEN_T", raising=False)
    with pytest.raises(StartupError, match=r"telemetry\.headers: Authorization "
                                           r"\(env:OTLP_TOKEN_T\) is not set"):
        trace_target(settings, {})
    monkeypatch.setenv("OTLP_TOKEN_T", "Bearer s3cret")
    target = trace_target(settings, {})
    assert target is not None and target.headers == {"Authorization": "Bearer s3cret"}


def test_a_shutdown_timeout_of_0_waits_for_the_last_export() -> None:
    """``server.shutdown_timeout: 0`` means no limit: the last spans were dropped at once
    (``Event.wait(0)``) with a ``tracing.shutdown_incomplete`` warning, even with a collector
    that answers in a moment."""
    import time

    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from router.telemetry import TracePlan, open_tracing

    class Slow(SpanExporter):
        def __init__(self) -> None:
            self.exported = 0

        def export(self, spans: object) -> SpanExportResult:
            time.sleep(0.3)
            self.exported += 1
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            time.sleep(0.3)

    exporter = Slow()
    tracing = open_tracing(TracePlan(TelemetrySettings(), None, exporter), log_prompts=False)
    assert tracing.shutdown(0) is True
    assert tracing.shutdown(None) is True


def test_a_collector_away_is_one_warning_not_four_lines_a_batch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The exporter logged each retry and each failed batch (four lines every 5 s, as long
    as the collector was away): a run of failures now, as the service's other loops log."""
    import logging

    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
    from structlog.testing import capture_logs

    from router import telemetry
    from router.logging import FailureRun

    monkeypatch.setattr(telemetry, "_export_failures", FailureRun("tracing.export_failed"))
    up = False

    class Collector(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            if up:
                return SpanExportResult.SUCCESS
            log = logging.getLogger(telemetry.EXPORTER_LOGGER)
            log.warning("Transient error ... retrying in 1.0s.")
            log.error("Failed to export spans batch due to timeout, max retries or shutdown.")
            return SpanExportResult.FAILURE

    exporter = telemetry._reported(Collector())
    with capture_logs() as logs:
        for _ in range(5):
            assert exporter.export([]) is SpanExportResult.FAILURE
        up = True
        assert exporter.export([]) is SpanExportResult.SUCCESS
    assert [e["event"] for e in logs] == ["tracing.export_failed", "tracing.export_recovered"]
    assert logs[0]["error"].startswith("Failed to export spans batch")  # why: the last line
    assert logs[1]["failures"] == 5  # batches


@pytest.mark.parametrize("variable", ["OTEL_EXPORTER_OTLP_HEADERS",
                                      "OTEL_EXPORTER_OTLP_TRACES_HEADERS"])
def test_a_malformed_header_variable_is_refused_without_its_value(variable: str) -> None:
    """``Authorization:Bearer …`` (a colon for the ``=``) was dropped by the exporter with a
    warning quoting the whole entry: the token in the logs, and exports without it."""
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
               variable: "x-tenant=a, Authorization:Bearer-s3cret"}
    with pytest.raises(StartupError, match=f"{variable}: entry 2 is not name=value") as caught:
        trace_target(TelemetrySettings(), environ)
    assert "s3cret" not in str(caught.value)
    with pytest.raises(StartupError, match=f"{variable}: entry 2"):
        trace_target(TelemetrySettings(otlp_endpoint="http://c:4318"),
                     {variable: environ[variable]})
    assert trace_target(TelemetrySettings(), {variable: environ[variable]}) is None  # off: unread
    environ[variable] = "x-tenant=a,Authorization=Bearer s3cret,api-key=a%20b"
    assert trace_target(TelemetrySettings(), environ) is not None


def test_invalid_batching_variables_stop_the_start_with_one_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``OTEL_BSP_MAX_QUEUE_SIZE=100`` (below the default batch of 512) was the SDK's bare
    ``ValueError``: exit status 1, as an internal error, naming no variable."""
    from router.telemetry import TracePlan, open_tracing

    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "100")
    settings = TelemetrySettings(otlp_endpoint="http://127.0.0.1:9")
    plan = TracePlan(settings, trace_target(settings, {}), None)
    with pytest.raises(StartupError, match=r"OTEL_BSP_\* variables\) are invalid"):
        open_tracing(plan, log_prompts=False)


def test_contents_in_spans_are_cut_so_one_big_prompt_does_not_drop_a_batch() -> None:
    """With ``log_prompts`` a 34 MB prompt (``max_body_bytes`` raised) made two 34 MB model
    spans: the exporter dropped the whole batch, other requests' spans with it."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from router.telemetry import CONTENT_LIMIT, TracePlan, open_tracing

    exporter = InMemorySpanExporter()
    tracing = open_tracing(TracePlan(TelemetrySettings(), None, exporter), log_prompts=True)
    with tracing.span("chat big", {}) as span:
        tracing.add_contents(span, [{"role": "user", "content": "w " * 1_000_000}], ["ok"])
    with tracing.span("chat small", {}) as span:
        tracing.add_contents(span, [{"role": "user", "content": "hi"}], ["ok"])
    big, small = exporter.get_finished_spans()
    assert big.attributes is not None and small.attributes is not None
    assert len(str(big.attributes["gen_ai.input.messages"])) < CONTENT_LIMIT + 100
    assert big.attributes["diffroute.contents_truncated"] is True
    assert small.attributes["gen_ai.input.messages"] == '[{"role": "user", "content": "hi"}]'
    assert "diffroute.contents_truncated" not in small.attributes
    tracing.shutdown(1)


def test_the_standard_service_name_variable_names_the_service_unless_the_settings_do(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``OTEL_SERVICE_NAME=gw-eu`` was overridden by the setting's default: every instance
    was ``diffroute`` in the collector, whatever the deployment said."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from router.telemetry import TracePlan, open_tracing

    def name(settings: TelemetrySettings) -> object:
        plan = TracePlan(settings, None, InMemorySpanExporter())
        return open_tracing(plan, log_prompts=False).provider.resource.attributes["service.name"]

    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    assert name(TelemetrySettings()) == "diffroute"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gw-eu")
    assert name(TelemetrySettings()) == "gw-eu"
    assert name(TelemetrySettings(service_name="mine")) == "mine"
