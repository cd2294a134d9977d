"""Structured logs: structlog, JSON in production, OpenTelemetry attribute names where they fit.

:func:`configure_logging` is called once by the process entry point (``diffroute serve``), never
at import time; tests use ``structlog.testing.capture_logs`` instead. Events:

* ``http.request`` — the access log: ``request_id``, ``http.request.method``, ``http.route``,
  ``http.response.status_code``, ``duration_ms`` (OTel HTTP semantic conventions);
* ``gen_ai.chat`` — one model call: ``gen_ai.request.model``, ``gen_ai.usage.input_tokens``,
  ``gen_ai.usage.output_tokens``… (OTel GenAI conventions); message bodies only with
  ``server.log_prompts``.

Values under secret-looking keys are replaced by ``[redacted]`` whatever logs them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping, Sequence
from typing import Any, Literal

import structlog

from profiles.protocol import SampleRequest, Usage

SECRET_KEYS = frozenset({"authorization", "api_key", "admin_key", "api_keys", "password",
                         "token", "secret", "x-api-key"})
REDACTED = "[redacted]"


def redact_secrets(_logger: object, _method: str,
                   event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: never let a secret-named field reach the output."""
    for key in event:
        if key.lower() in SECRET_KEYS:
            event[key] = REDACTED
    return event


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]


def configure_logging(fmt: Literal["json", "console"] = "json", level: str = "INFO") -> None:
    """Route structlog and stdlib logging (aiohttp's own) to stderr as JSON or console lines."""
    renderer: Any = (structlog.processors.JSONRenderer() if fmt == "json"
                     else structlog.dev.ConsoleRenderer())
    structlog.configure(
        processors=[*_shared_processors(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # our middleware writes the access log; aiohttp's own would duplicate it
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def log_generation(logger: Any, model: str, request: SampleRequest, usage: Usage | None,
                   duration_s: float, *, texts: Sequence[str], log_prompts: bool,
                   role: str | None = None, request_id: str = "") -> None:
    """One ``gen_ai.chat`` event for a model call (prompts and answers only if allowed)."""
    fields: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": model,
        "gen_ai.request.temperature": request.temperature,
        "gen_ai.request.max_tokens": request.max_tokens,
        "duration_ms": round(duration_s * 1000, 3),
    }
    if usage is not None:
        fields["gen_ai.usage.input_tokens"] = usage.prompt_tokens
        fields["gen_ai.usage.output_tokens"] = usage.completion_tokens
    if role is not None:
        fields["diffroute.role"] = role
    if request_id:
        fields["request_id"] = request_id
    if log_prompts:
        fields["gen_ai.input.messages"] = [dict(m) for m in request.messages]
        fields["gen_ai.output.messages"] = list(texts)
    logger.info("gen_ai.chat", **fields)
