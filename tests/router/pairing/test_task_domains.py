"""Task → domains with the default configuration, measured on everyday prompts written outside
the suite (``benchmarks/data/task_domains.jsonl``; ``benchmarks/task_domains.py`` prints the
full table). The weights of all-MiniLM-L6-v2 ship in the run command's install."""

from __future__ import annotations

import json
from pathlib import Path

from profiles.suite import load_suite
from router.embedded import default_settings
from router.live.rates import wilson_interval
from router.pairing.decider import build_decider
from router.pairing.decision import RouteRequest
from router.pairing.index import elsewhere_texts, question_text
from router.pairing.pinned import Pairings
from router.pool import Pool

HELD_OUT = Path(__file__).parents[3] / "benchmarks" / "data" / "task_domains.jsonl"


def test_default_install_routes_everyday_prompts_to_their_domain(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in HELD_OUT.read_text().splitlines() if line.strip()]
    settings = default_settings(tmp_path / "data")
    decider = build_decider(settings, Pool(settings), Pairings())
    suite_texts = {q.lower() for q in _suite_questions()}
    hits = total = 0
    for row in rows:
        assert row["task"].lower() not in suite_texts, row  # held out: none is a probe
        weights = decider.task_domains(RouteRequest(role="audit", task=row["task"]))
        if row["domain"] == "all":
            continue
        total += 1
        hits += max(weights, key=weights.__getitem__) == row["domain"]
    assert total >= 60
    low, _ = wilson_interval(hits, total)
    assert hits / total >= 0.9 and low > 0.8, (hits, total)


def test_a_prompt_that_fits_no_domain_gets_all(tmp_path: Path) -> None:
    """30 everyday requests outside the suite (none of them one of ``elsewhere.txt``'s): with
    ``policy.elsewhere`` (the default) 26 get ``all``; without it most get a confident wrong
    domain (the suite's own floor cannot tell them from its everyday questions)."""
    rows = [json.loads(line) for line in HELD_OUT.read_text().splitlines() if line.strip()]
    off_topic = [row["task"] for row in rows if row["domain"] == "all"]
    anchors = {t.lower() for t in elsewhere_texts()}
    assert len(off_topic) >= 30 and not any(t.lower() in anchors for t in off_topic)
    settings = default_settings(tmp_path / "data")
    decider = build_decider(settings, Pool(settings), Pairings())
    given_all = [t for t in off_topic
                 if decider.task_domains(RouteRequest(role="audit", task=t)) == {"all": 1.0}]
    assert len(given_all) >= 0.8 * len(off_topic), sorted(set(off_topic) - set(given_all))
    policy = settings.policy.model_copy(update={"elsewhere": False})
    without = build_decider(settings.model_copy(update={"policy": policy}), Pool(settings),
                            Pairings())
    confident = [t for t in off_topic
                 if max(without.task_domains(RouteRequest(role="audit", task=t)).values()) > 0.5]
    assert len(confident) > len(off_topic) - len(given_all), confident


def test_small_talk_about_the_model_gets_both_roles(tmp_path: Path) -> None:
    settings = default_settings(tmp_path / "data")
    decider = build_decider(settings, Pool(settings), Pairings())
    for role in ("audit", "assist"):
        for primary in ("smollm2", None):
            d = decider.decide(RouteRequest(role=role, primary=primary,
                                            task="Do you have feelings?"))
            assert max(d.domains, key=d.domains.__getitem__) == "identity"
            assert d.partner != d.primary


def test_a_task_without_words_fits_no_domain(tmp_path: Path) -> None:
    settings = default_settings(tmp_path / "data")
    decider = build_decider(settings, Pool(settings), Pairings())
    for task in ("```", "🌟🌟🌍🌈", " ?! -- ", "Is 🌍 round?"):
        weights = decider.task_domains(RouteRequest(role="audit", task=task))
        assert (weights == {"all": 1.0}) == (task != "Is 🌍 round?"), (task, weights)


def _suite_questions() -> list[str]:
    return [question_text(p).split("\n")[0] for p in load_suite("default").probes]
