"""Wires the pairing policy: profiles → matrix → graph → tables, suite → probe index.

:func:`build_decider` is the service's ``DeciderFactory``: it reads the pool's profiles (the data
dir's observation store first, then the profiles shipped for the embedded pool), computes the
similarity matrix and graph, indexes the suite's probes, and returns a :class:`PolicyDecider`.
All the heavy work happens here, once per profile version; a decision is a faiss search plus
the array arithmetic of :mod:`router.pairing.policy`.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import numpy as np
import structlog

from profiles.embed import Embedder, EmbeddingError, HashEmbedder
from profiles.matrix import ALL, DomainMatrix, PoolMatrix, pool_matrix
from profiles.profile import Profile, from_store
from profiles.store import model_key
from profiles.suite import Suite
from router.config import ModelConfig, PolicySettings, Settings
from router.errors import NoPairError
from router.pairing.decision import Decision, LiveSource, Role, RouteRequest
from router.pairing.graph import SimilarityGraph, build_graph
from router.pairing.index import ProbeIndex, elsewhere_texts
from router.pairing.pinned import Pairings
from router.pairing.policy import MEASURES, PolicyTables, assign_pool, decide, make_tables
from router.pairing.vectors import shipped_vectors
from router.pool import Pool
from router.profiling.sources import (
    ProfileQuery,
    StoredEmbedder,
    completed_by,
    embedder_for,
    open_suite,
    policy_query,
    shipped_profile,
    shipped_profiles_dir,
    task_embedder,
    unfinished,
)
from router.store import open_observations

__all__ = ["PolicyDecider", "build_decider", "policy_matrix", "tables_from_matrix"]

ProfileSource = Literal["built", "shipped", "none"]

TASK_CACHE_SIZE = 4096
"""Task texts whose domain weights a decider remembers (an embedding and a search each)."""
TASK_CACHE_MAX_CHARS = 4096
"""Longer task texts are not cached, so the cache stays within a few MiB."""

Blocked = Callable[[], frozenset[str]]
"""The models whose circuit breaker refuses calls now (``Pool.blocked``): never chosen as an
``auto`` primary or a partner."""


WORD = re.compile(r"\w")


def has_words(task: str) -> bool:
    """Whether a task has a letter or a digit: one without (a code fence, emoji, punctuation)
    fits no domain, and an embedder's nearest domain for it would be a confident guess."""
    return WORD.search(task) is not None


class PolicyDecider:
    """The service's :class:`~router.pairing.decision.Decider`: the policy over loaded profiles."""

    def __init__(self, tables: PolicyTables, graph: SimilarityGraph, pairings: Pairings,
                 config: PolicySettings, index: ProbeIndex | None = None,
                 embedder: Embedder | None = None, live: LiveSource | None = None,
                 blocked: Blocked | None = None) -> None:
        """``live``: where live outcomes shift the profiles' agreement (``router.live``);
        ``blocked``: the models to leave out of every choice for now (open circuits)."""
        self.tables = tables
        self.graph = graph
        self.pairings = pairings
        self.config = config
        self.index = index
        self.embedder = embedder
        # the index and embedder never change for this decider (a new one is built when the
        # profiles or pairings change), so a task text always gets the same weights
        self._weights: OrderedDict[str, tuple[tuple[str, float], ...]] = OrderedDict()
        self._decisions: OrderedDict[tuple[RequestKey, int], Decision] = OrderedDict()
        self._weights_lock = threading.Lock()  # decisions may run in worker threads
        self.live = live
        self.blocked = blocked
        self.sources: dict[str, ProfileSource] = {}
        """Where each model's profile came from (``built``, ``shipped`` or ``none``)."""

    def with_pairings(self, pairings: Pairings) -> PolicyDecider:
        """This policy over other pairings: the tables, graph and index are the pool's
        profiles', not the pairings', so a pin needs none of them rebuilt (a rebuild took
        1.5–2.3 s on the embedded pool, past the second a pin is promised to take)."""
        decider = PolicyDecider(self.tables, self.graph, pairings, self.config, self.index,
                                self.embedder, self.live, self.blocked)
        decider.sources = self.sources
        return decider

    @property
    def version(self) -> str:
        return self.tables.version

    @property
    def domains(self) -> frozenset[str]:
        return frozenset(self.tables.domain_index)

    @property
    def unprofiled(self) -> list[str]:
        return [m for m, ok in zip(self.tables.models, self.tables.profiled, strict=True)
                if not ok]

    def task_domains(self, request: RouteRequest) -> dict[str, float]:
        """The task's domain weights: the forced domain, else the index's vote, else all."""
        if request.domain:
            return {request.domain: 1.0}
        if not has_words(request.task) or self.index is None or self.embedder is None:
            return {ALL: 1.0}  # no words, no evidence of a domain
        with self._weights_lock:
            found = self._weights.get(request.task)
            if found is not None:
                self._weights.move_to_end(request.task)
                return dict(found)
        try:
            vector = self.embedder.embed([request.task])[0]
        except EmbeddingError as exc:  # a remote embedder away: no evidence of a domain, as
            structlog.get_logger("diffroute.pairing").warning(  # for a task without words
                "pairing.task_not_embedded", error=str(exc))
            return {ALL: 1.0}  # (not remembered: the next call asks the embedder again)
        weights = self._known(self._weights_of(vector))
        if len(request.task) > TASK_CACHE_MAX_CHARS:
            return weights
        with self._weights_lock:  # a tuple: the cached value cannot be changed by a caller
            self._weights[request.task] = tuple(weights.items())
            if len(self._weights) > TASK_CACHE_SIZE:
                self._weights.popitem(last=False)
        return weights

    def blocking(self, request: RouteRequest) -> bool:
        """Whether :meth:`decide` may be slow enough to belong in a worker thread.

        Only a task not seen before needs the embedder, and only a model embedder (MiniLM, a
        remote one) takes long; the hash embedder and the search take about a millisecond.
        """
        if request.domain or not has_words(request.task) or self.embedder is None:
            return False
        if isinstance(self.embedder, HashEmbedder):
            return False
        return request.task not in self._weights

    def _weights_of(self, vector: np.ndarray) -> dict[str, float]:
        assert self.index is not None
        if self.config.task_domains == "centroid":
            return self.index.classify(vector, self.config.domain_temperature)
        return self.index.domain_weights(vector, self.config.neighbours,
                                         self.config.temperature)

    def _known(self, weights: Mapping[str, float]) -> dict[str, float]:
        # a probe domain with no categorical probes has no similarity to average
        known = {d: w for d, w in weights.items() if d in self.tables.domain_index}
        return known or {ALL: 1.0}

    def decide(self, request: RouteRequest) -> Decision:
        """A decision (raises ``NoPairError`` when no partner qualifies).

        Decisions are pure functions of the request and this decider's tables and pairings,
        so the last :data:`TASK_CACHE_SIZE` are remembered (``Decision`` is immutable).
        """
        live = self.live
        request = self._without_blocked(request)
        request_key = _request_key(request)
        # live outcomes change decisions: the key carries the live epoch, so cached decisions
        # expire every EPOCH_COMPARISONS comparisons
        key = None if request_key is None else (request_key, live.epoch if live else -1)
        if key is not None:
            with self._weights_lock:
                found = self._decisions.get(key)
                if found is not None:
                    self._decisions.move_to_end(key)
                    return found
        shifts = None
        if live is not None and request.primary not in (None, "auto"):
            shifts = live.live_shifts(request.primary)
        try:
            decision = decide(self.tables, request, self.task_domains(request), self.pairings,
                              self.config, live=shifts)
        except NoPairError as exc:
            exc.transient = bool(request.blocked)  # (an open circuit's model comes back)
            raise
        if key is not None:
            with self._weights_lock:
                self._decisions[key] = decision
                if len(self._decisions) > TASK_CACHE_SIZE:
                    self._decisions.popitem(last=False)
        return decision

    def _without_blocked(self, request: RouteRequest) -> RouteRequest:
        """The request with the blocked models out of its candidates (a requested primary
        stays: the client named it, and its own call says whether it answers)."""
        blocked = self.blocked() if self.blocked is not None else frozenset()
        if not blocked:
            return request
        return dataclasses.replace(request, blocked=frozenset(blocked - {request.primary}))

    def decide_with_vector(self, request: RouteRequest, vector: np.ndarray) -> Decision:
        """As :meth:`decide` for an already embedded task (benchmarks, batch callers)."""
        weights = self._known(self._weights_of(vector))
        return decide(self.tables, request, weights, self.pairings, self.config)

    def assignment(self, role: Role, task: str = "", domain: str | None = None,
                   candidates: Sequence[str] | None = None) -> list[Decision]:
        """A partner for every model at once, by a matching on the graph."""
        weights = self.task_domains(RouteRequest(role=role, task=task, domain=domain))
        return assign_pool(self.tables, role, weights, self.pairings, self.config, candidates)


RequestKey = tuple[str, str | None, str, tuple[str, ...] | None, str | None, int,
                   tuple[str, ...]]
"""Every field of a :class:`RouteRequest`, in order, candidates as a tuple."""


def _request_key(request: RouteRequest) -> RequestKey | None:
    """The request as a cache key, or ``None`` for a long task. A plain tuple: it is hashed
    and compared in C, where the dataclass's ``__hash__`` and ``__eq__`` run in Python, twice
    per cached decision (the lookup, then ``move_to_end``)."""
    if len(request.task) > TASK_CACHE_MAX_CHARS:
        return None
    candidates = None if request.candidates is None else tuple(request.candidates)
    return (request.role, request.primary, request.task, candidates, request.domain,
            request.panel, tuple(sorted(request.blocked)))


def policy_matrix(settings: Settings, profiles: Sequence[Profile], suite: Suite) -> PoolMatrix:
    """The pool's similarity matrix as the policy reads it (the dashboard shows this one too:
    same bootstrap, same embedder for free-text answers, so the same intervals)."""
    if not profiles:
        return PoolMatrix(())
    return pool_matrix(profiles, suite, bootstrap=settings.policy.bootstrap,
                       embedder=embedder_for(settings.embedder))


def build_decider(settings: Settings, pool: Pool, pairings: Pairings,
                  live: LiveSource | None = None) -> PolicyDecider:
    """Load the pool's profiles and build the policy (blocking: seconds for a large suite)."""
    config = settings.policy
    suite = open_suite(config.suite)
    query = policy_query(settings)
    found = load_profiles(settings, pool, suite, query)
    profiles = [p for p, _ in found.values() if p is not None]
    unprofiled = [name for name, (p, _) in found.items() if p is None]
    matrix = policy_matrix(settings, profiles, suite)
    families = {m.name: m.family_name for m in settings.models}
    graph = build_graph(matrix, families, unprofiled)
    tables = tables_from_matrix(matrix, settings.models, config, graph.version)
    embedder = task_embedder(settings)
    # the probes' vectors come from the data dir after the first start (tasks: from memory)
    probe_embedder = StoredEmbedder(embedder, settings.data_dir, shipped_vectors(embedder.name))
    index = ProbeIndex.build(suite.probes, probe_embedder, config.exact_index_limit,
                             elsewhere_texts() if config.elsewhere else ()) \
        if suite.probes else None
    decider = PolicyDecider(tables, graph, pairings, config, index, embedder, live,
                            pool.blocked)
    decider.sources = {name: source for name, (_, source) in found.items()}
    return decider


def load_profiles(settings: Settings, pool: Pool, suite: Suite,
                  query: ProfileQuery) -> dict[str, tuple[Profile | None, ProfileSource]]:
    """Each pool model's profile and where it came from: stored observations first (built;
    completed by the shipped profile where they lack probes: ``completed_by``), then the
    profile shipped for the embedded pool."""
    shipped = shipped_profiles_dir()
    out: dict[str, tuple[Profile | None, ProfileSource]] = {}
    with open_observations(settings) as store:
        for name in pool.names:
            model = pool.get(name)
            stored = from_store(model, suite, store, query.decoding)
            found = shipped_profile(name, model_key(model.identity()), suite, shipped)
            if stored.records:
                stored, _ = completed_by(stored, found)  # probes it lacks from the shipped one
                out[name] = (stored, "built")
                if (short := unfinished(stored, suite, query.samples)) is not None:
                    structlog.get_logger("diffroute.pairing").warning(
                        "profile.unfinished", model=name, stored=short,
                        hint="stored observations take precedence over a shipped profile: "
                             "finish the build (diffroute profile build resumes it)")
                continue
            out[name] = (found, "shipped" if found is not None else "none")
    return out


def tables_from_matrix(matrix: PoolMatrix, models: Sequence[ModelConfig],
                       config: PolicySettings, version: str) -> PolicyTables:
    """Lay the matrix out over every pool model; unprofiled models get NaN rows."""
    names = [m.name for m in models]
    n = len(names)
    where = np.array([names.index(m) for m in matrix.models], dtype=np.int64)
    domains = {}
    present: dict[str, DomainMatrix | None] = dict(matrix.domains) or {ALL: None}
    for name, dm in present.items():
        square = {k: np.full((n, n), np.nan) for k in
                  ("kappa", "kappa_low", "kappa_high", "error_consistency", *MEASURES)}
        accuracy = np.full(n, np.nan)
        if dm is not None:
            for key, arr in square.items():
                value = getattr(dm, key)
                if value is not None:
                    arr[np.ix_(where, where)] = value
            accuracy[where] = dm.accuracy
        domains[name] = {**square, "accuracy": accuracy}
    counts: dict[str, tuple[int, ...]] = {
        d: (m.n_kappa, m.n_gold, m.n_prior, m.n_refusal, m.n_free)
        for d, m in matrix.domains.items()} or {ALL: (0, 0)}
    profiled = [m in matrix.models for m in names]
    latency = [config.latency_ms.get(m, np.nan) for m in names]
    return make_tables(names, [m.family_name for m in models],
                       [m.cost_per_1k_tokens for m in models], domains, profiled, counts,
                       latency, version, false_alarm_budget=config.audit_false_alarms)
