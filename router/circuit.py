"""A model's circuit breaker: a model that keeps failing stops receiving calls for a while.

::

    closed ──(`failures` failures in a row, within `window_s`)──▶ open
    open ──(`open_s` later, the next call is let through: the probe)──▶ half-open
    half-open ──(the probe succeeds)──▶ closed
    half-open ──(the probe fails)──▶ open, for another `open_s`

While the circuit is open (or a probe is in flight), calls fail at once with
:class:`~router.errors.CircuitOpenError` (503, ``Retry-After``) instead of waiting for a
timeout, and the pairing policy does not choose the model (:meth:`CircuitBreaker.blocked`).
What counts as a failure is the model's fault (:func:`counts_as_failure`): timeouts, 5xx,
connection errors, malformed answers, the upstream's own 429 — not a client's bad request, a
call shed by the queue, or a call the client abandoned.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from router.backends.model_config import Circuit
from router.errors import CircuitOpenError, UpstreamError

CircuitState = Literal["closed", "open", "half-open"]
Clock = Callable[[], float]
"""Monotonic seconds (``time.monotonic``; tests pass a fake)."""

PROBE_RETRY_S = 1.0
"""``Retry-After`` while the half-open probe is in flight."""


def counts_as_failure(exc: BaseException) -> bool:
    """Whether a call's error says the model is failing (4xx other than 429: the request's)."""
    if not isinstance(exc, UpstreamError):
        return False
    status = exc.upstream_status
    return status is None or not 400 <= status < 500 or status == 429


def failure_kind(exc: UpstreamError) -> str:
    """A failure as the circuit shows it: its kind and status, never the upstream's text (it
    may echo a prompt, and circuits are shown to every client)."""
    status = "" if exc.upstream_status is None else f" (status {exc.upstream_status})"
    return f"{exc.code}{status}"


@dataclass(frozen=True, slots=True)
class CircuitSnapshot:
    """What ``/healthz``, ``/v1/models`` and ``diffroute models`` show of a circuit."""

    state: CircuitState
    failures: int = 0
    """Failures in a row (within the window) counted so far."""
    retry_after: float | None = None
    """Open: seconds until a probe may run."""
    last_error: str = ""
    """The kind of the last failure (:func:`failure_kind`)."""

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "failures": self.failures,
                "retry_after": None if self.retry_after is None else round(self.retry_after, 3),
                "last_error": self.last_error}


CLOSED = CircuitSnapshot("closed")
"""The snapshot of a model without a breaker (``circuit: null``)."""


class CircuitBreaker:
    """One model's breaker (see the module doc). Not thread-safe: the event loop's."""

    def __init__(self, model: str, config: Circuit, clock: Clock = time.monotonic) -> None:
        self.model = model
        self.config = config
        self._clock = clock
        self._failures: collections.deque[float] = collections.deque()
        self._opened_at: float | None = None
        self._probing = False
        self._last_error = ""

    def _reopens_in(self, now: float) -> float:
        assert self._opened_at is not None
        return self._opened_at + self.config.open_s - now

    def blocked(self) -> bool:
        """Whether a call now would be refused (the policy skips such a model)."""
        if self._opened_at is None:
            return False
        return self._probing or self._reopens_in(self._clock()) > 0

    def admit(self) -> bool:
        """Let a call through or raise :class:`CircuitOpenError`; ``True`` for the probe."""
        if self._opened_at is None:
            return False
        wait = self._reopens_in(self._clock())
        if wait > 0 or self._probing:
            retry = wait if wait > 0 else PROBE_RETRY_S
            raise CircuitOpenError(self.model, self._why(), retry)
        self._probing = True
        return True

    def _why(self) -> str:
        probe = "a probe call is in flight" if self._probing else (
            f"next probe in {max(0.0, self._reopens_in(self._clock())):.1f} s")
        return (f"{self.config.failures} failures in a row (last: {self._last_error}); "
                f"{probe}")

    def succeeded(self) -> None:
        self._failures.clear()
        self._opened_at = None
        self._probing = False

    def failed(self, error: str) -> None:
        now = self._clock()
        self._last_error = error
        if self._opened_at is not None:  # the probe (or a call admitted before opening)
            self._opened_at = now
            self._probing = False
            return
        failures = self._failures
        failures.append(now)
        while failures and failures[0] <= now - self.config.window_s:
            failures.popleft()
        if len(failures) >= self.config.failures:
            self._opened_at = now
            failures.clear()

    def abandoned(self, probe: bool) -> None:
        """A call ended without an outcome (cancelled, shed, timed out in the queue): if it
        was the probe, the next call probes instead."""
        if probe:
            self._probing = False

    def snapshot(self) -> CircuitSnapshot:
        if self._opened_at is None:
            return CircuitSnapshot("closed", len(self._failures), None, self._last_error)
        wait = self._reopens_in(self._clock())
        state: CircuitState = "open" if wait > 0 else "half-open"
        return CircuitSnapshot(state, self.config.failures, max(0.0, wait), self._last_error)
