"""Every test talks to loopback servers only: a developer's proxy variables must not send
those calls elsewhere (the upstream client honours them; ``tests/router/backends/test_http1.py``
sets its own), nor their OTLP variables spans."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import pytest
import structlog

# the two storage engines, for every test that asks for ``store`` or ``engine_settings``
from tests.stores import engine_settings, store  # noqa: F401

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
TRACE_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                   "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                   "OTEL_SDK_DISABLED")


@pytest.fixture(autouse=True)
def no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture(autouse=True)
def no_trace_export_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's ``OTEL_EXPORTER_OTLP_*`` must not turn tracing on (and send spans away)
    in tests that do not ask for it (``router.telemetry``)."""
    for name in TRACE_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def fresh_logging() -> Iterator[None]:
    """A test that runs the CLI in process configures logging for the process: undo it, so
    that the next test's ``capture_logs`` sees every level again."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    if structlog.is_configured():
        factory = structlog.get_config().get("logger_factory")
        close = getattr(factory, "close", None)
        if close is not None:
            close()
        structlog.reset_defaults()
        _uncache_loggers()
    root.handlers[:] = handlers
    root.setLevel(level)


def _uncache_loggers() -> None:
    """The CLI configures structlog with ``cache_logger_on_first_use``: a module's logger used
    under it keeps that configuration after a reset, and a later test's ``capture_logs`` saw
    nothing from it (the access-log test failed after the CLI's). Undo the caching."""
    for name, module in list(sys.modules.items()):
        if not name.startswith(("router.", "profiles.")):
            continue
        for value in list(vars(module).values()):
            if isinstance(value, structlog._config.BoundLoggerLazyProxy):
                value.__dict__.pop("bind", None)
