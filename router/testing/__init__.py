"""Helpers for tests and benchmarks (not the service's API): simulated pools with a known
ground truth (:mod:`router.testing.simulate`) and the real-model diff check
(:mod:`router.testing.realcheck`)."""
