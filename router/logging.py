"""Structured logs: native structlog, JSON lines in production, OpenTelemetry attribute names.

:func:`configure_logging` is called once by the process entry point (``diffroute serve``), never
at import time; tests use ``structlog.testing.capture_logs`` instead. Events:

* ``http.request`` — the access log, one line per request: ``request_id``,
  ``http.request.method``, ``http.route``, ``http.response.status_code``, ``duration_ms`` (OTel
  HTTP semantic conventions). A plain proxy call folds its model call into this line
  (``gen_ai.request.model``, ``gen_ai.usage.*``… — :func:`generation_fields`);
* ``gen_ai.chat`` — one model call of a paired request, or of a plain one when
  ``server.log_prompts`` is on (message bodies are too big for the access line):
  ``gen_ai.request.model``, ``gen_ai.usage.input_tokens``… (OTel GenAI conventions); message
  bodies only with ``server.log_prompts``.

Values under secret-looking keys are replaced by ``[redacted]`` whatever logs them.

The pipeline is short because it runs for every request: filtering bound logger (levels below
the configured one cost a no-op call) → context vars → level → logger name → timestamp →
redaction → exception text → ``orjson`` → :class:`LogBuffer`.

Buffering trade-off: lines are written to stdout in batches — when 64 KiB are pending, every
``flush_interval_s`` (a daemon thread), at exit, and at once for warnings and errors. A
``kill -9`` can therefore lose up to one interval of info lines (access logs); nothing durable
depends on them: live diffs are committed to SQLite before their ids are returned.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from collections.abc import MutableMapping, Sequence
from typing import IO, Any, Literal

import orjson
import structlog

from profiles.protocol import SampleRequest, Usage
from router.errors import UpstreamError

SECRET_KEYS = frozenset({"authorization", "api_key", "admin_key", "api_keys", "password",
                         "token", "secret", "x-api-key"})
REDACTED = "[redacted]"
FLUSH_BYTES = 64 * 1024
"""Pending log bytes that trigger a write."""
FLUSH_INTERVAL_S = 0.5
"""The longest an info line waits in the buffer."""

EventDict = MutableMapping[str, Any]


_KNOWN_NAMES: set[str] = set()
_SECRET_NAMES: set[str] = set()
"""Field names already classified, all of them and the secret ones (they come from code: a
bounded set, capped anyway)."""


def redact_secrets(_logger: object, _method: str, event: EventDict) -> EventDict:
    """A structlog processor: never let a secret-named field reach the output."""
    names = event.keys()
    # membership tests in C that build no set: almost every line has only known, safe names
    if not _KNOWN_NAMES.issuperset(names):
        _classify(event)
    if not _SECRET_NAMES.isdisjoint(names):
        for key in names & _SECRET_NAMES:
            event[key] = REDACTED
    return event


def _classify(event: EventDict) -> None:
    """Remember the new names of ``event``; past the cap, redact a secret one at once."""
    for key in event.keys() - _KNOWN_NAMES:
        secret = key.lower() in SECRET_KEYS
        if len(_KNOWN_NAMES) < 4096:
            _KNOWN_NAMES.add(key)
            if secret:
                _SECRET_NAMES.add(key)
        elif secret:
            event[key] = REDACTED


class _Timestamper:
    """``timestamp``: ISO 8601 UTC with milliseconds; the second's prefix is formatted once."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, _logger: object, _method: str, event: EventDict) -> EventDict:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        event["timestamp"] = f"{self._prefix}.{int((now - second) * 1000):03d}Z"
        return event


def add_logger_name(logger: object, _method: str, event: EventDict) -> EventDict:
    """``logger``: the name given to ``structlog.get_logger(name)``."""
    name = getattr(logger, "name", None)
    if name:
        event["logger"] = name
    return event


class JsonLine:
    """The production pipeline in one processor (a structlog processor call costs about a
    microsecond, and this runs for every request): context vars → level → logger name →
    timestamp → redaction → exception text → ``orjson``. Same output as the chain of the
    separate processors (``tests/router/test_logging.py`` compares them)."""

    def __init__(self) -> None:
        self._timestamp = _Timestamper()

    def __call__(self, logger: object, method: str, event: EventDict) -> bytes:
        event = structlog.contextvars.merge_contextvars(logger, method, event)
        event["level"] = _LEVEL_OF.get(method, method)
        event = self._timestamp(logger, method, add_logger_name(logger, method, event))
        event = redact_secrets(logger, method, event)
        if "exc_info" in event:
            event = structlog.processors.format_exc_info(logger, method, event)
        return render_json(logger, method, event)


_LEVEL_OF = {"warn": "warning", "exception": "error"}
"""Method names whose level is another word (``structlog.processors.add_log_level``'s map)."""


def render_json(_logger: object, _method: str, event: EventDict) -> bytes:
    """One JSON line (bytes); values orjson cannot encode are written as their ``str``."""
    return orjson.dumps(event, default=str,
                        option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)


class LogBuffer:
    """Rendered lines collected in memory and written to a binary stream in batches."""

    def __init__(self, stream: IO[bytes], max_bytes: int = FLUSH_BYTES) -> None:
        self._stream = stream
        self._max_bytes = max_bytes
        self._parts: list[bytes] = []
        self._size = 0
        # lines come from the event loop and from worker threads; the flusher is another thread
        self._lock = threading.Lock()

    def write(self, line: bytes, *, urgent: bool = False) -> None:
        """Queue one line (a newline is added); write now if ``urgent`` or the buffer is full."""
        with self._lock:
            self._parts.append(line)
            self._parts.append(b"\n")
            self._size += len(line) + 1
            if urgent or self._size >= self._max_bytes:
                self._write_locked()

    def flush(self) -> None:
        """Write every pending line."""
        with self._lock:
            self._write_locked()

    def _write_locked(self) -> None:
        if not self._parts:
            return
        data = b"".join(self._parts)
        self._parts, self._size = [], 0
        try:
            self._stream.write(data)
            self._stream.flush()
        except (OSError, ValueError):  # a closed or broken stdout must not break requests
            pass


class BufferedLogger:
    """structlog's final logger: hands each rendered line to the shared :class:`LogBuffer`."""

    def __init__(self, buffer: LogBuffer, name: str | None) -> None:
        self.buffer = buffer
        self.name = name

    def msg(self, message: bytes | str) -> None:
        """An info-or-lower line: buffered."""
        self.buffer.write(message if isinstance(message, bytes) else message.encode())

    def urgent(self, message: bytes | str) -> None:
        """A warning-or-higher line: written at once, with whatever is pending before it."""
        self.buffer.write(message if isinstance(message, bytes) else message.encode(),
                          urgent=True)

    debug = info = log = msg
    warn = warning = error = err = critical = fatal = exception = urgent


class BufferedLoggerFactory:
    """The ``logger_factory``: one :class:`LogBuffer` per process, flushed by a daemon thread."""

    def __init__(self, stream: IO[bytes], flush_interval_s: float = FLUSH_INTERVAL_S) -> None:
        self.buffer = LogBuffer(stream)
        self._stop = threading.Event()
        self._interval = flush_interval_s
        self._flusher = threading.Thread(target=self._flush_loop, name="log-flusher",
                                         daemon=True)
        self._flusher.start()

    def __call__(self, *args: Any) -> BufferedLogger:
        name = args[0] if args and isinstance(args[0], str) else None
        return BufferedLogger(self.buffer, name)

    def _flush_loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.buffer.flush()

    def close(self) -> None:
        """Stop the flusher and write what is pending."""
        self._stop.set()
        self.buffer.flush()


class ForeignHandler(logging.Handler):
    """Stdlib records (aiohttp's, asyncio's) go through the same structlog pipeline.

    A malformed request aiohttp refuses before (or while) diffroute reads it — a request line
    or header it cannot parse, a body whose ``Content-Encoding`` does not decode — is the
    client's error: one warning line with the reason, not an error with a traceback that any
    client could make the log repeat. A library's warning that carries an exception (asyncpg's
    pool, failing to reconnect while the database is away) is one line too."""

    def emit(self, record: logging.LogRecord) -> None:
        fields: dict[str, Any] = {}
        level = record.levelno
        exc = record.exc_info[1] if record.exc_info else None
        if client_error(exc) or (exc is not None and level < logging.ERROR):
            # a client's malformed request, or a library's warning about a condition outside
            # (asyncpg's pool failing to reconnect while the database is away): one line
            level = min(level, logging.WARNING)
            fields["error"] = " ".join(str(exc).split())[:500]
            fields["error.type"] = type(exc).__name__
        elif record.exc_info:
            fields["exc_info"] = record.exc_info
        structlog.get_logger(record.name).log(level, record.getMessage(), **fields)


class FailureRun:
    """A background loop's repeated failure logged as a run, not a line per try: the first
    failure, then at most one line per ``every_s`` (with how many tries failed since), and
    one line when it works again (a database away for a minute wrote 120 warnings)."""

    def __init__(self, event: str, every_s: float = 60.0, logger: str = "diffroute") -> None:
        self._log = structlog.get_logger(logger)
        self.event = event
        self.every_s = every_s
        self.failures = 0
        self._since = 0.0
        self._told = 0.0

    def failed(self, exc: BaseException, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.failures += 1
        if self.failures == 1:
            self._since = self._told = now
            self._log.warning(self.event, error=str(exc))
        elif now - self._told >= self.every_s:
            self._told = now
            self._log.warning(self.event, error=str(exc), failures=self.failures,
                              failing_for_s=round(now - self._since, 1))

    def succeeded(self, now: float | None = None) -> None:
        if self.failures:
            now = time.monotonic() if now is None else now
            self._log.info(f"{self.event.rsplit('_', 1)[0]}_recovered", failures=self.failures,
                           failed_for_s=round(now - self._since, 1))
            self.failures = 0


def client_error(exc: BaseException | None) -> bool:
    """Whether aiohttp raised ``exc`` over a malformed request (a 4xx of its parser)."""
    if exc is None or "aiohttp" not in sys.modules:  # the CLI need not import aiohttp
        return False
    from aiohttp.http_exceptions import HttpProcessingError
    from aiohttp.web_protocol import RequestPayloadError

    if isinstance(exc, RequestPayloadError):
        return True
    return isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 0) < 500


def flush_logs() -> None:
    """Write pending log lines now (a no-op unless :func:`configure_logging` set buffering)."""
    factory = structlog.get_config().get("logger_factory")
    if isinstance(factory, BufferedLoggerFactory):
        factory.buffer.flush()


def processor_chain() -> list[Any]:
    """The steps :class:`JsonLine` fuses, as separate processors (for other renderers)."""
    return [structlog.contextvars.merge_contextvars, structlog.processors.add_log_level,
            add_logger_name, _Timestamper(), redact_secrets,
            structlog.processors.format_exc_info]


THIRD_PARTY = ("faiss", "llama-cpp-python", "numexpr", "urllib3", "filelock")
"""Libraries whose info lines (faiss's loader trying CPU builds, …) are noise to an operator:
shown only when the level is DEBUG."""


def resolve_format(fmt: Literal["auto", "json", "console"],
                   stream: IO[bytes]) -> Literal["json", "console"]:
    """``auto``: console lines for a person at a terminal, JSON lines for everything else."""
    if fmt != "auto":
        return fmt
    try:
        return "console" if stream.isatty() else "json"
    except (AttributeError, ValueError):  # a closed or file-less stream
        return "json"


def own_descriptor(stream: IO[bytes]) -> IO[bytes]:
    """``stream`` itself, or — when it writes to the process's descriptor 1 or 2 — a stream
    of our own on a duplicate of that descriptor (the same pipe, file or terminal).

    Libraries point descriptors 1 and 2 elsewhere for a while: llama-cpp-python silences a
    model load by ``dup2``-ing them to /dev/null, from whichever thread loads (a model's weights
    load in the background while the service starts). Every line flushed to descriptor 1 in
    that window was lost — ``service.started`` among them, in 3 of 8 starts of the embedded pool.
    A duplicate keeps pointing at the original file whatever happens to 1 and 2.
    """
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (a test's BytesIO)
        return stream
    if fd not in (1, 2):
        return stream
    try:
        stream.flush()
        return os.fdopen(os.dup(fd), "wb")
    except OSError:  # closed or broken: no duplicate to take, write to it as before
        return stream


def configure_logging(fmt: Literal["auto", "json", "console"] = "json", level: str = "INFO",
                      stream: IO[bytes] | None = None) -> None:
    """Native structlog to ``stream`` (default stdout) as JSON or console lines, buffered.

    Call once per process; calling again replaces the previous setup (its lines are flushed).
    """
    previous = structlog.get_config().get("logger_factory")
    if isinstance(previous, BufferedLoggerFactory):
        previous.close()
    out = stream if stream is not None else sys.stdout.buffer
    fmt = resolve_format(fmt, out)
    factory = BufferedLoggerFactory(own_descriptor(out))
    atexit.register(factory.close)
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    processors: list[Any] = [JsonLine()] if fmt == "json" else [
        *processor_chain(), structlog.dev.ConsoleRenderer(colors=False)]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    root.handlers[:] = [ForeignHandler()]
    root.setLevel(numeric_level)
    # our middleware writes the access log; aiohttp's own would duplicate it
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.DEBUG if numeric_level <= logging.DEBUG
                                         else logging.WARNING)


def generation_fields(model: str, temperature: float | None, max_tokens: int | None,
                      usage: Usage | None, duration_s: float, *,
                      role: str | None = None) -> dict[str, Any]:
    """The OTel GenAI fields of one model call (no message bodies); ``None`` settings were
    left to the model's defaults and are not logged."""
    fields: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.request.model": model}
    if temperature is not None:
        fields["gen_ai.request.temperature"] = temperature
    if max_tokens is not None:
        fields["gen_ai.request.max_tokens"] = max_tokens
    fields["gen_ai.duration_ms"] = round(duration_s * 1000, 3)
    if usage is not None:
        fields["gen_ai.usage.input_tokens"] = usage.prompt_tokens
        fields["gen_ai.usage.output_tokens"] = usage.completion_tokens
    if role is not None:
        fields["diffroute.role"] = role
    return fields


def log_generation(logger: Any, model: str, request: SampleRequest, usage: Usage | None,
                   duration_s: float, *, texts: Sequence[str], log_prompts: bool,
                   role: str | None = None, request_id: str = "") -> None:
    """One ``gen_ai.chat`` event for a model call (prompts and answers only if allowed)."""
    fields = generation_fields(model, request.temperature, request.max_tokens, usage,
                               duration_s, role=role)
    fields["duration_ms"] = fields.pop("gen_ai.duration_ms")
    if request_id:
        fields["request_id"] = request_id
    if log_prompts:
        fields["gen_ai.input.messages"] = [dict(m) for m in request.messages]
        fields["gen_ai.output.messages"] = list(texts)
    logger.info("gen_ai.chat", **fields)


def error_fields(exc: BaseException, *, log_prompts: bool) -> dict[str, Any]:
    """How a failed model call is logged. An upstream's error text may echo the prompt, so
    it is logged like prompts are — only with ``server.log_prompts``; else its kind, model
    and status."""
    if log_prompts or not isinstance(exc, UpstreamError):
        return {"error": str(exc)}
    fields: dict[str, Any] = {"error.type": type(exc).__name__, "gen_ai.request.model": exc.model}
    if exc.upstream_status is not None:
        fields["http.response.status_code"] = exc.upstream_status
    return fields
