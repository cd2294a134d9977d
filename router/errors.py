"""The exceptions diffroute raises, and the HTTP status each maps to.

::

    DiffrouteError
    ├── ConfigError(problems)                 a settings file or value is invalid      (CLI exit 2)
    ├── StartupError                          a resource cannot be opened        503 (CLI exit 2)
    ├── StorageError                          a write to the data dir failed            503 / 507
    ├── UnknownModelError(model)              no such model in the pool          404 (CLI exit 2)
    ├── DecisionNotFoundError(decision_id)    unknown, expired or reported decision id   404
    ├── BadRequestError(message, param)       a request is malformed                    400
    │   └── UnknownDomainError                no such domain in the suite        400 (CLI exit 2)
    ├── AuthError                             missing or wrong API key                  401
    │   └── ForbiddenError                    a client key on an admin route            403
    ├── NoPairError(primary, role, reason)    the policy found no partner               409
    ├── ModelUnavailableError(model, reason)  weights missing, key missing, not loaded   503
    │   ├── CircuitOpenError(retry_after)      the model's circuit breaker is open          503
    │   └── ModelBusyError(retry_after)        the model's queue is full (load shed)        429
    └── UpstreamError(model, status, body)    a backend call failed                     502
        ├── UpstreamRequestError(param, code) the upstream refused the request itself
                                              (400, 413, 422: passed on as it is)   400/413/422
        ├── UpstreamTimeoutError              connect/read/total timeout, or queued     504
                                              past ``timeouts.total``
        ├── UpstreamRateLimitError(retry_after)  429 from upstream                      502
        ├── UpstreamConnectionError           refused, reset, DNS                       502
        └── UpstreamProtocolError             malformed or truncated response           502

Backends translate aiohttp and llama.cpp errors into these where they catch them; one
middleware of the service maps them to the OpenAI error envelope.
"""

from __future__ import annotations

import errno


class DiffrouteError(Exception):
    """Base of every error diffroute raises on purpose."""

    status: int = 500
    error_type: str = "server_error"
    code: str | None = None
    param: str | None = None

    @property
    def retryable(self) -> bool | None:
        """Whether the same request may succeed if sent again (``None``: no opinion, the
        status says it). ``False`` on a status that SDKs retry by default (409, 5xx) is sent as
        ``x-should-retry: false``, so that a client does not repeat a request bound to fail."""
        return None


class ConfigError(DiffrouteError):
    """Settings are invalid; ``problems`` holds one readable line per problem."""

    status = 400
    error_type = "invalid_request_error"
    code = "invalid_config"

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(problems))


class StartupError(DiffrouteError):
    """The service cannot open a resource it needs (a store file, the data dir); in a
    request (a route that opens the observation store while the database is away) a 503."""

    status = 503
    error_type = "server_error"
    code = "startup_failed"


class StorageError(DiffrouteError):
    """A write to the data dir failed; 507 when the disk is full, else 503."""

    status = 503
    code = "storage_unavailable"

    def __init__(self, what: str, exc: BaseException) -> None:
        full = (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or \
            "full" in str(exc).lower()
        if full:
            self.status = 507
            self.code = "insufficient_storage"
        super().__init__(f"{what} failed: {exc}")


class UnknownModelError(DiffrouteError):
    status = 404
    error_type = "invalid_request_error"
    code = "model_not_found"
    param = "model"

    def __init__(self, model: str, known: list[str] | None = None, *,
                 param: str = "model") -> None:
        self.model = model
        self.param = param
        hint = f" (known: {', '.join(known)})" if known else ""
        shown = model if len(model) <= 100 else f"{model[:100]}…"  # a name can be any size
        super().__init__(f"model '{shown}' is not in the pool{hint}")


class DecisionNotFoundError(DiffrouteError):
    """A reported decision id is not (or no longer) known."""

    status = 404
    error_type = "invalid_request_error"
    code = "decision_not_found"
    param = "decision_id"

    def __init__(self, decision_id: str, ttl_s: float) -> None:
        self.decision_id = decision_id
        super().__init__(
            f"decision '{decision_id}' is unknown, expired or already reported (decisions of "
            f"POST /v1/route are kept {ttl_s:g} s in this instance's memory, and reported once)")


class BadRequestError(DiffrouteError):
    status = 400
    error_type = "invalid_request_error"

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        self.param = param
        self.code = code
        super().__init__(message)


class UnknownDomainError(BadRequestError):
    """A domain the suite (or the loaded profiles) does not have; on the CLI a usage error."""


class AuthError(DiffrouteError):
    status = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"

    def __init__(self, message: str = "missing or invalid API key") -> None:
        super().__init__(message)


class ForbiddenError(AuthError):
    """A valid key that may not do this (a client key on an admin route), or an admin route
    on a service with no admin key configured (``code``: ``admin_key_not_configured``)."""

    status = 403
    code = "forbidden"

    def __init__(self, message: str, code: str = "forbidden") -> None:
        super().__init__(message)
        self.code = code


class NoPairError(DiffrouteError):
    status = 409
    error_type = "invalid_request_error"
    code = "no_pair"

    transient = False
    """Whether an open circuit breaker took candidates out: they are back once it half-opens."""

    def __init__(self, primary: str, role: str, reason: str) -> None:
        self.primary = primary
        self.role = role
        self.reason = reason
        super().__init__(f"no {role} partner for '{primary}': {reason}")

    @property
    def retryable(self) -> bool | None:
        # the pool, its profiles and the request's options decide: the same request finds
        # no partner again (the openai SDK would retry a 409 twice, as a lock timeout) —
        # unless a partner's circuit is open, which closes again
        return None if self.transient else False


class ModelUnavailableError(DiffrouteError):
    status = 503
    error_type = "server_error"
    code = "model_unavailable"

    def __init__(self, model: str, reason: str) -> None:
        self.model = model
        self.reason = reason
        super().__init__(f"model '{model}' is unavailable: {reason}")


class CircuitOpenError(ModelUnavailableError):
    """The model failed repeatedly and its circuit breaker is open: calls fail fast until a
    half-open probe succeeds (``retry_after``: seconds until the next probe may run)."""

    code = "circuit_open"

    def __init__(self, model: str, reason: str, retry_after: float) -> None:
        super().__init__(model, f"circuit open: {reason}")
        self.retry_after = retry_after


class ModelBusyError(ModelUnavailableError):
    """Every slot of the model is taken and its queue is full: the call is shed at once
    rather than waiting (``retry_after``: a suggestion, in seconds)."""

    status = 429
    error_type = "rate_limit_error"
    code = "model_busy"

    def __init__(self, model: str, reason: str, retry_after: float) -> None:
        super().__init__(model, f"busy: {reason}")
        self.retry_after = retry_after


class UpstreamError(DiffrouteError):
    """A call to a model's backend failed; carries the model, HTTP status and body excerpt."""

    status = 502
    error_type = "upstream_error"
    code = "upstream_error"
    retry_after: float | None = None
    """Seconds the upstream asked to wait (its ``Retry-After`` on a 429 or a 5xx), if any."""

    def __init__(self, model: str, message: str, status: int | None = None, body: str = "") -> None:
        self.model = model
        self.upstream_status = status
        self.body = body[:2000]
        shown = f" (status {status})" if status is not None else ""
        super().__init__(f"upstream model '{model}'{shown}: {message}")

    @property
    def transient(self) -> bool:
        """Whether retrying later may succeed."""
        return self.upstream_status is None or self.upstream_status >= 500

    @property
    def retryable(self) -> bool | None:
        # the upstream refused diffroute's configured key or model (401, 403, 404…): a 502
        # that no retry of the client mends
        status = self.upstream_status
        if status is not None and 400 <= status < 500 and status not in (408, 409, 429):
            return False
        return None


class UpstreamRequestError(UpstreamError):
    """The upstream refused the client's request itself (400, 413, 422: an invalid tool
    schema, a parameter the model does not take): the client's error, with the upstream's
    status, ``param`` and ``code`` — not a 502 that SDKs retry as a server failure. (401, 403
    and 404 stay 502: they are about diffroute's configured key or model, not the request.)"""

    error_type = "invalid_request_error"
    code = "upstream_refused_request"

    def __init__(self, model: str, message: str, status: int, body: str = "",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(model, message, status, body)
        self.status = status
        self.param = param
        self.code = code or type(self).code

    @property
    def transient(self) -> bool:
        return False


class UpstreamTimeoutError(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamRateLimitError(UpstreamError):
    code = "upstream_rate_limited"

    def __init__(
        self, model: str, message: str, status: int | None = 429, body: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(model, message, status, body)
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        return True


class UpstreamConnectionError(UpstreamError):
    code = "upstream_unreachable"


class UpstreamProtocolError(UpstreamError):
    code = "upstream_bad_response"

    @property
    def transient(self) -> bool:
        return False
