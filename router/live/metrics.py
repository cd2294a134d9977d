"""Prometheus metrics of one app: a registry per app (never the global default registry).

Names follow the Prometheus conventions (``_total`` counters, ``_seconds`` histograms):

* ``diffroute_paired_comparisons_total{primary,partner,role}`` — every comparison;
* ``diffroute_disagreements_total{primary,partner,role}`` — the flagged ones;
* ``diffroute_http_request_duration_seconds{method,route,status}`` — request latency;
* ``diffroute_pairing_overhead_seconds{stage}`` — time a paired call spends on the response
  path beyond the model calls: ``compare`` (the comparison) and ``record`` (the durable commit);
* ``diffroute_upstream_errors_total{model,error}`` — backend failures that reached a client;
* ``diffroute_live_record_errors_total`` — flagged comparisons whose live diff was not stored;
* ``diffroute_drift_state{primary,partner,domain}`` — 0 learning, 1 ok, 2 drifted;
* ``diffroute_drift_statistic{primary,partner,domain}`` — the CUSUM statistic;
* ``diffroute_drift_events_total{primary,partner,domain,direction}``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from router.live.drift import DriftEvent, DriftState
from router.paired.compare import Comparer, Comparison

PAIR = ("primary", "partner", "role")
PAIR_DOMAIN = ("primary", "partner", "domain")
STATE_VALUE: dict[DriftState, int] = {"learning": 0, "ok": 1, "drifted": 2}
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 1.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class LiveMetrics:
    """The metrics of one service instance."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.comparisons = Counter("diffroute_paired_comparisons", "Comparisons of paired "
                                   "answers (agreements too).", PAIR, registry=r)
        self.disagreements = Counter("diffroute_disagreements", "Comparisons flagged as a "
                                     "disagreement beyond the noise floor.", PAIR, registry=r)
        self.request_seconds = Histogram("diffroute_http_request_duration_seconds",
                                         "HTTP request latency.", ("method", "route", "status"),
                                         registry=r)
        self._request_children: dict[tuple[str, str, int], Histogram] = {}
        self.overhead_seconds = Histogram("diffroute_pairing_overhead_seconds",
                                          "Response-path time of a paired call beyond the "
                                          "model calls.", ("stage",),
                                          buckets=OVERHEAD_BUCKETS, registry=r)
        self.record_errors = Counter("diffroute_live_record_errors", "Flagged comparisons "
                                     "whose live diff could not be stored.", registry=r)
        self.upstream_errors = Counter("diffroute_upstream_errors", "Backend failures that "
                                       "reached a client.", ("model", "error"), registry=r)
        self.drift_state = Gauge("diffroute_drift_state", "Drift state of a pair in a domain "
                                 "(0 learning, 1 ok, 2 drifted).", PAIR_DOMAIN, registry=r)
        self.drift_statistic = Gauge("diffroute_drift_statistic", "CUSUM statistic of a pair "
                                     "in a domain.", PAIR_DOMAIN, registry=r)
        self.drift_events = Counter("diffroute_drift_events", "Drift alarms.",
                                    (*PAIR_DOMAIN, "direction"), registry=r)
        # labelled children by label values, made on first use as ``labels()`` makes them
        # (it takes a lock and builds a tuple on every call; these are counted per comparison)
        self._comparison_children: dict[tuple[str, str, str], Counter] = {}
        self._disagreement_children: dict[tuple[str, str, str], Counter] = {}
        self._drift_children: dict[tuple[str, str, str], tuple[Gauge, Gauge]] = {}

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One HTTP request's latency (the labelled child is looked up once per label set:
        ``labels()`` takes a lock and builds a tuple, on every request otherwise)."""
        key = (method, route, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.request_seconds.labels(
                method, route, str(status))
        child.observe(seconds)

    def comparison(self, primary: str, partner: str, role: str, flagged: bool) -> None:
        key = (primary, partner, role)
        _child(self._comparison_children, self.comparisons, key).inc()
        if flagged:  # the disagreement series appears with the pair's first disagreement
            _child(self._disagreement_children, self.disagreements, key).inc()

    def drift(self, key: tuple[str, str, str], state: DriftState, statistic: float) -> None:
        gauges = self._drift_children.get(key)
        if gauges is None:
            gauges = self._drift_children[key] = (self.drift_state.labels(*key),
                                                  self.drift_statistic.labels(*key))
        gauges[0].set(STATE_VALUE[state])
        gauges[1].set(statistic)

    def drift_event(self, event: DriftEvent) -> None:
        self.drift_events.labels(event.primary, event.partner, event.domain,
                                 event.direction).inc()

    def exposition(self) -> bytes:
        """The text exposition format."""
        return bytes(generate_latest(self.registry))


def _child(children: dict[tuple[str, str, str], Counter], counter: Counter,
           key: tuple[str, str, str]) -> Counter:
    """``counter.labels(*key)``, looked up once per label set."""
    child = children.get(key)
    if child is None:
        child = children[key] = counter.labels(*key)
    return child


class TimedComparer:
    """A comparer timed into ``diffroute_pairing_overhead_seconds{stage="compare"}``."""

    def __init__(self, inner: Comparer, metrics: LiveMetrics) -> None:
        self.inner = inner
        self._timer = metrics.overhead_seconds.labels("compare")

    def __call__(self, primary_text: str, partner_text: str, domains: Sequence[str], *,
                 pair: tuple[str, str] | None = None) -> Comparison:
        started = time.perf_counter()
        try:
            return self.inner(primary_text, partner_text, domains, pair=pair)
        finally:
            self._timer.observe(time.perf_counter() - started)
