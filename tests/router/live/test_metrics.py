"""Request latencies: one histogram series per method, route and status."""

from __future__ import annotations

from router.live.metrics import LiveMetrics


def count(metrics: LiveMetrics, status: str) -> float | None:
    return metrics.registry.get_sample_value(
        "diffroute_http_request_duration_seconds_count",
        {"method": "POST", "route": "/v1/route", "status": status})


def test_request_latencies_are_counted_per_status() -> None:
    metrics = LiveMetrics()
    for _ in range(3):
        metrics.request("POST", "/v1/route", 200, 0.001)
    metrics.request("POST", "/v1/route", 400, 0.5)
    assert (count(metrics, "200"), count(metrics, "400")) == (3, 1)
    assert b'status="400"} 1.0' in metrics.exposition()
