"""Live diffs and monitoring: durable records, disagreement rates, metrics and drift.

* :mod:`router.live.sink` — the durable :class:`~router.paired.record.LiveDiffSink` and
  :func:`open_live_sink`, the service's sink;
* :mod:`router.live.rates` — Wilson intervals and the rows of the disagreement stats;
* :mod:`router.live.drift` — the profile-blended agreement and the CUSUM drift test;
* :mod:`router.live.baseline` — what the profiles predict (rates, noise floors);
* :mod:`router.live.metrics` — the Prometheus registry of one app

(their HTTP routes are in :mod:`router.service.live_routes`; what they persist goes through
:mod:`router.store`).
"""
