"""The embedded pool, from its shipped measured profiles: a SmolLM2 model is audited by a Gemma
model and assisted by a SmolLM2 variant. The policy knows no model names; this test reads the
families from the pool's configuration and the evidence from the decisions."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.embedded import default_settings
from router.pairing.decider import build_decider
from router.pairing.decision import RouteRequest
from router.pairing.pinned import Pairings
from router.pool import Pool


def test_smollm2_is_audited_by_gemma_and_assisted_by_smollm2(tmp_path: Path) -> None:
    settings = default_settings(tmp_path / "data")  # an empty store: only shipped profiles
    family = {m.name: m.family_name for m in settings.models}
    decider = build_decider(settings, Pool(settings), Pairings())
    smol = [m for m in decider.tables.models if family[m] == "smollm2"
            and m not in decider.unprofiled]
    assert smol, "no profiled SmolLM2 model"
    for primary in smol:
        audit = decider.decide(RouteRequest(role="audit", primary=primary))
        assist = decider.decide(RouteRequest(role="assist", primary=primary))
        assert family[audit.partner] == "gemma3", audit.reason
        assert family[assist.partner] == "smollm2", assist.reason
        # the evidence behind it: the assistant agrees beyond chance more than the auditor
        assert audit.score is not None and assist.score is not None
        assert assist.score > audit.score
        kappa = next(e for e in audit.evidence if e.metric == "kappa_p")
        assert kappa.n_probes > 0 and kappa.model == audit.partner


def test_every_domain_of_the_suite_gets_both_roles(tmp_path: Path) -> None:
    """No false "no partner": a profiled pool pairs every primary in every domain, and where a
    domain lacks a measure the reason says which evidence stood in for it."""
    settings = default_settings(tmp_path / "data")
    decider = build_decider(settings, Pool(settings), Pairings())
    profiled = [m for m in decider.tables.models if m not in decider.unprofiled]
    for domain in decider.tables.domains:
        for role in ("assist", "audit"):
            for primary in [*profiled, "auto"]:
                request = RouteRequest(role=role, primary=None if primary == "auto" else
                                       primary, domain=domain)
                d = decider.decide(request)
                assert d.partner != d.primary and d.score is not None, (domain, role, d.reason)
                if decider.tables.sim_fallback[decider.tables.domain_index[domain]].all():
                    assert "fell back" in d.reason


def test_pairs_command_pairs_every_domain_for_both_roles(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``diffroute pairs --domain D`` on the embedded pool: every domain of the shipped suite,
    both roles, a partner for every model (no "no partner" row)."""
    import json

    from profiles.suite import load_suite
    from router.cli import main

    domains = sorted({d for p in load_suite("default").probes for d in p.domains})
    assert len(domains) == 12
    for domain in domains:
        try:
            main(["pairs", "--data-dir", str(tmp_path / "data"), "--domain", domain,
                  "--format", "json"])
        except SystemExit as exc:
            assert not exc.code, (domain, capsys.readouterr().err)
        rows = json.loads(capsys.readouterr().out)["decisions"]
        assert {r["role"] for r in rows} == {"assist", "audit"}
        assert len(rows) == 8 and all("error" not in r and r["partner"] for r in rows), rows
        assert all(r["domains"] == {domain: 1.0} for r in rows)
