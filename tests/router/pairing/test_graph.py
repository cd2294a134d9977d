"""The similarity graph on a simulated pool with two clean planted families and a loner."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from profiles.collect import Decoding
from profiles.matrix import PoolMatrix, pool_matrix
from profiles.profile import Profile
from profiles.store import ObservationStore
from profiles.suite import Suite
from router.pairing.graph import build_graph
from router.testing.simulate import profile_models, scripted_model, simulated_suite

FAMILIES = {"a1": "A", "a2": "A", "b1": "B", "b2": "B", "c1": "C", "ghost": "G"}


@pytest.fixture(scope="module")
def profiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Profile], Suite]:
    suite = simulated_suite(["history", "law"], 40)
    configs = [scripted_model(n, prior=FAMILIES[n], seed=i)
               for i, n in enumerate(["a1", "a2", "b1", "b2", "c1"])]
    with ObservationStore.in_data_dir(Path(tmp_path_factory.mktemp("graph"))) as store:
        profiles = asyncio.run(profile_models(configs, suite, store, Decoding(samples=3)))
    return profiles, suite


def matrix_of(profiled: tuple[list[Profile], Suite]) -> PoolMatrix:
    return pool_matrix(profiled[0], profiled[1], bootstrap=30)


def test_nodes_and_edges_carry_the_evidence(profiled: tuple[list[Profile], Suite]) -> None:
    g = build_graph(matrix_of(profiled), FAMILIES, unprofiled=["ghost"])
    assert g.models == ["a1", "a2", "b1", "b2", "c1", "ghost"]
    node = g.graph.nodes["a1"]
    assert node["family"] == "A" and set(node["accuracy"]) == {"all", "history", "law"}
    assert g.graph.nodes["ghost"]["profiled"] is False and g.graph.degree("ghost") == 0
    same, cross = g.edge("a1", "a2"), g.edge("a1", "b1")
    assert same is not None and cross is not None
    assert same["kappa"] > cross["kappa"] + 0.2
    low, high = same["interval"]
    assert low <= same["kappa"] <= high
    assert same["n_kappa"] == 80 and g.edge("a1", "a2", "law")["n_kappa"] == 40  # type: ignore[index]
    assert {"error_consistency", "agreement"} <= set(same)


def test_families_configured_and_detected(profiled: tuple[list[Profile], Suite]) -> None:
    g = build_graph(matrix_of(profiled), FAMILIES, unprofiled=["ghost"])
    assert g.families() == {"A": ["a1", "a2"], "B": ["b1", "b2"], "C": ["c1"], "G": ["ghost"]}
    assert g.communities() == [["a1", "a2"], ["b1", "b2"], ["c1"]]
    data = g.to_json()
    assert data["version"] == g.version and len(data["edges"]) == 10


def test_version_changes_with_the_profiles(profiled: tuple[list[Profile], Suite]) -> None:
    profiles, suite = profiled
    first = build_graph(matrix_of(profiled), FAMILIES).version
    assert build_graph(matrix_of(profiled), FAMILIES).version == first  # stable
    fewer = dataclasses.replace(profiles[0], records=dict(list(profiles[0].records.items())[:50]))
    changed = pool_matrix([fewer, *profiles[1:]], suite, bootstrap=30)
    assert build_graph(changed, FAMILIES).version != first
    assert build_graph(matrix_of(profiled), {**FAMILIES, "c1": "B"}).version != first
