"""``build_decider`` end to end: a scripted pool profiled into a tmp data dir, then decisions
from the text of a task, and the ``diffroute pairs`` command over the same pool."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from router.cli import main
from router.config import Settings, settings_from_mapping
from router.errors import BadRequestError, ConfigError
from router.pairing.decider import PolicyDecider, _request_key, build_decider
from router.pairing.decision import RouteRequest
from router.pairing.pinned import Pairings, pairings_document
from router.pool import Pool
from router.profiling.build import build_profiles
from router.store.sqlite import SqliteStore
from router.testing.simulate import simulated_suite

SAMPLES = 3
NONE = Pairings()
FAMILY = {"a1": "A", "a2": "A", "b1": "B", "b2": "B", "ghost": "G"}
MODELS: list[dict[str, Any]] = [
    {"name": "a1", "family": "A", "backend": {"kind": "scripted", "prior": "A", "seed": 1}},
    {"name": "a2", "family": "A", "backend": {"kind": "scripted", "prior": "A", "seed": 2}},
    {"name": "b1", "family": "B", "cost_per_1k_tokens": 1.0,
     "backend": {"kind": "scripted", "prior": "B", "seed": 3, "domains": {"law": {"prior": "A"}}}},
    {"name": "b2", "family": "B", "cost_per_1k_tokens": 1.0,
     "backend": {"kind": "scripted", "prior": "B", "seed": 4,
                 "domains": {"history": {"prior": "A"}}}},
    {"name": "ghost", "family": "G", "backend": {"kind": "scripted", "prior": "G", "seed": 5}},
]


def make_settings(root: Path, **policy: Any) -> Settings:
    suite_file = root / "sim.jsonl"
    if not suite_file.exists():
        suite = simulated_suite(["history", "law", "math"], 24)
        suite_file.write_text("".join(p.model_dump_json(exclude_none=True) + "\n"
                                      for p in suite.probes), encoding="utf-8")
    ext = {"suite": str(suite_file), "samples": SAMPLES, "bootstrap": 20,
           "competence_floor": 0.25, **policy}
    return settings_from_mapping({"models": MODELS, "data_dir": str(root / "data"),
                                  "policy": ext})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("routing")
    settings = make_settings(root)
    asyncio.run(build_profiles(settings, str(root / "sim.jsonl"), ["a1", "a2", "b1", "b2"],
                               SAMPLES, 0.7, 4))
    return root


def decider(root: Path, pairings: Pairings = NONE, **policy: Any) -> PolicyDecider:
    settings = make_settings(root, **policy)
    return build_decider(settings, Pool(settings), pairings)


def test_build_decider_end_to_end(world: Path) -> None:
    d = decider(world)
    assert d.unprofiled == ["ghost"] and len(d.version) == 12
    assert d.graph.families()["A"] == ["a1", "a2"]
    audit = d.decide(RouteRequest(role="audit", primary="a1"))
    assert FAMILY[audit.partner] == "B" and audit.profile_version == d.version
    assert audit.domains == {"all": 1.0} and "skipped unprofiled: ghost" in audit.reason
    assist = d.decide(RouteRequest(role="assist", primary="a1"))
    assert assist.partner == "a2"
    ghost = d.decide(RouteRequest(role="audit", primary="ghost"))
    assert "unprofiled" in ghost.reason and ghost.score is None


@pytest.mark.parametrize("exact_index_limit", [4096, 10])
def test_task_text_routes_by_domain(world: Path, exact_index_limit: int) -> None:
    # a loose false-alarm budget: audit takes whoever catches the most of a1's errors, which
    # here is the B model that does not share a1's prior in the task's domain
    d = decider(world, exact_index_limit=exact_index_limit, audit_false_alarms=10.0)
    assert d.index is not None and d.index.exact == (exact_index_limit >= len(d.index))
    law = d.decide(RouteRequest(role="audit", primary="a1", task="[law] which option holds?",
                                candidates=("b1", "b2")))
    history = d.decide(RouteRequest(role="audit", primary="a1",
                                    task="[history] which option holds?",
                                    candidates=("b1", "b2")))
    assert max(law.domains, key=law.domains.__getitem__) == "law"
    assert (law.partner, history.partner) == ("b2", "b1")
    forced = d.decide(RouteRequest(role="audit", primary="a1", task="[law] which option holds?",
                                   domain="history", candidates=("b1", "b2")))
    assert forced.partner == "b1" and forced.domains == {"history": 1.0}
    with pytest.raises(BadRequestError):
        d.decide(RouteRequest(role="audit", primary="a1", domain="cooking"))


def test_pinned_pairings_and_limits_come_from_settings(world: Path) -> None:
    pinned = decider(world, Pairings(pinned={"a1": {"audit": "a2"}}))
    assert pinned.decide(RouteRequest(role="audit", primary="a1")).partner == "a2"
    cheap = decider(world, max_cost_per_1k=0.5)  # b1 and b2 cost 1.0
    assert cheap.decide(RouteRequest(role="audit", primary="a1")).partner == "a2"
    with pytest.raises(ConfigError, match=r"policy\.competence_floor"):
        decider(world, competence_floor=3)


def test_version_changes_when_profiles_change(tmp_path: Path, world: Path) -> None:
    before = decider(world).version
    assert decider(world).version == before
    settings = make_settings(world)
    moved = settings.model_copy(update={"data_dir": tmp_path / "data"})
    asyncio.run(build_profiles(moved, str(world / "sim.jsonl"), ["a1", "a2", "ghost"],
                               SAMPLES, 0.7, 4))
    after = build_decider(moved, Pool(moved), Pairings())
    assert after.version != before and after.unprofiled == ["b1", "b2"]


def cli(world: Path, capsys: pytest.CaptureFixture[str], *args: str,
        **policy: Any) -> tuple[int, str, str]:
    config = world / "pool.yaml"
    settings = make_settings(world, **policy)
    import yaml

    config.write_text(yaml.safe_dump({
        "models": MODELS, "data_dir": str(settings.data_dir),
        "policy": settings.policy.model_dump(mode="json")}), encoding="utf-8")
    code = 0
    try:
        main(["pairs", "--config", str(config), *args])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_pairs_command(world: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(world, capsys, "--role", "audit", "--primary", "a1", "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["unprofiled"] == ["ghost"]
    assert FAMILY[data["decisions"][0]["partner"]] == "B"
    code, out, _ = cli(world, capsys, "--role", "assist", "--task", "[law] which option holds?")
    assert code == 0 and "domains: law" in out and "a1 " in out and "unprofiled" in out
    code, out, _ = cli(world, capsys, "--panel", "2", "--primary", "a1", "--format", "json")
    assert json.loads(out)["decisions"][0]["effective_votes"] > 1
    code, out, _ = cli(world, capsys, "--all", "--role", "audit", "--format", "json")
    assert sorted(d["primary"] for d in json.loads(out)["decisions"]) == sorted(FAMILY)
    code, _, err = cli(world, capsys, "--primary", "nobody")
    assert code == 2 and err.count("\n") == 1 and "nobody" in err


def test_pairs_command_says_what_a_false_alarm_costs(
        world: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The pool's price of a false alarm, and whether the budget is within reach, in both
    formats (audit only)."""
    _, out, _ = cli(world, capsys, "--role", "audit", "--format", "json", audit_false_alarms=10.0)
    assert json.loads(out)["audit_price"] == {"false_alarm_budget": 10.0, "price": 0.0,
                                              "reachable": True}
    _, out, _ = cli(world, capsys, "--role", "audit", audit_false_alarms=10.0)
    assert out.splitlines()[-1] == ("audit on gold domains: a false alarm costs 0.00 caught "
                                    "errors, so that the pool's auditors raise at most 10× a "
                                    "random auditor's false alarms")
    _, out, _ = cli(world, capsys, "--role", "audit", "--format", "json", audit_false_alarms=0.01)
    assert json.loads(out)["audit_price"] == {"false_alarm_budget": 0.01, "price": None,
                                              "reachable": False}
    _, out, _ = cli(world, capsys, "--role", "audit", audit_false_alarms=0.01)
    assert out.splitlines()[-1].startswith("audit on gold domains: no price of a false alarm "
                                           "holds the pool's auditors to 0.01×")
    _, out, _ = cli(world, capsys, "--role", "assist", "--format", "json")
    assert "audit_price" not in json.loads(out)


def test_pairs_store_is_read(world: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = SqliteStore(make_settings(world).data_dir)
    asyncio.run(store.save_pairings(pairings_document(Pairings(pinned={"a1": {"audit": "a2"}}))))
    try:
        _, out, _ = cli(world, capsys, "--role", "audit", "--primary", "a1", "--format", "json")
        assert json.loads(out)["decisions"][0]["partner"] == "a2"
    finally:
        store.pairings_path.unlink()


def test_a_model_whose_circuit_is_open_is_neither_partner_nor_auto_primary(world: Path) -> None:
    settings = make_settings(world)
    pool = Pool(settings)
    d = build_decider(settings, pool, NONE)
    audit = RouteRequest(role="audit", primary="a1")
    auto = RouteRequest(role="audit", primary="auto")
    partner, primary = d.decide(audit).partner, d.decide(auto).primary

    def open_circuit(name: str) -> None:
        breaker = pool.get(name)._circuit
        assert breaker is not None
        for _ in range(breaker.config.failures):
            breaker.failed("upstream model timed out")

    open_circuit(partner)
    open_circuit(primary)
    assert pool.blocked() == {partner, primary}
    now = d.decide(audit)
    assert now.partner not in (partner, primary)
    assert d.decide(auto).primary not in (partner, primary)
    # a primary the client names is still its own: its call says whether it answers
    assert d.decide(RouteRequest(role="audit", primary=partner)).primary == partner
    pool.get(partner)._circuit.succeeded()  # type: ignore[union-attr]
    assert d.decide(audit).partner == partner


def test_the_decision_cache_key_holds_every_field_of_the_request() -> None:
    """A field left out of the key would let two different requests share a decision."""
    request = RouteRequest(role="audit", primary="alpha", task="t", candidates=["a", "b"],
                           domain="math", panel=3)
    key = _request_key(request)
    assert key == ("audit", "alpha", "t", ("a", "b"), "math", 3, ())
    assert len(key) == len(dataclasses.fields(RouteRequest))
    assert _request_key(dataclasses.replace(request, task="x" * 100_000)) is None


def test_the_probes_are_embedded_once_per_data_dir_not_at_every_start(world: Path) -> None:
    from profiles.embed import HashEmbedder
    from profiles.store import ObservationStore
    from profiles.suite import load_suite
    from router.pairing.index import question_text
    from router.profiling.sources import StoredEmbedder

    class Counting(HashEmbedder):
        """The hash embedder, counting the texts it is asked for."""

        def __init__(self) -> None:
            super().__init__(64)
            self.asked: list[str] = []

        def embed(self, texts: Sequence[str]) -> Any:
            self.asked += list(texts)
            return super().embed(texts)

    texts = ["a cat", "a dog", "a cat"]
    first = Counting()
    vectors = StoredEmbedder(first, world / "emb").embed(texts)
    assert first.asked == ["a cat", "a dog"]
    assert np.array_equal(vectors, HashEmbedder(64).embed(texts))
    again = Counting()  # a restart: a new process, the same data dir
    assert np.array_equal(StoredEmbedder(again, world / "emb").embed(texts), vectors)
    assert again.asked == [] and StoredEmbedder(again, world / "emb").embed([]).shape == (0, 64)
    # build_decider stores the suite's probe vectors in the data dir
    d = decider(world)
    assert d.embedder is not None
    texts = [question_text(p) for p in load_suite(str(world / "sim.jsonl")).probes]
    with ObservationStore.in_data_dir(make_settings(world).data_dir) as store:
        stored = store.get_embeddings(d.embedder.name, texts)
    assert len(stored) == len(set(texts)) > 0
