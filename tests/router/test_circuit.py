"""The circuit breaker alone, on a fake clock: opening, the window, half-open probes."""

from __future__ import annotations

import pytest

from router.circuit import CircuitBreaker, counts_as_failure, failure_kind
from router.config import Circuit
from router.errors import (
    BadRequestError,
    CircuitOpenError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRateLimitError,
    UpstreamTimeoutError,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, failures: int = 3, window_s: float = 10,
            open_s: float = 30) -> CircuitBreaker:
    return CircuitBreaker("m", Circuit(failures=failures, window_s=window_s, open_s=open_s),
                          clock)


def test_opens_after_failures_in_a_row_and_fails_fast_until_open_s_passed() -> None:
    clock = Clock()
    circuit = breaker(clock)
    for _ in range(2):
        assert circuit.admit() is False
        circuit.failed("timed out")
    assert circuit.snapshot().state == "closed" and circuit.snapshot().failures == 2
    circuit.failed("HTTP 503")
    assert circuit.blocked() and circuit.snapshot().state == "open"
    clock.now += 12
    with pytest.raises(CircuitOpenError) as info:
        circuit.admit()
    assert info.value.status == 503 and info.value.retry_after == pytest.approx(18)
    assert "3 failures in a row (last: HTTP 503)" in str(info.value)
    snap = circuit.snapshot()
    assert (snap.state, snap.retry_after, snap.last_error) == ("open", 18, "HTTP 503")
    assert failure_kind(UpstreamError("m", "echo of a prompt", 503)) == \
        "upstream_error (status 503)"
    assert failure_kind(UpstreamTimeoutError("m", "timed out")) == "upstream_timeout"


def test_a_success_or_the_window_resets_the_count() -> None:
    clock = Clock()
    circuit = breaker(clock)
    circuit.failed("x")
    circuit.failed("x")
    circuit.succeeded()
    circuit.failed("x")
    circuit.failed("x")
    assert not circuit.blocked()
    clock.now += 11  # the first two are out of the 10 s window now
    circuit.failed("x")
    assert not circuit.blocked() and circuit.snapshot().failures == 1


def test_half_open_lets_one_probe_through_and_its_outcome_decides() -> None:
    clock = Clock()
    circuit = breaker(clock, failures=1, open_s=5)
    circuit.failed("down")
    clock.now += 5
    assert circuit.snapshot().state == "half-open" and not circuit.blocked()
    assert circuit.admit() is True  # the probe
    assert circuit.blocked()
    with pytest.raises(CircuitOpenError):  # one probe at a time
        circuit.admit()
    circuit.failed("still down")  # the probe failed: open for another open_s
    assert circuit.snapshot().state == "open" and circuit.snapshot().retry_after == 5
    clock.now += 5
    assert circuit.admit() is True
    circuit.abandoned(probe=True)  # the probe's client went away: the next call probes
    assert circuit.admit() is True
    circuit.succeeded()
    assert circuit.snapshot().state == "closed" and circuit.admit() is False


def test_what_counts_as_the_models_failure() -> None:
    assert counts_as_failure(UpstreamTimeoutError("m", "timed out"))
    assert counts_as_failure(UpstreamError("m", "boom", 502))
    assert counts_as_failure(UpstreamError("m", "refused"))  # no status: connection
    assert counts_as_failure(UpstreamRateLimitError("m", "slow down"))
    assert counts_as_failure(UpstreamProtocolError("m", "bad JSON", 200))
    assert not counts_as_failure(UpstreamError("m", "bad request", 400))
    assert not counts_as_failure(BadRequestError("n must be 1"))
    assert not counts_as_failure(CircuitOpenError("m", "open", 1.0))
