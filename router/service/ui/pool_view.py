"""What ``GET /v1/pool`` shows: every model with its profile summary, and the pool's pairwise
similarity per domain — the same numbers the pairing policy reads.

It is computed the way :func:`router.pairing.decider.build_decider` computes the policy's
tables (same profiles, suite, bootstrap and seed), so a value on the dashboard is the value
the policy decided on. Blocking (it reads profiles and bootstraps the matrix): call it from a
worker thread, once per profile version (:class:`PoolViewCache`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from router.config import Settings
from router.pairing.decider import policy_matrix
from router.pairing.graph import build_graph
from router.profiling.sources import find_profiles, open_suite, policy_query


def pool_view(settings: Settings) -> dict[str, Any]:
    """Models (family, backend, profile summary) and the per-domain similarity matrix."""
    config = settings.policy
    suite = open_suite(config.suite)
    query = policy_query(settings)
    found = find_profiles(settings, [m.name for m in settings.models], suite, query)
    profiles = [f.profile for f in found.values() if f is not None]
    matrix = policy_matrix(settings, profiles, suite)
    families = {m.name: m.family_name for m in settings.models}
    graph = build_graph(matrix, families, [n for n, f in found.items() if f is None])
    models = []
    for model in settings.models:
        f = found[model.name]
        profile = None if f is None else {
            **f.profile.summary(suite), "shipped": f.shipped, "version": f.profile.version,
            "samples": f.profile.decoding.samples,
            # what the profile holds (an unfinished build: fewer than the samples asked)
            "samples_held": min((len(r.values) for r in f.profile.records.values()), default=0),
            "observed_at": f.observed_at}
        models.append({"name": model.name, "family": model.family_name,
                       "backend": model.backend.kind, "cost_per_1k_tokens":
                       model.cost_per_1k_tokens, "profile": profile})
    return {"object": "pool", "suite": suite.name, "suite_version": suite.version,
            "models": models, "similarity": matrix.to_json(),
            "families": graph.families(), "communities": graph.communities()}


class PoolViewCache:
    """The pool view of the current profile version, computed once in a worker thread."""

    def __init__(self, compute: Callable[[], dict[str, Any]]) -> None:
        self._compute = compute
        self._version: str | None = None
        self._view: dict[str, Any] | None = None
        self._lock = asyncio.Lock()

    async def get(self, version: str) -> dict[str, Any]:
        async with self._lock:  # one computation at a time; the others wait for its result
            if self._view is None or self._version != version:
                self._view = await asyncio.to_thread(self._compute)
                self._version = version
            return self._view
