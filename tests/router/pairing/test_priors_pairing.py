"""Pairing on priors where no answer is right, on a planted pool of scripted models.

``math`` and ``law`` have gold; ``values`` has none. ``x`` and ``y`` are of different families
and share nothing but their priors on ``values`` (there both prefer what prior ``S`` prefers,
``y`` less sharply); ``c1`` and ``c2`` are two copies of one model (same parameters, their own
sampling seeds); ``a1`` is one more family.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from profiles.collect import Decoding
from profiles.matrix import pool_matrix
from profiles.store import ObservationStore
from profiles.suite import Suite
from router.config import ModelConfig
from router.pairing.decider import tables_from_matrix
from router.pairing.decision import RouteRequest
from router.pairing.pinned import Pairings
from router.pairing.policy import PolicySettings, PolicyTables, decide
from router.testing.simulate import profile_models, scripted_model, simulated_suite

SHARED = {"values": {"prior": "S", "accuracy": 0.0}}


def configs() -> list[ModelConfig]:
    return [
        scripted_model("x", prior="X", seed=1, domains=SHARED),
        scripted_model("y", prior="Y", seed=2,
                       domains={"values": {**SHARED["values"], "sharpness": 0.6}}),
        scripted_model("c1", family="C", prior="C", seed=3),
        scripted_model("c2", family="C", prior="C", seed=4),
        scripted_model("a1", prior="A", seed=5),
    ]


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> PolicyTables:
    gold = simulated_suite(["law", "math"], 40)
    values = simulated_suite(["values"], 40, with_gold=False)
    suite = Suite(gold.manifest, gold.probes + values.probes)
    pool = configs()
    store = ObservationStore.in_data_dir(Path(tmp_path_factory.mktemp("priors")))
    with store:
        profiles = asyncio.run(profile_models(pool, suite, store, Decoding(samples=5)))
    matrix = pool_matrix(profiles, suite, bootstrap=50)
    assert matrix.domains["values"].n_kappa == 0 and matrix.domains["values"].n_prior == 40
    return tables_from_matrix(matrix, pool, PolicySettings(), "v1")


def pair(tables: PolicyTables, role: str, primary: str, domain: str):  # type: ignore[no-untyped-def]
    request = RouteRequest(role=role, primary=primary, domain=domain)  # type: ignore[arg-type]
    return decide(tables, request, {domain: 1.0}, Pairings(), PolicySettings())


def test_priors_shared_only_on_values_pair_for_assist_there_and_not_for_audit(
        tables: PolicyTables) -> None:
    assist = pair(tables, "assist", "x", "values")
    assert assist.partner == "y", assist.reason
    assert "prior agreement" in assist.reason and "fell back" not in assist.reason
    prior = next(e for e in assist.evidence if e.metric == "prior_agreement")
    assert prior.n_probes == 40 and prior.value is not None and prior.value > 0.5
    similarity = next(e for e in assist.evidence if e.metric == "similarity")
    assert similarity.interval is not None and similarity.interval[0] > 0.3
    audit = pair(tables, "audit", "x", "values")
    assert audit.partner != "y", audit.reason
    # where they share nothing, they are no closer than unrelated models
    x, y = tables.index("x"), tables.index("y")
    for domain in ("law", "math"):
        row = tables.domain_index[domain]
        assert tables.sim[row, x, y] < 0.2 < tables.sim[tables.domain_index["values"], x, y]


def test_two_copies_of_one_model_are_the_most_similar_pair_in_every_domain(
        tables: PolicyTables) -> None:
    c1, c2 = tables.index("c1"), tables.index("c2")
    for d, name in enumerate(tables.domains):
        sim = tables.sim[d].copy()
        np.fill_diagonal(sim, np.nan)
        best = np.unravel_index(np.nanargmax(sim), sim.shape)
        assert set(best) == {c1, c2}, (name, tables.models[best[0]], tables.models[best[1]])
