"""Request latencies reach the histogram in batches, and at every scrape."""

from __future__ import annotations

from router.live.metrics import REQUEST_BATCH, LiveMetrics


def count(metrics: LiveMetrics, status: str) -> float | None:
    return metrics.registry.get_sample_value(
        "diffroute_http_request_duration_seconds_count",
        {"method": "POST", "route": "/v1/route", "status": status})


def test_request_latencies_are_batched_and_flushed_by_a_scrape() -> None:
    metrics = LiveMetrics()
    for _ in range(REQUEST_BATCH - 1):
        metrics.request("POST", "/v1/route", 200, 0.001)
    assert count(metrics, "200") is None  # pending
    metrics.request("POST", "/v1/route", 200, 0.002)  # the batch is full: added
    assert count(metrics, "200") == REQUEST_BATCH
    metrics.request("POST", "/v1/route", 400, 0.5)
    assert b'status="400"} 1.0' in metrics.exposition()
    assert count(metrics, "400") == 1
