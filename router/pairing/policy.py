"""The pairing policy: pure functions from (task domains, candidates, similarity tables,
configured pairings, limits) to a :class:`~router.pairing.decision.Decision`.

Nothing here does I/O or searches an index: :mod:`router.pairing.decider` loads the profiles,
builds the :class:`PolicyTables` once per profile version and turns a task text into domain
weights; the functions below only read numpy arrays, so a decision costs O(domains × models).

The rules, in the order they apply:

1. candidates are the request's (or the whole pool), minus the primary, minus excluded pairs,
   minus models over the cost or latency limits;
2. a pinned partner wins when it is a candidate, and the reason says so;
3. an *unprofiled* primary gets a partner by the family rule — audit: another family, assist:
   the same family — the most accurate such candidate overall, with ``score=None``;
4. otherwise every profiled candidate gets a similarity to the primary averaged over the task's
   domains with the task's weights: per domain, every measure the profiles hold, weighted by
   their probes (:attr:`profiles.matrix.DomainMatrix.similarity`: κp — error consistency
   where there is no gold choice probe — on gold probes, agreement beyond chance and own
   noise on probes without gold, on refusals, and on free text). ``assist`` takes the
   highest (shared priors). ``audit``, among candidates whose accuracy on those domains is
   above the competence floor, takes on gold domains the candidate expected to catch the most
   of the primary's errors less its priced false alarms, among the candidates expected to
   catch at least as many as a random model of the pool (:func:`calibrated_lambda`: one price
   per pool, cross-fitted, so that the pool's auditors raise no more than
   ``audit_false_alarms`` times a random auditor's false alarms on probes they were not chosen
   on; where no price holds that budget, the fewest false alarms among those candidates) —
   divergent blind spots, measured directly; on domains without gold the lowest similarity
   (divergent priors) less its accuracy times ``audit_accuracy_weight``. Ties: cheaper, then
   by name.

A domain without any measure for a pair falls back to the pair's similarity over all domains
(the nearest evidence), and a domain without gold probes to the overall accuracy for the
competence floor; the reason says so. A real "no partner" names its cause.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import numpy.typing as npt

from router.config import PolicySettings
from router.errors import BadRequestError, NoPairError, UnknownDomainError, UnknownModelError
from router.pairing.decision import Decision, Evidence, Role, RouteRequest
from router.pairing.pinned import Pairings

ALL = "all"
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
TIE_DECIMALS = 9
"""Scores equal to this many decimals are ties (float noise must not break determinism)."""


@dataclass(frozen=True)
class PolicyTables:
    """Everything the policy reads, as arrays over (domain, model, model).

    ``sim`` is κp where a domain has it and error consistency elsewhere; rows of unprofiled
    models are NaN. Built once per profile version by :func:`make_tables`.
    """

    models: tuple[str, ...]
    families: tuple[str, ...]
    domains: tuple[str, ...]
    cost: FloatArray
    latency: FloatArray
    profiled: BoolArray
    kappa: FloatArray
    kappa_low: FloatArray
    kappa_high: FloatArray
    error_consistency: FloatArray
    accuracy: FloatArray
    n_kappa: IntArray
    n_gold: IntArray
    version: str = ""
    similarity: FloatArray | None = None
    """Every measure of a domain in one (:attr:`profiles.matrix.DomainMatrix.similarity`);
    without it (older callers) ``sim`` is κp, else error consistency."""
    similarity_low: FloatArray | None = None
    similarity_high: FloatArray | None = None
    prior: FloatArray | None = None
    refusal: FloatArray | None = None
    free: FloatArray | None = None
    n_prior: IntArray | None = None
    n_refusal: IntArray | None = None
    n_free: IntArray | None = None
    catch: FloatArray | None = None
    """(domain, primary, auditor): expected share of the primary's errors the auditor's
    answer differs from, on gold probes (:attr:`profiles.matrix.DomainMatrix.catch`)."""
    false_alarm: FloatArray | None = None
    """The same for the primary's right answers."""
    catch_even: FloatArray | None = None
    catch_odd: FloatArray | None = None
    false_alarm_even: FloatArray | None = None
    false_alarm_odd: FloatArray | None = None
    """``catch`` and ``false_alarm`` on each half of the gold probes
    (:attr:`profiles.matrix.DomainMatrix.catch_even`): :func:`calibrated_lambda` counts a
    choice made on one half on the other."""
    false_alarm_budget: float = 1.0
    """Audit's false alarms over the pool, as a multiple of a random auditor's."""
    sim: FloatArray = field(init=False)
    model_index: dict[str, int] = field(init=False)
    domain_index: dict[str, int] = field(init=False)

    sim_fallback: BoolArray = field(init=False)
    """(domain, model, model): True where the domain has no similarity for the pair and
    ``sim`` holds the pair's similarity over all domains instead (the nearest evidence)."""
    accuracy_fallback: BoolArray = field(init=False)
    """(domain, model): True where the domain has no gold probe and ``accuracy`` holds the
    model's overall accuracy instead (competence for audit falls back to overall)."""

    pair_stats: FloatArray = field(init=False)
    """(domain, model, model, 9): κp, its interval's ends, error consistency, the interval of
    ``sim``, prior, refusal and free-text agreement (:data:`STATS`), stacked so that a pair's
    evidence is one gather and one weighted mean."""
    measure_counts: IntArray = field(init=False)
    """(domain, 4): probes behind the gold, prior, refusal and free-text measures."""
    name_rank: IntArray = field(init=False)
    """Each model's position in name order: the last tie-break, as an array."""
    audit_lambda: float = field(init=False)
    """The price of a false alarm in caught errors (:func:`calibrated_lambda`)."""

    def __post_init__(self) -> None:
        sim = np.where(np.isnan(self.kappa), self.error_consistency, self.kappa)
        if self.similarity is not None:
            sim = np.where(np.isnan(self.similarity), sim, self.similarity)
        sim, sim_fallback = _filled(sim, self.domains)
        accuracy, accuracy_fallback = _filled(self.accuracy, self.domains)
        object.__setattr__(self, "sim", sim)
        object.__setattr__(self, "sim_fallback", sim_fallback)
        object.__setattr__(self, "accuracy", accuracy)
        object.__setattr__(self, "accuracy_fallback", accuracy_fallback)
        blank = np.full(self.kappa.shape, np.nan)
        stats = (self.kappa, self.kappa_low, self.kappa_high, self.error_consistency,
                 *(blank if x is None else x for x in (
                     self.similarity_low, self.similarity_high, self.prior, self.refusal,
                     self.free)))
        object.__setattr__(self, "pair_stats", np.stack(
            [_filled(x, self.domains)[0] for x in stats], axis=-1))
        zeros = np.zeros(len(self.domains), dtype=np.int64)
        gold = np.where(self.n_kappa > 0, self.n_kappa, self.n_gold)
        object.__setattr__(self, "measure_counts", np.stack(
            [gold, *(zeros if x is None else x for x in
                     (self.n_prior, self.n_refusal, self.n_free))], axis=-1))
        rank = np.empty(len(self.models), dtype=np.int64)
        rank[sorted(range(len(self.models)), key=self.models.__getitem__)] = \
            np.arange(len(self.models))
        object.__setattr__(self, "name_rank", rank)
        object.__setattr__(self, "model_index", {m: i for i, m in enumerate(self.models)})
        object.__setattr__(self, "domain_index", {d: i for i, d in enumerate(self.domains)})
        object.__setattr__(self, "audit_lambda", calibrated_lambda(self))

    def index(self, model: str) -> int:
        try:
            return self.model_index[model]
        except KeyError:
            raise UnknownModelError(model, list(self.models)) from None


def _filled(values: FloatArray, domains: Sequence[str]) -> tuple[FloatArray, BoolArray]:
    """``values`` (domain first) with each domain's NaN replaced by the ``all`` row's value,
    and where that happened: a domain without a measure falls back to the whole suite."""
    if ALL not in domains:
        return values, np.zeros(values.shape, dtype=bool)
    overall = values[list(domains).index(ALL)]
    missing = np.isnan(values) & ~np.isnan(overall)[None]
    return np.where(missing, overall[None], values), missing


def calibrated_lambda(tables: PolicyTables) -> float:
    """The smallest price λ of a false alarm at which the audit rule — per primary and gold
    domain, among the candidates that catch at least as many of its errors as a random one,
    the auditor with the most expected ``caught − λ·alarms`` — raises, summed over every
    profiled primary and gold domain of the pool, no more than
    :attr:`PolicyTables.false_alarm_budget` times the false alarms of a random auditor. 0 when
    the tables have no audit rates; ``inf`` when no price holds the budget (each auditor then
    raises the fewest false alarms it can).

    A Lagrange multiplier: pooled over decisions, maximising the errors caught under a cap on
    false alarms is maximising ``caught − λ·alarms`` in each decision with one λ.

    Cross-fitted where the tables have the rates of both halves of the gold probes: the rule
    chooses on one half and its false alarms are counted on the other (both ways, averaged),
    because the candidate that looks best on some probes is also the one whose false alarms
    those probes underestimate most — counted on the probes it was chosen on, the budget would
    hold on paper and be exceeded on new questions.
    """
    if tables.catch is None or tables.false_alarm is None:
        return 0.0
    rows = [i for i, d in enumerate(tables.domains) if d != ALL and tables.n_gold[i] > 0]
    if not rows:
        return 0.0
    catch, alarm = tables.catch[rows], tables.false_alarm[rows]
    acc = tables.accuracy[rows]
    ok = ~(np.isnan(catch) | np.isnan(alarm)) & ~np.isnan(acc)[:, :, None]
    ok &= (tables.profiled[:, None] & tables.profiled[None, :])[None]
    ok &= ~np.eye(len(tables.models), dtype=bool)[None]
    counted: BoolArray = np.asarray(ok.any(-1), dtype=bool)
    if not counted.any():
        return 0.0
    right = np.nan_to_num(acc)[:, :, None] * tables.n_gold[rows][:, None, None]
    n_ok = np.maximum(ok.sum(-1), 1)
    budget = tables.false_alarm_budget * float(
        (np.where(ok, alarm * right, 0.0).sum(-1)[counted] / n_ok[counted]).sum())
    rate = np.nan_to_num(acc)[:, :, None]
    tie_rank = np.empty(len(tables.models), dtype=np.int64)  # cheaper, then by name
    tie_rank[np.lexsort((tables.name_rank, tables.cost))] = np.arange(len(tables.models))
    fits = [_Fit.of(tie_rank, rate, catch, alarm, alarm, ok, right, n_ok)]
    even, odd = _half(tables, "even", rows), _half(tables, "odd", rows)
    if even is not None and odd is not None:
        (c_even, a_even), (c_odd, a_odd) = even, odd
        fits = [_Fit.of(tie_rank, rate, c_even, a_even, a_odd, ok, right, n_ok),
                _Fit.of(tie_rank, rate, c_odd, a_odd, a_even, ok, right, n_ok)]

    def spent(lam: float) -> float:
        return float(np.mean([f.spent(lam, counted) for f in fits]))

    if spent(0.0) <= budget:
        return 0.0
    if spent(float("inf")) > budget:
        return float("inf")
    low, high = 0.0, 1.0
    while spent(high) > budget:
        low, high = high, high * 4
    for _ in range(30):
        mid = (low + high) / 2
        low, high = (low, mid) if spent(mid) <= budget else (mid, high)
    return high


def audit_price(tables: PolicyTables) -> dict[str, float | bool | None] | None:
    """The pool's price of a false alarm, for people: ``{false_alarm_budget, price,
    reachable}`` (``price`` None where no price holds the budget); None without audit rates."""
    if tables.catch is None or tables.false_alarm is None or not np.isfinite(tables.catch).any():
        return None  # no audit rates, or none measured (no profiled pair on a gold domain)
    reachable = bool(np.isfinite(tables.audit_lambda))
    return {"false_alarm_budget": tables.false_alarm_budget,
            "price": round(tables.audit_lambda, 4) if reachable else None,
            "reachable": reachable}


def audit_price_text(tables: PolicyTables) -> str | None:
    """:func:`audit_price` in a line."""
    price = audit_price(tables)
    if price is None:
        return None
    budget = f"{tables.false_alarm_budget:g}× a random auditor's false alarms"
    if price["reachable"]:
        return (f"audit on gold domains: a false alarm costs {tables.audit_lambda:.2f} caught "
                f"errors, so that the pool's auditors raise at most {budget}")
    return (f"audit on gold domains: no price of a false alarm holds the pool's auditors to "
            f"{budget}; each raises the fewest of the candidates that catch at least as many "
            f"errors as a random one")


def _half(tables: PolicyTables, name: str, rows: list[int]) -> tuple[FloatArray, FloatArray] | None:
    """(catch, false alarm) of one half of the gold probes on ``rows``; where the half has no
    rate for a pair, the rate over all of them."""
    catch: FloatArray | None = getattr(tables, f"catch_{name}")
    alarm: FloatArray | None = getattr(tables, f"false_alarm_{name}")
    if catch is None or alarm is None or tables.catch is None or tables.false_alarm is None:
        return None
    return (np.where(np.isnan(catch[rows]), tables.catch[rows], catch[rows]),
            np.where(np.isnan(alarm[rows]), tables.false_alarm[rows], alarm[rows]))


@dataclass(frozen=True)
class _Fit:
    """One way of counting the audit rule's false alarms: the rates it chooses on (as
    :func:`_audit_rates` keys them and :func:`_order` breaks ties) and the false alarms it is
    counted on (the same ones, or the other half's)."""

    catch: FloatArray
    alarm: FloatArray
    acc: FloatArray
    counted_alarms: FloatArray
    eligible: BoolArray
    tie_rank: IntArray

    @classmethod
    def of(cls, tie_rank: IntArray, acc: FloatArray, catch: FloatArray, alarm: FloatArray,
           counted_alarm: FloatArray, ok: BoolArray, right: FloatArray, n_ok: IntArray) -> _Fit:
        random_catch = np.where(ok, catch, 0.0).sum(-1) / n_ok
        eligible = ok & (np.nan_to_num(catch) >= random_catch[..., None] - 1e-9)
        return cls(catch, alarm, acc, np.where(ok, counted_alarm * right, 0.0), eligible,
                   tie_rank)

    def spent(self, lam: float, counted: BoolArray) -> float:
        """The false alarms of the auditors chosen at price ``lam`` (``inf``: the fewest)."""
        with np.errstate(invalid="ignore"):
            key = (-self.alarm if np.isinf(lam)
                   else (1.0 - self.acc) * self.catch - lam * self.acc * self.alarm)
        key = np.where(self.eligible, np.round(key, TIE_DECIMALS), -np.inf)
        best = key == key.max(-1, keepdims=True)
        chosen = np.where(best, self.tie_rank, len(self.tie_rank)).argmin(-1)
        alarms = np.take_along_axis(self.counted_alarms, chosen[..., None], -1)[..., 0]
        return float(alarms[counted].sum())


STATS = ("kappa", "kappa_low", "kappa_high", "error_consistency", "similarity_low",
         "similarity_high", "prior", "refusal", "free")
"""The last axis of :attr:`PolicyTables.pair_stats`."""
MEASURES = ("similarity", "similarity_low", "similarity_high", "prior", "refusal", "free",
            "catch", "false_alarm", "catch_even", "catch_odd", "false_alarm_even",
            "false_alarm_odd")
"""Optional per-domain arrays of :func:`make_tables` (the measures beyond gold probes, and the
audit rates)."""


def make_tables(models: Sequence[str], families: Sequence[str], cost: Sequence[float],
                domains: Mapping[str, Mapping[str, FloatArray]], profiled: Sequence[bool],
                counts: Mapping[str, Sequence[int]], latency: Sequence[float] | None = None,
                version: str = "", false_alarm_budget: float = 1.0) -> PolicyTables:
    """Stack per-domain ``{kappa, kappa_low, kappa_high, error_consistency, accuracy}`` arrays
    (already laid out over ``models``), and the optional :data:`MEASURES`, into tables;
    ``counts[d] = (n_kappa, n_gold[, n_prior, n_refusal, n_free])``."""
    names = tuple(sorted(domains, key=lambda d: (d != ALL, d)))

    def stack(key: str) -> FloatArray:
        return np.stack([np.asarray(domains[d][key], dtype=np.float64) for d in names])

    def count(i: int) -> IntArray:
        return np.array([counts[d][i] if len(counts[d]) > i else 0 for d in names],
                        dtype=np.int64)

    extra = {key: stack(key) for key in MEASURES if all(key in domains[d] for d in names)}

    m = len(models)
    return PolicyTables(
        tuple(models), tuple(families), names, np.asarray(cost, dtype=np.float64),
        np.asarray(latency if latency is not None else [np.nan] * m, dtype=np.float64),
        np.asarray(profiled, dtype=bool), stack("kappa"), stack("kappa_low"),
        stack("kappa_high"), stack("error_consistency"), stack("accuracy"),
        count(0), count(1), version, **extra, n_prior=count(2), n_refusal=count(3),
        n_free=count(4), false_alarm_budget=false_alarm_budget)


# --- weights and aggregation ------------------------------------------------------------------

@dataclass(frozen=True)
class _Task:
    """The task's domains as indices into the tables, with normalised weights."""

    rows: IntArray
    weights: FloatArray
    names: tuple[str, ...]


def _task(tables: PolicyTables, weights: Mapping[str, float]) -> _Task:
    known = {d: w for d, w in weights.items() if w > 0}
    unknown = [d for d in known if d not in tables.domain_index]
    if unknown:
        raise UnknownDomainError(f"unknown domain '{unknown[0]}' (domains: "
                              f"{', '.join(tables.domains)})", param="domain")
    if not known:
        known = {ALL: 1.0}
    # heaviest first, so reasons and evidence list the domains that drove the decision first
    order = sorted(known, key=lambda d: (-known[d], d))
    w = np.array([known[d] for d in order], dtype=np.float64)
    rows = np.array([tables.domain_index[d] for d in order], dtype=np.int64)
    return _Task(rows, w / w.sum(), tuple(order))


def _average(values: FloatArray, w: FloatArray) -> FloatArray:
    """Weighted mean over axis 0 ignoring NaN (renormalised over the domains that have data)."""
    # plain matrix products over the flattened trailing axes, and no np.errstate: a decision
    # makes several of these, and each numpy call's overhead is most of their cost
    flat = values.reshape(len(w), -1)
    valid = flat == flat  # False where NaN
    num = w @ np.where(valid, flat, 0.0)
    den = w @ valid
    out = np.full(den.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out.reshape(values.shape[1:])


def _similarity_to(tables: PolicyTables, task: _Task, p: int) -> FloatArray:
    return _average(tables.sim[task.rows, p, :], task.weights)


def _accuracy(tables: PolicyTables, task: _Task) -> FloatArray:
    return _average(tables.accuracy[task.rows], task.weights)


# --- candidates ---------------------------------------------------------------------------------

def _within_limits(tables: PolicyTables, config: PolicySettings) -> BoolArray:
    ok = np.ones(len(tables.models), dtype=bool)
    if config.max_cost_per_1k is not None:
        ok &= tables.cost <= config.max_cost_per_1k
    if config.max_latency_ms is not None:
        ok &= ~(tables.latency > config.max_latency_ms)  # unknown latency (NaN) passes
    return ok


def _allowed(tables: PolicyTables, request: RouteRequest, config: PolicySettings) -> BoolArray:
    mask = _within_limits(tables, config)
    if request.candidates is not None:
        listed = np.zeros(len(tables.models), dtype=bool)
        listed[[tables.index(c) for c in request.candidates]] = True
        mask &= listed
    for name in request.blocked:
        if name in tables.model_index:
            mask[tables.model_index[name]] = False
    return mask


def _partner_mask(tables: PolicyTables, allowed: BoolArray, primary: str,
                  pairings: Pairings) -> BoolArray:
    mask = allowed.copy()
    mask[tables.index(primary)] = False
    for a, b in pairings.excluded:
        if primary in (a, b):
            other = b if a == primary else a
            if other in tables.model_index:
                mask[tables.model_index[other]] = False
    return mask


def _order(tables: PolicyTables, idx: IntArray, score: FloatArray, descending: bool) -> IntArray:
    """``idx`` sorted by score (NaN last), then cheaper, then name: deterministic on ties."""
    key = np.round(score[idx], TIE_DECIMALS)
    key = np.where(np.isnan(key), np.inf, -key if descending else key)
    # lexsort's last key is the primary one
    order = np.lexsort((tables.name_rank[idx], tables.cost[idx], key))
    return idx[order]


# --- the decision -------------------------------------------------------------------------------

LiveShifts = Mapping[str, tuple[float, int]]
"""For one primary: partner → (shift of the live blended agreement from the profile's
prediction, live comparisons). Added to the partner's profiled similarity, so that a pair whose
live agreement departs from its profile is judged by what it does now (issue: online update)."""


def decide(tables: PolicyTables, request: RouteRequest, weights: Mapping[str, float],
           pairings: Pairings, config: PolicySettings,
           live: LiveShifts | None = None) -> Decision:
    """The decision for one request, given the task's domain weights.

    ``live``: shifts from live outcomes for the request's primary (see :data:`LiveShifts`).
    """
    task = _task(tables, weights)
    allowed = _allowed(tables, request, config)
    primary, auto_note = _primary(tables, request, task, allowed, pairings)
    if request.panel > 1:
        if request.role != "audit":
            raise BadRequestError("panels are for audit (role 'audit')", param="panel")
        panel = choose_panel(tables, request, primary, task, allowed, pairings, config)
        return _with_reason(panel, auto_note + "; " + panel.reason) if auto_note else panel
    mask = _partner_mask(tables, allowed, primary, pairings)
    if not mask.any():
        raise NoPairError(primary, request.role,
                          _why_empty(tables, request, primary, pairings, config))
    decision = _pinned(tables, primary, request.role, task, mask, pairings)
    if decision is None:
        decision = _chosen(tables, primary, request.role, task, mask, config, live=live)
    if auto_note:
        decision = _with_reason(decision, auto_note + "; " + decision.reason)
    return decision


def _primary(tables: PolicyTables, request: RouteRequest, task: _Task,
             allowed: BoolArray, pairings: Pairings | None = None) -> tuple[str, str]:
    """The requested primary, or for ``auto`` the most accurate allowed profiled model."""
    if request.primary not in (None, "auto"):
        tables.index(request.primary)
        return request.primary, ""
    acc = _accuracy(tables, task)
    idx = np.flatnonzero(allowed & tables.profiled & ~np.isnan(acc))
    if pairings is not None and pairings.excluded:
        # a primary whose every allowed partner is excluded would be a false "no partner"
        idx = np.array([i for i in idx if _partner_mask(
            tables, allowed, tables.models[i], pairings).any()], dtype=np.int64)
    if idx.size < 2 and pairings is not None and pairings.excluded:
        raise NoPairError("auto", request.role, "no two allowed profiled candidates may be "
                          "paired: the exclusions leave every candidate primary without a "
                          "partner")
    if idx.size < 2:
        raise NoPairError("auto", request.role, "fewer than two profiled candidates within "
                          "the limits to choose a primary from")
    best = int(_order(tables, idx, acc, descending=True)[0])
    note = (f"primary auto: '{tables.models[best]}' is the most accurate on "
            f"{_domains_text(task)} ({acc[best]:.2f})")
    return tables.models[best], note


def _pinned(tables: PolicyTables, primary: str, role: Role, task: _Task, mask: BoolArray,
            pairings: Pairings) -> Decision | None:
    partner = pairings.pinned_partner(primary, role)
    if partner is None or partner not in tables.model_index:
        return None
    j = tables.model_index[partner]
    if not mask[j]:  # excluded, over a limit or not among the request's candidates
        return None
    p = tables.index(primary)
    value = float(_similarity_to(tables, task, p)[j]) if tables.profiled[[p, j]].all() else None
    score = None if value is None or np.isnan(value) else round(value, 4)
    return Decision(primary, partner, role, score,
                    f"{role} partner '{partner}' is pinned by configuration (overrides the "
                    f"policy)", _evidence(tables, task, p, j), _weights_out(task),
                    tables.version)


def _chosen(tables: PolicyTables, primary: str, role: Role, task: _Task, mask: BoolArray,
            config: PolicySettings, matched: bool = False,
            live: LiveShifts | None = None) -> Decision:
    p = tables.index(primary)
    if not tables.profiled[p]:
        return _by_family(tables, p, role, task, mask, f"primary '{primary}' is unprofiled")
    sim = _similarity_to(tables, task, p)
    live_note = ""
    shifts = np.zeros(len(tables.models))
    if live:
        sim = sim.copy()
        for partner, (shift, _count) in live.items():
            j = tables.model_index.get(partner)
            if j is not None and not np.isnan(sim[j]):
                sim[j] += shift
                shifts[j] = shift

    acc = _accuracy(tables, task)
    skipped = [tables.models[i] for i in np.flatnonzero(mask & ~tables.profiled)]
    scored = mask & tables.profiled & ~np.isnan(sim)
    weak: list[str] = []
    if role == "audit":
        competent = acc > config.competence_floor
        weak = [tables.models[i] for i in np.flatnonzero(scored & ~competent)]
        scored &= competent
    idx = np.flatnonzero(scored)
    if idx.size == 0:
        if skipped:
            why = f"no profiled candidate qualifies; candidates {', '.join(skipped)} unprofiled"
            return _by_family(tables, p, role, task, mask & ~tables.profiled, why)
        raise NoPairError(primary, role, _nobody(weak, config))
    rates = _audit_rates(tables, task, p, acc, shifts, idx) if role == "audit" else None
    if rates is not None and np.isfinite(rates.key[idx]).any():
        j = int(_order(tables, idx, rates.key, descending=True)[0])
    else:
        rates = None
        rank = sim if role == "assist" else _audit_key(sim, acc, config)
        j = int(_order(tables, idx, rank, descending=role == "assist")[0])
    stats = _pair_stats(tables, task, p, j)
    reason = _reason(tables, role, task, p, j, sim[j], acc[j], stats, config, weak, skipped,
                     rates)
    reason += _fallback_note(tables, task, p, j, role)
    if live and tables.models[j] in live:
        shift, n = live[tables.models[j]]
        live_note = f"; live agreement over {n} comparisons moved its similarity by {shift:+.3f}"
    reason += live_note
    if matched:  # chosen for the pool as a whole, not as this model's best: say what it is
        reason = f"pool matching paired '{primary}' with '{tables.models[j]}'" + \
            reason[reason.index(" on "):]
    return Decision(primary, tables.models[j], role, round(float(sim[j]), 4), reason,
                    _evidence(tables, task, p, j, stats, acc, float(sim[j]), rates),
                    _weights_out(task),
                    tables.version)


@dataclass(frozen=True)
class _AuditRates:
    """Per candidate on the task's domains: expected catch and false-alarm rates against the
    primary, what a random candidate would catch and raise, and the audit key
    ``(1 − acc_p)·catch − λ·acc_p·false_alarm`` (caught errors less priced false alarms, per
    call) — NaN where the rates are unknown or the candidate catches less than a random one."""

    catch: FloatArray
    false_alarm: FloatArray
    key: FloatArray
    random_catch: float
    random_false_alarm: float
    below_random: bool = False
    """No candidate catches as many as a random one: the best catcher was keyed."""


def _audit_rates(tables: PolicyTables, task: _Task, p: int, acc: FloatArray,
                 shifts: FloatArray, candidates: IntArray) -> _AuditRates | None:
    """The audit rates of :class:`_AuditRates` where the task's domains have gold probes.

    Only a candidate that catches at least as many of the primary's errors as a random model of
    the pool is keyed (the best catcher when none does): an auditor whose blind spots coincide
    with the primary's more than chance would is never chosen for raising few false alarms.
    A live shift of the pair's agreement (:data:`LiveShifts`) moves the expected catch against
    it: agreeing more than profiled is disagreeing less on the primary's errors.
    """
    if tables.catch is None or tables.false_alarm is None:
        return None
    catch = _average(tables.catch[task.rows, p, :], task.weights) - shifts
    alarm = _average(tables.false_alarm[task.rows, p, :], task.weights)
    rated = ~(np.isnan(catch) | np.isnan(alarm)) & tables.profiled
    rated[p] = False
    known = candidates[rated[candidates]]
    if known.size == 0:
        return None
    random_catch = float(catch[rated].mean())
    eligible = known[catch[known] >= random_catch - 1e-9]
    below = eligible.size == 0
    if below:  # every candidate catches less than chance: the best catcher
        eligible = known[catch[known] >= catch[known].max() - 1e-9]
    right = float(np.nan_to_num(acc[p], nan=0.5))
    key = np.full(len(tables.models), np.nan)
    if np.isinf(tables.audit_lambda):
        key[eligible] = -alarm[eligible]
    else:
        key[eligible] = ((1.0 - right) * catch[eligible]
                         - tables.audit_lambda * right * alarm[eligible])
    return _AuditRates(catch, alarm, key, random_catch, float(alarm[rated].mean()), below)


def _audit_key(sim: FloatArray, acc: FloatArray, config: PolicySettings) -> FloatArray:
    """What audit minimises: similarity, less the auditor's accuracy times its weight (an
    auditor of divergent priors that is also right more often catches more of the primary's
    errors and raises fewer false alarms); a candidate without accuracy counts by similarity."""
    if not config.audit_accuracy_weight:
        return sim
    return sim - config.audit_accuracy_weight * np.nan_to_num(acc, nan=0.0)


def _nobody(weak: list[str], config: PolicySettings) -> str:
    if weak:
        return (f"no candidate is above the competence floor {config.competence_floor:.2f} "
                f"(below: {_listed(weak)})")
    return "no candidate has a similarity measure on any domain (profiles without probes?)"


def _why_empty(tables: PolicyTables, request: RouteRequest, primary: str, pairings: Pairings,
               config: PolicySettings) -> str:
    """The real causes of an empty candidate set, each with the models it removed."""
    if len(tables.models) < 2:
        return "the pool has no other model"
    causes = _removed(tables, request, primary, pairings, config)
    return "no candidate is left (" + ("; ".join(causes) or "none qualifies") + ")"


def _removed(tables: PolicyTables, request: RouteRequest, primary: str, pairings: Pairings,
             config: PolicySettings) -> list[str]:
    """What took each model out of the primary's candidates: the request's list, the
    limits, an open circuit, an exclusion — each cause with the models it removed."""
    others = [m for m in tables.models if m != primary]
    causes: list[str] = []
    listed = set(request.candidates) if request.candidates is not None else None
    if listed is not None:
        out = [m for m in others if m not in listed]
        if out:
            causes.append(f"not among the request's candidates: {_listed(out)}")
    limits = _within_limits(tables, config)
    over = [m for m in others if not limits[tables.model_index[m]]]
    if over:
        causes.append(f"over the cost or latency limits: {_listed(over)}")
    blocked = [m for m in others if m in request.blocked]
    if blocked:
        causes.append(f"circuit open: {_listed(blocked)}")
    excluded = [m for m in others if pairings.is_excluded(primary, m)]
    if excluded:
        causes.append(f"excluded from pairing with '{primary}': {_listed(excluded)}")
    return causes


def _by_family(tables: PolicyTables, p: int, role: Role, task: _Task, mask: BoolArray,
               why: str) -> Decision:
    """The family rule for missing evidence: audit → another family, assist → the same.

    Among those, the most accurate overall (unprofiled last), then cheaper, then by name.
    """
    primary = tables.models[p]
    if not mask.any():
        raise NoPairError(primary, role, f"{why}, and no candidate is left")
    family = tables.families[p]
    same = np.array([f == family for f in tables.families])
    rule = mask & (same if role == "assist" else ~same)
    wanted = f"the family of '{family}'" if role == "assist" else f"a family other than '{family}'"
    note = f"{why}: chose by the family rule ({wanted})"
    if not rule.any():
        rule, note = mask, f"{why}: no candidate of {wanted}, chose any"
    overall = tables.accuracy[tables.domain_index[ALL]] if ALL in tables.domain_index else \
        np.full(len(tables.models), np.nan)
    j = int(_order(tables, np.flatnonzero(rule), overall, descending=True)[0])
    return Decision(primary, tables.models[j], role, None, note + "; no similarity evidence",
                    (), _weights_out(task), tables.version)


# --- reasons and evidence -----------------------------------------------------------------------

def _domains_text(task: _Task) -> str:
    if task.names == (ALL,):
        return "all domains"
    shown = [f"{d} {w:.2f}" for d, w in zip(task.names[:3], task.weights[:3], strict=False)]
    more = f" +{len(task.names) - 3} more" if len(task.names) > 3 else ""
    return ", ".join(shown) + more


def _reason(tables: PolicyTables, role: Role, task: _Task, p: int, j: int, sim: float,
            acc: float, stats: FloatArray, config: PolicySettings, weak: list[str],
            skipped: list[str], rates: _AuditRates | None = None) -> str:
    partner, primary = tables.models[j], tables.models[p]
    low, high = (stats[4], stats[5]) if not np.isnan(stats[4]) else (stats[1], stats[2])
    interval = "" if np.isnan(low) or np.isnan(high) else f" [{low:.2f}, {high:.2f}]"
    if role == "assist":
        text = f"'{partner}' shares the priors of '{primary}' most"
    elif rates is not None:
        if np.isinf(tables.audit_lambda):
            price = (f"no price of a false alarm holds the pool's auditors to "
                     f"{tables.false_alarm_budget:g}× a random auditor's false alarms")
        else:
            price = (f"among the candidates that catch at least as many as a random one, a "
                     f"false alarm costs {tables.audit_lambda:.2f} caught errors, so that the "
                     f"pool's auditors raise at most {tables.false_alarm_budget:g}× a random "
                     f"auditor's false alarms on probes they were not chosen on")
        if rates.below_random:
            what = (f"catches the most errors of '{primary}' among the candidates, none of "
                    f"which is expected to catch as many as a random one, on ")
        elif np.isinf(tables.audit_lambda):
            what = (f"raises the fewest false alarms of the candidates expected to catch at "
                    f"least as many errors of '{primary}' as a random one on ")
        else:
            what = f"is expected to catch the most errors of '{primary}' on "
        text = (f"'{partner}' {what}{_domains_text(task)}: it differs on "
                f"{rates.catch[j]:.2f} of its wrong answers and on "
                f"{rates.false_alarm[j]:.2f} of its right ones (a random candidate: "
                f"{rates.random_catch:.2f} / {rates.random_false_alarm:.2f}); "
                f"{price}; similarity {sim:.2f}{interval} "
                f"({_measures_text(tables, task, stats)})")
    else:
        text = f"'{partner}' has the priors and errors least like those of '{primary}'"
    if rates is None or role == "assist":
        text += (f" on {_domains_text(task)}: similarity {sim:.2f}{interval} "
                 f"({_measures_text(tables, task, stats)})")
    if role == "audit":
        text += f"; accuracy {acc:.2f} > floor {config.competence_floor:.2f}"
        if config.audit_accuracy_weight and rates is None:
            text += f"; ranked by similarity − {config.audit_accuracy_weight:g} × accuracy"
    if weak:
        text += f"; below the floor: {_listed(weak)}"
    if skipped:
        text += f"; skipped unprofiled: {_listed(skipped)}"
    return text


def _measures_text(tables: PolicyTables, task: _Task, stats: FloatArray) -> str:
    """The measures the similarity combines, each with its probes: what the evidence is."""
    n = _measure_counts(tables, task)
    gold = ("κp", stats[0]) if not np.isnan(stats[0]) else ("error consistency", stats[3])
    parts = [(gold[0], gold[1], n[0], "gold"), ("prior agreement", stats[6], n[1], "no gold"),
             ("refusal agreement", stats[7], n[2], "refusal"),
             ("free-text similarity", stats[8], n[3], "free")]
    shown = [f"{name} {value:.2f} on {count} {kind} probes" for name, value, count, kind in parts
             if count and not np.isnan(value)]
    return ", ".join(shown) or f"the whole suite's, {_n_probes(tables, task)} probes"


def _measure_counts(tables: PolicyTables, task: _Task) -> IntArray:
    """Probes behind each measure on the task's domains (the whole suite's where the task's
    domains have none of any)."""
    counts: IntArray = tables.measure_counts[task.rows].sum(0)
    if counts.any() or ALL not in tables.domain_index:
        return counts
    overall: IntArray = tables.measure_counts[tables.domain_index[ALL]]
    return overall


def _fallback_note(tables: PolicyTables, task: _Task, p: int, j: int, role: Role) -> str:
    """Says which of the task's domains were judged on the nearest evidence (all domains)."""
    rows = task.rows
    sim_names = [task.names[i] for i in np.flatnonzero(tables.sim_fallback[rows, p, j])]
    note = ""
    if sim_names:
        note += (f"; no similarity measure on {_listed(sim_names)}: fell back to the nearest "
                 f"evidence, the pair's similarity over all domains")
    if role == "audit":
        acc_names = [task.names[i] for i in np.flatnonzero(tables.accuracy_fallback[rows, j])]
        if acc_names:
            note += (f"; no gold probes on {_listed(acc_names)}: competence is the overall "
                     f"accuracy")
    return note


LISTED = 8
"""Names a reason lists before it says how many more (a 256-model pool's reason stays short)."""


def _listed(names: Sequence[str]) -> str:
    more = f" +{len(names) - LISTED} more" if len(names) > LISTED else ""
    return ", ".join(names[:LISTED]) + more


def _n_probes(tables: PolicyTables, task: _Task) -> int:
    """The probes the similarity rests on (the whole suite's where it fell back to it)."""
    found = int(tables.n_kappa[task.rows].sum() or tables.n_gold[task.rows].sum())
    if found or ALL not in tables.domain_index:
        return found
    overall = tables.domain_index[ALL]
    return int(tables.n_kappa[overall] or tables.n_gold[overall])


def _pair_stats(tables: PolicyTables, task: _Task, p: int, j: int) -> FloatArray:
    """The pair's :data:`STATS` averaged over the task's domains."""
    return _average(tables.pair_stats[task.rows, p, j], task.weights)


def _evidence(tables: PolicyTables, task: _Task, p: int, j: int,
              stats: FloatArray | None = None, acc: FloatArray | None = None,
              similarity: float | None = None,
              rates: _AuditRates | None = None) -> tuple[Evidence, ...]:
    """What the pair's decision rests on; ``stats`` and ``acc`` when the caller has them."""
    if not (tables.profiled[p] and tables.profiled[j]):
        return ()
    values = [_rounded(x) for x in (_pair_stats(tables, task, p, j) if stats is None
                                    else stats)]
    kappa, low, high, consistency, sim_low, sim_high, prior, refusal, free = values
    interval = (low, high) if low is not None and high is not None else None
    sim_interval = (sim_low, sim_high) if sim_low is not None and sim_high is not None else None
    if acc is None:
        acc = _accuracy(tables, task)
    doms, rows, partner = task.names, task.rows, tables.models[j]
    n_gold = int(tables.n_gold[rows].sum())
    n = _measure_counts(tables, task)
    sim = _rounded(float(_similarity_to(tables, task, p)[j]) if similarity is None
                   else similarity)
    return (
        Evidence("similarity", sim, sim_interval, int(n.sum()), doms, partner),
        Evidence("kappa_p", kappa, interval, int(tables.n_kappa[rows].sum()), doms, partner),
        Evidence("error_consistency", consistency, None, n_gold, doms, partner),
        Evidence("prior_agreement", prior, None, int(n[1]), doms, partner),
        Evidence("refusal_agreement", refusal, None, int(n[2]), doms, partner),
        Evidence("free_text_similarity", free, None, int(n[3]), doms, partner),
        Evidence("accuracy", _rounded(acc[j]), None, n_gold, doms, partner),
        Evidence("accuracy", _rounded(acc[p]), None, n_gold, doms, tables.models[p]),
    ) + (() if rates is None else (
        Evidence("catch", _rounded(rates.catch[j]), None, n_gold, doms, partner),
        Evidence("false_alarm", _rounded(rates.false_alarm[j]), None, n_gold, doms, partner),
    ))


def _rounded(x: float) -> float | None:
    return None if np.isnan(x) else round(float(x), 4)


def _weights_out(task: _Task) -> dict[str, float]:
    return {d: round(float(w), 4) for d, w in zip(task.names, task.weights, strict=True)}


def _with_reason(decision: Decision, reason: str) -> Decision:
    return Decision(decision.primary, decision.partner, decision.role, decision.score, reason,
                    decision.evidence, decision.domains, decision.profile_version,
                    decision.panel, decision.effective_votes)


# --- panels -------------------------------------------------------------------------------------

def effective_votes(rho: FloatArray) -> float:
    """N_eff = n² / Σ_ij ρ_ij for a panel's error correlations (ρ_ii = 1, negatives as 0)."""
    r = np.clip(np.nan_to_num(rho, nan=0.0), 0.0, 1.0)
    np.fill_diagonal(r, 1.0)
    return float(r.shape[0] ** 2 / r.sum())


def choose_panel(tables: PolicyTables, request: RouteRequest, primary: str, task: _Task,
                 allowed: BoolArray, pairings: Pairings, config: PolicySettings) -> Decision:
    """``request.panel`` competent auditors chosen greedily to maximise the effective number
    of independent votes among the primary and its panel; N_eff is reported."""
    k = request.panel
    p = tables.index(primary)
    if not tables.profiled[p]:
        raise NoPairError(primary, "audit", "panels need a profiled primary (it is unprofiled)")
    mask = _partner_mask(tables, allowed, primary, pairings)
    acc = _accuracy(tables, task)
    competent = acc > config.competence_floor
    pool = np.flatnonzero(mask & tables.profiled & competent)
    if pool.size < k:
        causes = _removed(tables, request, primary, pairings, config)
        if unprofiled := [tables.models[i] for i in np.flatnonzero(mask & ~tables.profiled)]:
            causes.append(f"unprofiled: {_listed(unprofiled)}")
        if weak := [tables.models[i] for i in np.flatnonzero(mask & tables.profiled & ~competent)]:
            causes.append(f"not above the competence floor {config.competence_floor:.2f}: "
                          f"{_listed(weak)}")
        why = f" ({'; '.join(causes)})" if causes else ""
        raise NoPairError(primary, "audit", f"a panel of {k} needs {k} competent auditors, "
                          f"found {pool.size}{why}")
    pinned = pairings.pinned_partner(primary, "audit")
    seed = [tables.model_index[pinned]] if pinned is not None and pinned in \
        tables.model_index and mask[tables.model_index[pinned]] else []
    members = [p, *_greedy_panel(tables, task, p, pool, k, seed)]
    rho = _pair_similarity(tables, task, np.array(members))
    n_eff = effective_votes(rho)
    panel = tuple(tables.models[i] for i in members[1:])
    reason = (f"panel of {k} auditors for '{primary}' on {_domains_text(task)} chosen for "
              f"independent errors: {n_eff:.2f} effective votes out of {k + 1} "
              f"(primary included); competence floor {config.competence_floor:.2f}")
    if seed:
        reason += f"; '{tables.models[seed[0]]}' is pinned by configuration (overrides the policy)"
    first = members[1]
    score = float(_similarity_to(tables, task, p)[first])
    return Decision(primary, panel[0], "audit", None if np.isnan(score) else round(score, 4),
                    reason, _evidence(tables, task, p, first), _weights_out(task),
                    tables.version, panel, round(n_eff, 4))


def _pair_similarity(tables: PolicyTables, task: _Task, members: IntArray) -> FloatArray:
    block = tables.sim[task.rows][:, members][:, :, members]
    return _average(block, task.weights)


def _greedy_panel(tables: PolicyTables, task: _Task, p: int, pool: IntArray,
                  k: int, seed: Sequence[int] = ()) -> list[int]:
    chosen: list[int] = list(seed)  # a pinned auditor sits on the panel first
    for _ in range(k - len(chosen)):
        rest = np.array([i for i in pool if i not in chosen], dtype=np.int64)
        gains = np.array([effective_votes(_pair_similarity(
            tables, task, np.array([p, *chosen, i]))) for i in rest])
        chosen.append(int(_order(tables, rest, _scatter(gains, rest, len(tables.models)),
                                 descending=True)[0]))
    return chosen


def _scatter(values: FloatArray, idx: IntArray, size: int) -> FloatArray:
    out = np.full(size, np.nan)
    out[idx] = values
    return out


# --- pool-wide assignment -----------------------------------------------------------------------

def assign_pool(tables: PolicyTables, role: Role, weights: Mapping[str, float],
                pairings: Pairings, config: PolicySettings,
                candidates: Sequence[str] | None = None) -> list[Decision]:
    """Every model gets a partner: pinned ones first, then a max-weight matching on the
    similarity graph (assist: most similar pairs; audit: least similar competent pairs), then
    the single-model policy for whoever the matching left out. One decision per model."""
    request = RouteRequest(role=role, candidates=candidates)
    task = _task(tables, weights)
    allowed = _allowed(tables, request, config)
    names = [m for m in tables.models if allowed[tables.model_index[m]]]
    out: dict[str, Decision] = {}
    for name in names:
        mask = _partner_mask(tables, allowed, name, pairings)
        pinned = _pinned(tables, name, role, task, mask, pairings)
        if pinned is not None:
            out[name] = pinned
    free = [n for n in names if n not in out]
    for a, b in sorted(_matching(tables, role, task, free, pairings, config)):
        for x, y in ((a, b), (b, a)):
            out[x] = _chosen(tables, x, role, task, _only(tables, y), config, matched=True)
    for name in free:
        if name not in out:
            try:
                d = decide(tables, RouteRequest(role=role, primary=name, candidates=candidates),
                           weights, pairings, config)
            except NoPairError:
                continue  # no partner for this one: the others still get theirs
            out[name] = _with_reason(d, f"left out of the matching, chosen alone: {d.reason}")
    return [out[n] for n in names if n in out]


def _only(tables: PolicyTables, name: str) -> BoolArray:
    mask = np.zeros(len(tables.models), dtype=bool)
    mask[tables.model_index[name]] = True
    return mask


def _matching(tables: PolicyTables, role: Role, task: _Task, names: Sequence[str],
              pairings: Pairings, config: PolicySettings) -> set[tuple[str, str]]:
    acc = _accuracy(tables, task)
    graph = nx.Graph()
    graph.add_nodes_from(names)
    for x, a in enumerate(names):
        i = tables.model_index[a]
        if not tables.profiled[i]:
            continue
        sim = _similarity_to(tables, task, i)
        for b in names[x + 1:]:
            j = tables.model_index[b]
            if not tables.profiled[j] or np.isnan(sim[j]) or pairings.is_excluded(a, b):
                continue
            if role == "audit" and not (acc[i] > config.competence_floor
                                        and acc[j] > config.competence_floor):
                continue
            # weights must be positive for the matching to prefer them: κp lies in [-1, 1]
            weight = 2.0 + sim[j] if role == "assist" else 2.0 - sim[j]
            graph.add_edge(a, b, weight=round(float(weight), TIE_DECIMALS))
    matched = nx.max_weight_matching(graph, maxcardinality=True)
    return {(min(a, b), max(a, b)) for a, b in matched}
