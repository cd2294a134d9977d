"""The pairing policy on a simulated pool with planted families.

Families share a scripted ``prior`` (so they share blind spots): ``a1``/``a2`` (A), ``b1``/``b2``
(B), ``c1`` (C), and ``weak`` (W, accuracy 0.3). ``b1`` answers like A in ``law`` and ``b2``
like A in ``history``: the pool's similarity differs by domain. ``ghost`` has no profile.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from profiles.collect import Decoding
from profiles.matrix import pool_matrix
from profiles.store import ObservationStore
from router.config import ModelConfig
from router.errors import BadRequestError, NoPairError
from router.pairing.decider import tables_from_matrix
from router.pairing.decision import RouteRequest
from router.pairing.pinned import Pairings
from router.pairing.policy import (
    ALL,
    PolicySettings,
    PolicyTables,
    assign_pool,
    decide,
    effective_votes,
    make_tables,
)
from router.testing.simulate import profile_models, scripted_model, simulated_suite

DOMAINS = ["history", "law", "math"]
FLOOR = PolicySettings(competence_floor=0.4)
NONE = Pairings()
FAMILY = {"a1": "A", "a2": "A", "b1": "B", "b2": "B", "c1": "C", "weak": "W", "ghost": "G"}


def pool_configs() -> list[ModelConfig]:
    return [
        scripted_model("a1", prior="A", seed=1),
        scripted_model("a2", prior="A", seed=2),
        scripted_model("b1", prior="B", seed=3, domains={"law": {"prior": "A"}}),
        scripted_model("b2", prior="B", seed=4, domains={"history": {"prior": "A"}}),
        scripted_model("c1", prior="C", seed=5),
        scripted_model("weak", prior="W", seed=6, accuracy=0.3),
        scripted_model("ghost", prior="G", seed=7),
    ]


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> PolicyTables:
    suite = simulated_suite(DOMAINS, 40)
    configs = pool_configs()
    store = ObservationStore.in_data_dir(Path(tmp_path_factory.mktemp("policy")))
    with store:
        profiles = asyncio.run(profile_models(configs[:-1], suite, store, Decoding(samples=3)))
    matrix = pool_matrix(profiles, suite, bootstrap=20)
    return tables_from_matrix(matrix, configs, PolicySettings(), "v1")


def audit(tables: PolicyTables, primary: str, weights: dict[str, float] | None = None,
          pairings: Pairings = NONE, config: PolicySettings = FLOOR, **kw: object):  # type: ignore[no-untyped-def]
    request = RouteRequest(role="audit", primary=primary, **kw)  # type: ignore[arg-type]
    return decide(tables, request, weights or {ALL: 1.0}, pairings, config)


def assist(tables: PolicyTables, primary: str, weights: dict[str, float] | None = None,
           pairings: Pairings = NONE, **kw: object):  # type: ignore[no-untyped-def]
    request = RouteRequest(role="assist", primary=primary, **kw)  # type: ignore[arg-type]
    return decide(tables, request, weights or {ALL: 1.0}, pairings, FLOOR)


def test_audit_picks_across_families_and_assist_within(tables: PolicyTables) -> None:
    for primary in ("a1", "a2"):
        a = audit(tables, primary)
        assert FAMILY[a.partner] not in ("A", "W"), a.reason
        assert a.score is not None and a.score < 0.3
        kappa = next(e for e in a.evidence if e.metric == "kappa_p")
        assert kappa.model == a.partner and kappa.n_probes == 120 and kappa.interval
        s = assist(tables, primary)
        assert FAMILY[s.partner] == "A", s.reason
        assert s.score is not None and s.score > 0.3
        assert "shares" in s.reason and s.profile_version == "v1"


def test_competence_floor_excludes_weak_auditors(tables: PolicyTables) -> None:
    acc = tables.accuracy[tables.domain_index[ALL], tables.index("weak")]
    assert acc < 0.45  # the planted weak model really measures weak
    # weak is the least similar to a1, so without a floor it would audit a1
    without_floor = audit(tables, "a1", candidates=("a2", "weak"),
                          config=PolicySettings(competence_floor=0.0))
    assert without_floor.partner == "weak"
    with_floor = audit(tables, "a1", candidates=("a2", "weak"))
    assert with_floor.partner == "a2" and "below the floor: weak" in with_floor.reason
    with pytest.raises(NoPairError, match="competence floor"):
        audit(tables, "a1", candidates=("weak",))
    d = audit(tables, "a1")
    assert d.partner != "weak" and "below the floor: weak" in d.reason


def test_pinned_partner_wins_and_exclusions_are_never_chosen(tables: PolicyTables) -> None:
    pinned = Pairings(pinned={"a1": {"audit": "a2"}})
    d = audit(tables, "a1", pairings=pinned)
    assert d.partner == "a2" and "pinned" in d.reason
    best = audit(tables, "a1").partner
    excluded = Pairings(excluded=[(best, "a1")])
    assert audit(tables, "a1", pairings=excluded).partner != best
    # a pin to an excluded partner does not override the exclusion
    both = Pairings(pinned={"a1": {"audit": "a2"}}, excluded=[("a1", "a2")])
    assert audit(tables, "a1", pairings=both).partner != "a2"


def test_unprofiled_models_are_reported(tables: PolicyTables) -> None:
    d = audit(tables, "ghost")
    assert "unprofiled" in d.reason and d.score is None and d.evidence == ()
    assert FAMILY[d.partner] != "G" and "(a family other than 'G')" in d.reason, d.reason
    s = assist(tables, "ghost")
    assert "unprofiled" in s.reason and s.score is None
    assert "(the family of 'G')" in s.reason or "no candidate of the family of 'G'" in s.reason
    assert "ghost" in audit(tables, "a1").reason  # skipped, and said so
    only_ghost = audit(tables, "a1", candidates=("ghost",))
    assert only_ghost.partner == "ghost" and only_ghost.score is None
    assert "unprofiled" in only_ghost.reason


def test_task_domains_change_the_audit_partner(tables: PolicyTables) -> None:
    # in law b1 answers like A, in history b2 does: each domain's auditor is the other one
    law = audit(tables, "a1", {"law": 1.0}, candidates=("b1", "b2"))
    history = audit(tables, "a1", {"history": 1.0}, candidates=("b1", "b2"))
    assert (law.partner, history.partner) == ("b2", "b1")
    assert law.domains == {"law": 1.0} and "law" in law.reason
    assert next(e for e in law.evidence if e.metric == "kappa_p").n_probes == 40
    mixed = audit(tables, "a1", {"law": 0.9, "history": 0.1}, candidates=("b1", "b2"))
    assert mixed.partner == "b2" and list(mixed.domains) == ["law", "history"]
    with pytest.raises(BadRequestError, match="unknown domain"):
        audit(tables, "a1", {"cooking": 1.0})


def test_auto_primary_is_the_most_competent(tables: PolicyTables) -> None:
    d = decide(tables, RouteRequest(role="audit"), {ALL: 1.0}, Pairings(), FLOOR)
    acc = tables.accuracy[0]
    profiled = [i for i, ok in enumerate(tables.profiled) if ok]
    assert acc[tables.index(d.primary)] == max(acc[i] for i in profiled)
    assert d.reason.startswith("primary auto") and d.partner != d.primary


def test_panel_prefers_diverse_auditors_and_reports_n_eff(tables: PolicyTables) -> None:
    d = audit(tables, "a1", panel=2, candidates=("a2", "b1", "b2", "c1"))
    assert len(d.panel) == 2 and d.partner == d.panel[0]
    assert {FAMILY[m] for m in d.panel} == {"B", "C"}  # never two of one family
    assert d.effective_votes is not None and 2.0 < d.effective_votes <= 3.0
    same = tables.sim[0][np.ix_(*[[tables.index(m) for m in ("a1", "b1", "b2")]] * 2)]
    assert d.effective_votes > effective_votes(same)


def test_pool_matching_covers_every_model(tables: PolicyTables) -> None:
    for role in ("audit", "assist"):
        out = assign_pool(tables, role, {ALL: 1.0}, Pairings(), FLOOR)  # type: ignore[arg-type]
        assert sorted(d.primary for d in out) == sorted(tables.models)
        matched = [d for d in out if d.reason.startswith("pool matching")]
        assert len(matched) >= 4
        for d in matched:  # a matching: partners are mutual
            assert next(e for e in out if e.primary == d.partner).partner == d.primary
    assists = {d.primary: d.partner for d in assign_pool(tables, "assist", {ALL: 1.0},
                                                         Pairings(), FLOOR)}
    assert FAMILY[assists["a1"]] == "A"


def synthetic(order: list[str], cost: dict[str, float]) -> PolicyTables:
    """Three models where ``x`` and ``y`` are exactly as similar to ``p``."""
    sims = {("p", "x"): 0.2, ("p", "y"): 0.2, ("x", "y"): 0.5}
    n = len(order)
    kappa = np.eye(n)
    for (a, b), v in sims.items():
        i, j = order.index(a), order.index(b)
        kappa[i, j] = kappa[j, i] = v
    arrays = {"kappa": kappa, "kappa_low": kappa - 0.1, "kappa_high": kappa + 0.1,
              "error_consistency": kappa, "accuracy": np.full(n, 0.8)}
    return make_tables(order, order, [cost[m] for m in order], {ALL: arrays}, [True] * n,
                       {ALL: (50, 50)})


def test_ties_are_deterministic() -> None:
    free = {"p": 0.0, "x": 0.0, "y": 0.0}
    for order in (["p", "x", "y"], ["y", "x", "p"], ["x", "p", "y"]):
        for role in ("audit", "assist"):
            d = decide(synthetic(order, free), RouteRequest(role=role, primary="p"),  # type: ignore[arg-type]
                       {ALL: 1.0}, Pairings(), PolicySettings())
            assert d.partner == "x"  # equal scores and cost: by name
    cheaper_y = synthetic(["p", "x", "y"], {"p": 0.0, "x": 2.0, "y": 1.0})
    d = decide(cheaper_y, RouteRequest(role="assist", primary="p"), {ALL: 1.0}, Pairings(),
               PolicySettings())
    assert d.partner == "y"


def test_cost_limit_is_respected() -> None:
    t = synthetic(["p", "x", "y"], {"p": 0.0, "x": 5.0, "y": 1.0})
    d = decide(t, RouteRequest(role="audit", primary="p"), {ALL: 1.0}, Pairings(),
               PolicySettings(max_cost_per_1k=2.0))
    assert d.partner == "y"
    with pytest.raises(NoPairError):
        decide(t, RouteRequest(role="audit", primary="p"), {ALL: 1.0}, Pairings(),
               PolicySettings(max_cost_per_1k=0.5))


def test_live_outcomes_move_the_choice_and_say_so(tables: PolicyTables) -> None:
    request = RouteRequest(role="assist", primary="a1")
    plain = decide(tables, request, {ALL: 1.0}, NONE, FLOOR)
    assert plain.partner == "a2" and "live" not in plain.reason
    # a2 has disagreed with a1 far more than its profile predicts: its similarity drops below
    # every other candidate's, and the assistant becomes another model
    live = {"a2": (-2.0, 300)}
    moved = decide(tables, request, {ALL: 1.0}, NONE, FLOOR, live=live)
    assert moved.partner != "a2"
    kept = decide(tables, RouteRequest(role="assist", primary="a1"), {ALL: 1.0}, NONE, FLOOR,
                  live={"a2": (+0.05, 40)})
    assert kept.partner == "a2"
    assert "live agreement over 40 comparisons moved its similarity by +0.050" in kept.reason


def test_a_real_no_partner_names_its_cause(tables: PolicyTables) -> None:
    everyone = [m for m in tables.models if m != "a1"]
    with pytest.raises(NoPairError, match=r"excluded from pairing with 'a1': a2") as caught:
        audit(tables, "a1", pairings=Pairings(excluded=[("a1", m) for m in everyone]))
    assert "profile" not in str(caught.value)
    cheap = PolicySettings(max_cost_per_1k=-0.0, competence_floor=0.4)
    priced = make_tables(tables.models, tables.families, [1.0] * len(tables.models),
                         {d: {"kappa": tables.kappa[i], "kappa_low": tables.kappa_low[i],
                              "kappa_high": tables.kappa_high[i],
                              "error_consistency": tables.error_consistency[i],
                              "accuracy": tables.accuracy[i]}
                          for i, d in enumerate(tables.domains)},
                         list(tables.profiled),
                         {d: (int(tables.n_kappa[i]), int(tables.n_gold[i]))
                          for i, d in enumerate(tables.domains)})
    with pytest.raises(NoPairError, match="over the cost or latency limits"):
        audit(priced, "a1", config=cheap)


def audit_decisions(tables: PolicyTables,
                    chooser: PolicyTables) -> Iterator[tuple[int, int, int, list[int], float]]:
    """Every profiled primary and gold domain of ``tables``, with the auditor ``chooser``'s
    audit rule picks: ``(domain row, primary, auditor, the other profiled models, the
    primary's expected right answers)``."""
    profiled = [m for m in tables.models if tables.profiled[tables.index(m)]]
    for d in DOMAINS:
        r = tables.domain_index[d]
        for primary in profiled:
            p = tables.index(primary)
            others = [tables.index(m) for m in profiled if m != primary]
            partner = audit(chooser, primary, {d: 1.0},
                            config=PolicySettings(competence_floor=0.0)).partner
            yield r, p, tables.index(partner), others, tables.accuracy[r, p] * tables.n_gold[r]


def pooled_alarms(tables: PolicyTables) -> tuple[float, float, float]:
    """(the chosen auditors' expected false alarms, a random auditor's, the chosen auditors'
    expected caught errors) over every profiled primary and gold domain, from the tables'
    own estimates, as :func:`router.pairing.policy.calibrated_lambda` defines its budget."""
    assert tables.catch is not None and tables.false_alarm is not None
    chosen = random = caught = 0.0
    for r, p, j, others, right in audit_decisions(tables, tables):
        chosen += right * tables.false_alarm[r, p, j]
        random += right * float(np.mean(tables.false_alarm[r, p, others]))
        caught += (tables.n_gold[r] - right) * tables.catch[r, p, j]
    return chosen, random, caught


NO_HALVES = {"catch_even": None, "catch_odd": None, "false_alarm_even": None,
             "false_alarm_odd": None}


def test_audit_holds_the_pools_false_alarms_to_the_budget(tables: PolicyTables) -> None:
    """Without the halves' rates (older matrices), the budget holds on the estimates the
    choice was made on."""
    results = {}
    budgets = (0.9, 0.95, 1.0, 10.0)  # this pool's auditors can go down to ~0.87×
    for budget in budgets:
        t = dataclasses.replace(tables, false_alarm_budget=budget, **NO_HALVES)
        chosen, random, caught = pooled_alarms(t)
        assert chosen <= budget * random + 1e-6, (budget, chosen, random)
        results[budget] = (t.audit_lambda, chosen, caught)
    # a tighter budget prices false alarms higher, and buys fewer of them with fewer catches
    lams = [results[b][0] for b in budgets]
    assert lams == sorted(lams, reverse=True) and 0 < lams[0] < float("inf") and lams[-1] == 0
    assert results[0.9][1] < results[10.0][1] and results[0.9][2] < results[10.0][2]


def cross_fitted_alarms(tables: PolicyTables, lam: float) -> tuple[float, float]:
    """(the false alarms of the auditors the policy chooses on one half of the gold probes at
    price ``lam``, counted on the other half, both ways averaged; a random auditor's), through
    ``decide`` itself on tables that hold one half's rates."""
    chosen = random = 0.0
    for choose, count in (("even", "odd"), ("odd", "even")):
        half = dataclasses.replace(tables, catch=getattr(tables, f"catch_{choose}"),
                                   false_alarm=getattr(tables, f"false_alarm_{choose}"),
                                   **NO_HALVES)
        object.__setattr__(half, "audit_lambda", lam)
        counted = getattr(tables, f"false_alarm_{count}")
        for r, p, j, others, right in audit_decisions(tables, half):
            chosen += right * counted[r, p, j] / 2
            random += right * float(np.mean(tables.false_alarm[r, p, others])) / 2
    return chosen, random


def test_the_budget_holds_on_probes_the_choice_was_not_made_on(tables: PolicyTables) -> None:
    """The price is cross-fitted: auditors chosen on one half of the gold probes raise, on the
    other half, no more false alarms than the budget allows — where a price chosen on the
    same probes it is counted on exceeds it."""
    assert tables.catch_even is not None and tables.false_alarm_odd is not None
    exceeded = []
    for budget in (1.0, 1.02, 10.0):
        t = dataclasses.replace(tables, false_alarm_budget=budget)
        chosen, random = cross_fitted_alarms(t, t.audit_lambda)
        assert chosen <= budget * random + 1e-6, (budget, chosen, random)
        in_sample = dataclasses.replace(t, **NO_HALVES).audit_lambda
        assert in_sample <= t.audit_lambda, budget
        chosen, random = cross_fitted_alarms(t, in_sample)
        exceeded.append(chosen > budget * random + 1e-6)
    assert 0 < dataclasses.replace(tables, false_alarm_budget=1.0).audit_lambda < float("inf")
    assert exceeded[0], "the in-sample price held the budget on the other half: no test"


def test_without_a_price_on_false_alarms_audit_catches_the_most(tables: PolicyTables) -> None:
    loose = dataclasses.replace(tables, false_alarm_budget=10.0)
    assert loose.audit_lambda == 0 and loose.catch is not None
    for d in DOMAINS:
        r = loose.domain_index[d]
        for primary in ("a1", "b1", "c1"):
            got = audit(loose, primary, {d: 1.0})
            p = loose.index(primary)
            competent = [m for m in loose.models if m not in (primary, "weak", "ghost")]
            best = max(competent, key=lambda m: loose.catch[r, p, loose.index(m)])  # type: ignore[index]
            assert got.partner == best, got.reason
            # a1's family shares its blind spots: its auditor is never from A
            if primary == "a1":
                assert FAMILY[got.partner] != "A"


def test_audit_reason_and_evidence_carry_the_expected_catch(tables: PolicyTables) -> None:
    tables = dataclasses.replace(tables, false_alarm_budget=1.0)  # one the pool can hold
    d = audit(tables, "a1", {"math": 1.0})
    metrics = {e.metric: e for e in d.evidence}
    assert {"catch", "false_alarm"} <= set(metrics)
    assert tables.catch is not None
    r, p, j = tables.domain_index["math"], tables.index("a1"), tables.index(d.partner)
    assert metrics["catch"].value == pytest.approx(tables.catch[r, p, j], abs=1e-4)
    assert metrics["catch"].model == d.partner
    assert "expected to catch the most errors of 'a1'" in d.reason
    assert f"differs on {tables.catch[r, p, j]:.2f} of its wrong answers" in d.reason
    assert "a random candidate" in d.reason and "false alarm costs" in d.reason


def test_an_auditor_never_catches_less_than_a_random_one(tables: PolicyTables) -> None:
    """However tight the false-alarm budget, the auditor is never a candidate that shares the
    primary's blind spots more than a random one (a copy raises few false alarms and catches
    little); when no price holds the budget, the reason says so and the fewest are raised."""
    impossible = dataclasses.replace(tables, false_alarm_budget=0.01)
    assert impossible.audit_lambda == float("inf")
    assert impossible.catch is not None and impossible.false_alarm is not None
    profiled = [m for m in tables.models if tables.profiled[tables.index(m)]]
    for d in DOMAINS:
        r = impossible.domain_index[d]
        for primary in profiled:
            got = audit(impossible, primary, {d: 1.0}, config=PolicySettings(competence_floor=0))
            p = impossible.index(primary)
            others = [impossible.index(m) for m in profiled if m != primary]
            catch = impossible.catch[r, p, others]
            eligible = [j for j, c in zip(others, catch, strict=True) if c >= catch.mean() - 1e-9]
            j = impossible.index(got.partner)
            assert j in eligible, got.reason
            assert impossible.false_alarm[r, p, j] == min(
                impossible.false_alarm[r, p, k] for k in eligible), got.reason
            assert "no price of a false alarm holds" in got.reason
            assert (f"'{got.partner}' raises the fewest false alarms of the candidates expected "
                    f"to catch at least as many errors of '{primary}' as a random one on "
                    in got.reason), got.reason


# --- promises a sweep found broken --------------------------------------------------------


def isolated(tables: PolicyTables, name: str) -> Pairings:
    """``name`` excluded from pairing with every other model."""
    return Pairings(excluded=[(name, other) for other in tables.models if other != name])


def test_auto_skips_a_primary_the_exclusions_leave_without_a_partner(
        tables: PolicyTables) -> None:
    """The most accurate model, excluded with everyone, was picked as `auto` primary: a false
    409 "no partner" while every other model pairs fine."""
    first = audit(tables, "auto").primary
    for role in (audit, assist):
        d = role(tables, "auto", pairings=isolated(tables, first))
        assert d.primary != first and d.partner != first
        assert d.reason.startswith("primary auto: ")


def test_a_panel_seats_the_pinned_auditor_first_and_explains_auto(
        tables: PolicyTables) -> None:
    free = audit(tables, "a1", panel=2)
    assert "a2" not in free.panel  # the same family: the policy would not seat it
    pinned = audit(tables, "a1", panel=2, pairings=Pairings(pinned={"a1": {"audit": "a2"}}))
    assert pinned.panel[0] == "a2" and len(set(pinned.panel)) == 2
    assert "'a2' is pinned" in pinned.reason
    auto = audit(tables, "auto", panel=2)
    assert auto.reason.startswith("primary auto: ") and auto.primary not in auto.panel


def test_a_panel_too_small_names_what_removed_each_model(tables: PolicyTables) -> None:
    """It said "a panel of 3 needs 3 competent auditors, found 1" and nothing of why."""
    floor = PolicySettings(competence_floor=0.0)
    with pytest.raises(NoPairError) as caught:
        audit(tables, "a1", panel=3, candidates=("b1", "b2", "c1"), config=floor,
              pairings=Pairings(excluded=[("a1", "b2")]))
    message = str(caught.value)
    assert "found 2" in message and "excluded from pairing with 'a1': b2" in message
    assert "not among the request's candidates: a2" in message, message
    high = PolicySettings(competence_floor=0.99)
    with pytest.raises(NoPairError, match=r"not above the competence floor 0\.99: a2, b1"):
        audit(tables, "a1", panel=2, config=high)


def test_an_auditor_that_catches_less_than_a_random_one_is_said_to(
        tables: PolicyTables) -> None:
    """The reason said the auditor catches "at least as many errors as a random one" and
    showed it catching fewer."""
    d = audit(tables, "a1", candidates=("a2",))
    assert d.partner == "a2"
    assert "none of which is expected to catch as many as a random one" in d.reason
    assert "at least as many errors" not in d.reason


def test_an_open_circuit_is_named_as_the_cause_not_the_candidates(
        tables: PolicyTables) -> None:
    others = frozenset(m for m in tables.models if m not in ("a1", "b1"))
    with pytest.raises(NoPairError) as caught:
        audit(tables, "a1", blocked=others, pairings=Pairings(excluded=[("a1", "b1")]))
    message = str(caught.value)
    assert "circuit open" in message and "candidates" not in message


def test_the_pool_assignment_goes_on_past_a_model_without_a_partner(
        tables: PolicyTables) -> None:
    """One model excluded with everyone failed `pairs --all` for the whole pool."""
    decisions = assign_pool(tables, "audit", {ALL: 1.0}, isolated(tables, "c1"), FLOOR)
    named = {d.primary for d in decisions}
    assert "c1" not in named and len(named) >= len(tables.models) - 2
