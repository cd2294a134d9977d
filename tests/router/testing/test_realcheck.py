"""The real-model check: a bias planted by system prompt ranks first among flagged domains."""

from __future__ import annotations

from pathlib import Path

from router.testing.realcheck import PLANTED, planted_bias_check


def test_planted_bias_in_smollm2_ranks_first(tmp_path: Path) -> None:
    result = planted_bias_check(samples=6, per_domain=14, data_dir=tmp_path)
    assert result.ranking, "no domain flagged"
    assert result.ranks_first, f"ranking {result.ranking}, planted {PLANTED}"
    planted = result.diff.domain(PLANTED)
    assert planted.flagged and planted.shift_low > 0
