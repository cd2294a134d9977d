"""Does the policy pick better pairs? Profiles on one half of the suite, every figure on the other.

For each pool, the suite's probes are split in two halves at random (per domain); the policy's
tables are built from the observations of the first half only, and every figure below is
counted on the second half — never on the probes the profiles saw. Per sample index s, model
m's "call" on a probe is its s-th sampled answer, so a pair's figures compare two independent
calls, as a paired request would.

* **Audit** (gold domains; one decision per primary and domain): the auditor's *catch rate*
  P(auditor disagrees | primary wrong), its *false-alarm rate* P(disagrees | primary right) and
  the *same-wrong rate* P(both wrong with the same answer), for the policy's auditor, a random
  auditor (the exact mean over every other model), the most similar model (the assist choice)
  and the most accurate model (on the profile half).
* **Assist** (domains without gold): how often the assistant gives the answer the primary would
  have given (P(same answer)), and its cost, for the policy's assistant, a random one and the
  cheapest; and how often the policy's assistant of a primary with a planted prior-sharing
  partner *is* that partner.
* **Panels**: for each primary and gold domain, the policy's panel of two auditors and random
  panels: the predicted effective number of independent votes N_eff and the accuracy of the
  three-way majority (ties: the primary's answer).

Intervals are 95 % bootstrap intervals over the held-out probes (500 draws).

Simulated pools: scripted models in families (``router.backends.scripted``: models sharing a
prior share their blind spots) where a "teacher" prior is shared across families in some gold
domains, and cross-family pairs share priors on one domain without gold only; ``--pools`` pools
with different seeds. The embedded real pool: the shipped profiles, split the same way.

Run: ``python -m benchmarks.pairing_value [--pools 4] [--samples 5] [--per-domain 80]
[--sharpness "0.75,0.95;0.95,1.0"]``
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from benchmarks._common import print_table
from profiles.collect import Decoding
from profiles.extract import numbers_match
from profiles.matrix import pool_matrix
from profiles.probe import Probe
from profiles.profile import Profile
from profiles.store import ObservationStore
from profiles.suite import Suite
from router.config import ModelConfig, PolicySettings
from router.pairing.decider import tables_from_matrix
from router.pairing.decision import RouteRequest
from router.pairing.pinned import Pairings
from router.pairing.policy import PolicyTables, decide, effective_votes
from router.testing.simulate import profile_models, scripted_model, simulated_suite

FloatArray = npt.NDArray[np.float64]
GOLD = ("history", "law", "math", "science")
NO_GOLD = ("identity", "values")
DRAWS = 500
POLICY = [PolicySettings()]
"""The policy settings under test (the defaults unless ``--policy`` changes some)."""


# --- the planted pool ---------------------------------------------------------------------------

SCENARIOS = ("families", "consensus")
"""Where the planted blind spots run: through some families in some domains (``families``), or
through most of the pool in every gold domain (``consensus``: one teacher's mistakes, which only
the two unrelated models do not make)."""


def planted_pool(seed: int, sharpness: tuple[float, float] = (0.75, 0.95),
                 scenario: str = "families",
                 ) -> tuple[list[ModelConfig], dict[tuple[str, str], str]]:
    """Models, and (model, domain) → its planted prior-sharing partner on a domain w/o gold.

    Families A (3 models), B (2), C (2), D, E. ``families``: a teacher prior ``T`` is shared by
    A, B and c1/b2/a3 in ``math`` and ``law`` (their blind spots coincide there), ``H`` by A
    and B in ``history``, nothing in ``science``. ``consensus``: ``T`` is shared by all of A,
    B and C in every gold domain; only D and E answer from their own priors. In both, on
    ``values`` a2 and c1 share prior ``V``, on ``identity`` b1 and d1 share ``I``.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r} (one of {', '.join(SCENARIOS)})")
    rng = np.random.default_rng(seed)

    def acc() -> float:
        return round(float(rng.uniform(0.55, 0.8)), 2)

    if scenario == "consensus":
        teacher = {d: {"prior": "T"} for d in GOLD}
        history: dict[str, dict[str, str]] = {}
    else:
        teacher = {"math": {"prior": "T"}, "law": {"prior": "T"}}
        history = {"history": {"prior": "H"}}
    spec = [
        ("a1", "A", {**teacher, **history}),
        ("a2", "A", {**teacher, **history, "values": {"prior": "V"}}),
        ("a3", "A", {**teacher}),
        ("b1", "B", {**teacher, **history, "identity": {"prior": "I"}}),
        ("b2", "B", {**teacher}),
        ("c1", "C", {**teacher, "values": {"prior": "V"}}),
        ("c2", "C", teacher if scenario == "consensus" else {}),
        ("d1", "D", {"identity": {"prior": "I"}}),
        ("e1", "E", {}),
    ]
    models = []
    for i, (name, family, domains) in enumerate(spec):
        per = {d: {**b, "accuracy": acc()} for d, b in domains.items()}
        cost = round(float(rng.uniform(0.1, 2.0)), 2)
        sharp = round(float(rng.uniform(*sharpness)), 2)
        cfg = scripted_model(name, family=family, prior=f"{family}{seed}", seed=seed * 100 + i,
                             accuracy=acc(), sharpness=sharp, domains=per)
        models.append(cfg.model_copy(update={"cost_per_1k_tokens": cost}))
    planted = {("a2", "values"): "c1", ("c1", "values"): "a2",
               ("b1", "identity"): "d1", ("d1", "identity"): "b1"}
    return models, planted


def planted_suite(per_domain: int) -> Suite:
    gold = simulated_suite(list(GOLD), per_domain)
    free = simulated_suite(list(NO_GOLD), per_domain, with_gold=False)
    return Suite(gold.manifest, gold.probes + free.probes)


def halves(suite: Suite, seed: int) -> tuple[Suite, list[Probe]]:
    """(the profile half as a suite, the evaluation half): half of each domain's probes each."""
    rng = np.random.default_rng(seed)
    profile, held = [], []
    by_domain: dict[str, list[Probe]] = {}
    for p in suite.probes:
        by_domain.setdefault(p.domains[0], []).append(p)
    for probes in by_domain.values():
        order = rng.permutation(len(probes))
        cut = len(probes) // 2
        profile += [probes[i] for i in order[:cut]]
        held += [probes[i] for i in order[cut:]]
    return Suite(suite.manifest, tuple(profile)), held


# --- answers on the held-out half ------------------------------------------------------------

@dataclass
class Held:
    """Sampled answers (models, probes, k) as codes (-1 missing), gold codes, domains."""

    models: tuple[str, ...]
    codes: npt.NDArray[np.int64]
    gold: npt.NDArray[np.int64]
    domains: list[str]


def held_answers(profiles: Sequence[Profile], probes: Sequence[Probe]) -> Held:
    k = max(len(r.values) for prof in profiles for r in prof.records.values())
    codes = np.full((len(profiles), len(probes), k), -1, dtype=np.int64)
    gold = np.full(len(probes), -1, dtype=np.int64)
    for j, probe in enumerate(probes):
        seen: dict[str, int] = {}
        for i, prof in enumerate(profiles):
            record = prof.records.get(probe.id)
            for s, value in enumerate(record.values[:k] if record else ()):
                if value is not None:
                    codes[i, j, s] = seen.setdefault(_canonical(value, seen), len(seen))
        if probe.gold is not None:
            gold[j] = seen.get(_canonical(probe.gold, seen), -2)
    return Held(tuple(p.model for p in profiles), codes, gold, [p.domains[0] for p in probes])


def _canonical(value: str, seen: dict[str, int]) -> str:
    """Numeric answers equal as numbers count as one answer."""
    return next((v for v in seen if v == value or _same_number(v, value)), value)


def _same_number(a: str, b: str) -> bool:
    try:
        return numbers_match(a, b)
    except ValueError:
        return False


@dataclass
class PairCounts:
    """Per held-out probe: counts over sample indices (both answered)."""

    wrong: FloatArray
    caught: FloatArray
    right: FloatArray
    alarms: FloatArray
    same_wrong: FloatArray
    same: FloatArray
    calls: FloatArray


def pair_counts(held: Held, p: int, a: int, cols: npt.NDArray[np.int64]) -> PairCounts:
    x, y = held.codes[p][cols], held.codes[a][cols]
    both = (x >= 0) & (y >= 0)
    gold = held.gold[cols][:, None]
    has_gold = gold != -1
    wrong = both & has_gold & (x != gold)
    right = both & has_gold & (x == gold)
    differ = both & (x != y)
    return PairCounts(wrong.sum(1), (wrong & differ).sum(1), right.sum(1),
                      (right & differ).sum(1), (wrong & ~differ).sum(1),
                      (both & ~differ).sum(1), both.sum(1))


# --- the figures ------------------------------------------------------------------------------

Rate = Callable[[PairCounts, npt.NDArray[np.int64]], float]


def _ratio(num: FloatArray, den: FloatArray, idx: npt.NDArray[np.int64]) -> float:
    d = den[idx].sum()
    return float(num[idx].sum() / d) if d else float("nan")


def catch(c: PairCounts, i: npt.NDArray[np.int64]) -> float:
    return _ratio(c.caught, c.wrong, i)


def false_alarm(c: PairCounts, i: npt.NDArray[np.int64]) -> float:
    return _ratio(c.alarms, c.right, i)


def same_wrong(c: PairCounts, i: npt.NDArray[np.int64]) -> float:
    return _ratio(c.same_wrong, c.calls, i)


def same_answer(c: PairCounts, i: npt.NDArray[np.int64]) -> float:
    return _ratio(c.same, c.calls, i)


def merged(parts: Sequence[PairCounts], weights: Sequence[float] | None = None) -> PairCounts:
    """Counts of several (primary, partner) decisions stacked along the probe axis; a random
    partner is the weighted mix of every candidate's counts (weights sum to 1 per decision)."""
    w = list(weights) if weights is not None else [1.0] * len(parts)
    fields = ("wrong", "caught", "right", "alarms", "same_wrong", "same", "calls")
    return PairCounts(*(np.concatenate([getattr(c, f) * wt for c, wt in zip(parts, w,
                                                                             strict=True)])
                        for f in fields))


def interval(rate: Rate, counts: PairCounts, rng: np.random.Generator) -> str:
    n = len(counts.calls)
    value = rate(counts, np.arange(n))
    draws = [rate(counts, rng.integers(0, n, n)) for _ in range(DRAWS)]
    low, high = np.nanpercentile(draws, [2.5, 97.5])
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def ratio_interval(rate: Rate, a: PairCounts, b: PairCounts,
                   rng: np.random.Generator) -> str:
    """rate(a)/rate(b) with a paired bootstrap (a and b are stacked in the same probe order)."""
    n = len(a.calls)
    full = np.arange(n)
    draws = []
    for _ in range(DRAWS):
        i = rng.integers(0, n, n)
        draws.append(rate(a, i) / rate(b, i))
    low, high = np.nanpercentile(draws, [2.5, 97.5])
    return f"{rate(a, full) / rate(b, full):.2f}× [{low:.2f}, {high:.2f}]"


# --- one pool -----------------------------------------------------------------------------------

@dataclass
class PoolResult:
    """Stacked counts per strategy and role, and the planted-partner hits."""

    audit: dict[str, list[PairCounts]]
    assist: dict[str, list[PairCounts]]
    assist_cost: dict[str, list[float]]
    planted_hits: int
    planted_total: int
    panels: list[tuple[str, float, float]]
    audit_lambda: float = 0.0
    """The policy's price of a false alarm in this pool (``inf``: no price holds the budget)."""


def evaluate(tables: PolicyTables, held: Held, cost: dict[str, float],
             planted: dict[tuple[str, str], str], rng: np.random.Generator,
             gold_domains: Sequence[str] = GOLD) -> PoolResult:
    """Audit figures on ``gold_domains``, assist figures on the others."""
    config = POLICY[0]
    models = list(held.models)
    out = PoolResult({k: [] for k in ("policy", "random", "most similar", "most accurate",
                                      "oracle", "oracle, never below chance")},
                     {k: [] for k in ("policy", "random", "cheapest")},
                     {k: [] for k in ("policy", "random", "cheapest")}, 0, 0, [],
                     tables.audit_lambda)
    domains = np.array(held.domains)
    decisions: list[tuple[dict[str, PairCounts], PairCounts]] = []
    for domain in sorted(set(held.domains)):
        cols = np.flatnonzero(domains == domain)
        row = tables.domain_index[domain]
        for primary in models:
            p = models.index(primary)
            others = [m for m in models if m != primary]
            counts = {m: pair_counts(held, p, models.index(m), cols) for m in others}
            rand = merged([counts[m] for m in others], [1 / len(others)] * len(others))
            rand = _summed(rand, len(others))
            if domain in gold_domains:
                audit = _decide(tables, "audit", primary, domain, config)
                similar = _decide(tables, "assist", primary, domain, config)
                acc = {m: tables.accuracy[row, tables.index(m)] for m in others}
                best = max(others, key=lambda m: (acc[m], -cost[m], m))
                decisions.append((counts, rand))
                for name, partner in (("policy", audit), ("most similar", similar),
                                      ("most accurate", best)):
                    out.audit[name].append(counts[partner])
                out.audit["random"].append(rand)
                out.panels += _panels(tables, held, primary, domain, cols, config, rng)
            else:
                assist = _decide(tables, "assist", primary, domain, config)
                cheapest = min(others, key=lambda m: (cost[m], m))
                out.assist["policy"].append(counts[assist])
                out.assist["cheapest"].append(counts[cheapest])
                out.assist["random"].append(rand)
                out.assist_cost["policy"].append(cost[assist])
                out.assist_cost["cheapest"].append(cost[cheapest])
                out.assist_cost["random"].append(float(np.mean([cost[m] for m in others])))
                if (primary, domain) in planted:
                    out.planted_total += 1
                    out.planted_hits += assist == planted[(primary, domain)]
    out.audit["oracle"] = _oracle(decisions)
    out.audit["oracle, never below chance"] = _oracle(decisions, never_below_chance=True)
    return out


def _oracle(decisions: Sequence[tuple[dict[str, PairCounts], PairCounts]],
            never_below_chance: bool = False) -> list[PairCounts]:
    """The auditors that catch the most errors on the *held-out* answers while raising, over
    all decisions of the pool, no more false alarms than random auditors do.

    It reads the answers every figure is counted on, so no policy (which reads the profile
    half only) can beat it: it bounds what is reachable under the false-alarm condition. Each
    decision takes the candidate with the most ``caught − λ·alarms``; λ is the smallest (by
    bisection) at which the pooled false-alarm rate is no higher than random's.

    ``never_below_chance``: under the policy's first audit rule too — only candidates that
    catch, on those answers, at least as many errors as a random auditor; where no λ holds the
    budget, each decision's fewest false alarms among them (as the policy does).
    """
    def totals(c: PairCounts) -> tuple[float, float]:
        return float(c.caught.sum()), float(c.alarms.sum())

    budget = sum(totals(rand)[1] for _, rand in decisions)

    def candidates(counts: dict[str, PairCounts], rand: PairCounts) -> list[str]:
        names = sorted(counts)
        if not never_below_chance:
            return names
        chance = totals(rand)[0]  # ``rand`` holds the mean over the candidates
        return [m for m in names if totals(counts[m])[0] >= chance - 1e-9] or names

    def pick(lam: float) -> list[str]:
        if np.isinf(lam):
            return [min(candidates(c, r), key=lambda m: totals(c[m])[1]) for c, r in decisions]
        return [max(candidates(c, r), key=lambda m: totals(c[m])[0] - lam * totals(c[m])[1])
                for c, r in decisions]

    def alarms(choice: list[str]) -> float:
        return sum(totals(c[m])[1] for (c, _), m in zip(decisions, choice, strict=True))

    low, high = 0.0, 64.0
    if alarms(pick(float("inf"))) > budget:
        low = float("inf")
    elif alarms(pick(low)) > budget:
        for _ in range(40):
            mid = (low + high) / 2
            low, high = (low, mid) if alarms(pick(mid)) <= budget else (mid, high)
        low = high
    return [c[m] for (c, _), m in zip(decisions, pick(low), strict=True)]


def _summed(mix: PairCounts, parts: int) -> PairCounts:
    """The stacked weighted counts of ``parts`` candidates folded back to one per probe."""
    fields = ("wrong", "caught", "right", "alarms", "same_wrong", "same", "calls")
    return PairCounts(*(getattr(mix, f).reshape(parts, -1).sum(0) for f in fields))


def _decide(tables: PolicyTables, role: str, primary: str, domain: str,
            config: PolicySettings) -> str:
    request = RouteRequest(role=role, primary=primary, domain=domain)  # type: ignore[arg-type]
    return decide(tables, request, {domain: 1.0}, Pairings(), config).partner


def _panels(tables: PolicyTables, held: Held, primary: str, domain: str,
            cols: npt.NDArray[np.int64], config: PolicySettings,
            rng: np.random.Generator) -> list[tuple[str, float, float]]:
    """(strategy, predicted N_eff, majority accuracy) of the policy's panel and 5 random ones."""
    request = RouteRequest(role="audit", primary=primary, domain=domain, panel=2)
    chosen = decide(tables, request, {domain: 1.0}, Pairings(), config)
    others = [m for m in held.models if m != primary]
    rows = [("policy", list(chosen.panel))]
    rows += [("random", list(rng.choice(others, 2, replace=False))) for _ in range(5)]
    d = tables.domain_index[domain]
    out = []
    for name, panel in rows:
        members = [tables.index(m) for m in (primary, *panel)]
        rho = tables.sim[d][np.ix_(members, members)]
        out.append((name, effective_votes(rho), _majority(held, [primary, *panel], cols)))
    return out


def _majority(held: Held, members: Sequence[str], cols: npt.NDArray[np.int64]) -> float:
    codes = held.codes[[held.models.index(m) for m in members]][:, cols]  # (3, P, k)
    gold = held.gold[cols][:, None]
    a, b, c = codes
    vote = np.where((b == c) & (b >= 0), b, a)  # two auditors outvote the primary
    ok = (a >= 0) & (gold >= 0)
    return float(((vote == gold) & ok).sum() / max(ok.sum(), 1))


# --- runs -------------------------------------------------------------------------------------

def simulated(pools: int, samples: int, per_domain: int, sharpness: tuple[float, float],
              scenario: str = "families") -> list[PoolResult]:
    results = []
    for seed in range(1, pools + 1):
        models, planted = planted_pool(seed, sharpness, scenario)
        suite = planted_suite(per_domain)
        with tempfile.TemporaryDirectory() as tmp:
            store = ObservationStore.in_data_dir(Path(tmp))
            with store:
                profiles = asyncio.run(profile_models(models, suite, store,
                                                      Decoding(samples=samples, temperature=1.0)))
        profile_half, held = halves(suite, seed)
        matrix = pool_matrix(profiles, profile_half, bootstrap=50, seed=seed)
        tables = tables_from_matrix(matrix, models, POLICY[0], f"sim{seed}")
        cost = {m.name: m.cost_per_1k_tokens for m in models}
        results.append(evaluate(tables, held_answers(profiles, held), cost, planted,
                                np.random.default_rng(seed)))
    return results


def report(results: Sequence[PoolResult], title: str, rng: np.random.Generator) -> None:
    print(f"\n== {title}")
    audit = {k: merged([c for r in results for c in r.audit[k]]) for k in results[0].audit}
    if len(audit["policy"].calls):
        rows = [[k, interval(catch, c, rng), interval(false_alarm, c, rng),
                 interval(same_wrong, c, rng)] for k, c in audit.items()]
        print_table(["auditor", "catch P(differ|primary wrong)", "false alarm P(differ|right)",
                     "same wrong"], rows)
        for name in ("policy", "oracle", "oracle, never below chance"):
            print(f"{name} / random catch:",
                  ratio_interval(catch, audit[name], audit["random"], rng),
                  "  false alarm:",
                  ratio_interval(false_alarm, audit[name], audit["random"], rng))
        print("policy's price of a false alarm per pool (caught errors; inf: the budget is out "
              "of reach, the fewest false alarms):",
              ", ".join(f"{r.audit_lambda:.2f}" for r in results))
    assist = {k: merged([c for r in results for c in r.assist[k]]) for k in results[0].assist}
    if len(assist["policy"].calls):
        rows = [[k, interval(same_answer, c, rng),
                 f"{np.mean([x for r in results for x in r.assist_cost[k]]):.2f}"]
                for k, c in assist.items()]
        print_table(["assistant", "P(same answer as primary)", "mean cost / 1k"], rows)
    hits = sum(r.planted_hits for r in results)
    total = sum(r.planted_total for r in results)
    if total:
        print(f"assist partner is the planted prior-sharing model: {hits}/{total} = "
              f"{hits / total:.3f}")
    panels = [row for r in results for row in r.panels]
    if panels:
        rows = []
        for name in ("policy", "random"):
            mine = [(n, acc) for s, n, acc in panels if s == name]
            rows.append([name, f"{np.mean([n for n, _ in mine]):.2f}",
                         f"{np.mean([a for _, a in mine]):.3f}", str(len(mine))])
        print_table(["panel of 2 auditors", "predicted N_eff (of 3)", "majority accuracy",
                     "panels"], rows)
        n_eff = np.array([n for _, n, _ in panels])
        accuracy = np.array([a for _, _, a in panels])
        print(f"every panel: correlation of predicted N_eff with majority accuracy "
              f"{np.corrcoef(n_eff, accuracy)[0, 1]:+.2f} ({len(panels)} panels)")


def embedded(rng: np.random.Generator) -> PoolResult | None:
    """The shipped profiles of the embedded pool, split in halves of the default suite."""
    from router.embedded import default_settings
    from router.pairing.decider import load_profiles
    from router.pool import Pool
    from router.profiling.sources import ProfileQuery, open_suite

    with tempfile.TemporaryDirectory() as tmp:
        settings = default_settings(Path(tmp))
        suite = open_suite("default")
        found = load_profiles(settings, Pool(settings), suite, ProfileQuery("default"))
    profiles = [p for p, _ in found.values() if p is not None]
    if len(profiles) < 3:
        return None
    profile_half, held = halves(suite, 0)
    matrix = pool_matrix(profiles, profile_half, bootstrap=50)
    models = [m for m in settings.models if m.name in matrix.models]
    tables = tables_from_matrix(matrix, models, POLICY[0], "embedded")
    cost = {m.name: m.cost_per_1k_tokens for m in models}
    gold_domains = sorted({p.domains[0] for p in suite.probes if p.gold is not None})
    return evaluate(tables, held_answers(profiles, held), cost, {}, rng, gold_domains)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pools", type=int, default=4)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--per-domain", type=int, default=80)
    parser.add_argument("--sharpness", default="0.75,0.95",
                        help="range of the models' sharpness (share of samples that are the "
                             "preferred answer); several ranges separated by ';'")
    parser.add_argument("--scenario", default=",".join(SCENARIOS),
                        help="where the blind spots run (comma-separated): " + "; ".join(
                            f"{s}" for s in SCENARIOS))
    parser.add_argument("--policy", action="append", default=[], metavar="KEY=VALUE",
                        help="a policy setting other than its default (repeatable), e.g. "
                             "audit_false_alarms=0.9")
    parser.add_argument("--skip-embedded", action="store_true")
    args = parser.parse_args()
    if args.policy:
        POLICY[0] = PolicySettings.model_validate(dict(kv.split("=", 1) for kv in args.policy))
    rng = np.random.default_rng(0)
    for scenario in args.scenario.split(",") if args.pools else []:
        for spec in args.sharpness.split(";"):
            low, high = (float(x) for x in spec.split(","))
            report(simulated(args.pools, args.samples, args.per_domain, (low, high), scenario),
                   f"simulated pools ({scenario}): {args.pools} × 9 scripted models, "
                   f"{len(GOLD)} gold + {len(NO_GOLD)} no-gold domains × {args.per_domain} "
                   f"probes, k = {args.samples}, sharpness {low}–{high}", rng)
    if not args.skip_embedded:
        result = embedded(rng)
        if result is not None:
            report([result], "embedded pool, shipped profiles", rng)


if __name__ == "__main__":
    main()
