"""Semantic noise floors from real profiles whose answers include some without words."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from profiles.embed import HashEmbedder, Vectors
from profiles.suite import load_suite
from router.live.baseline import build_baseline, semantic_floors
from tests.members import MEMBERS, member_profiles


class NanForWordless:
    """An endpoint that sends NaN vectors for texts without a word."""

    name, dim = "nan-for-wordless", 256

    def embed(self, texts: Sequence[str]) -> Vectors:
        vectors = HashEmbedder().embed(texts)
        vectors[[not re.search(r"\w", t) for t in texts]] = float("nan")
        return vectors

    async def aembed(self, texts: Sequence[str]) -> Vectors:
        return self.embed(texts)


def test_floors_skip_unusable_samples_and_stay_finite() -> None:
    suite = load_suite("default")
    profiles = member_profiles()
    good = semantic_floors(profiles, suite, HashEmbedder())
    with capture_logs() as logs:
        zeroed = semantic_floors(profiles, suite, NanForWordless())
    assert set(zeroed) == set(good) and all(math.isfinite(v) for v in zeroed.values())
    # smol-b has no answer without words: its floors are untouched
    assert {k: v for k, v in zeroed.items() if k[0] == MEMBERS[1]} == \
        {k: v for k, v in good.items() if k[0] == MEMBERS[1]}
    # smol-a's emoji answer to instr-031 is left out; four usable samples keep the probe
    assert logs == []
    baseline = build_baseline(list(profiles), suite, NanForWordless())
    threshold = baseline.semantic_threshold(MEMBERS, "instructions")
    assert threshold is not None and math.isfinite(threshold)


def test_a_live_suite_that_is_not_there_fails_the_start(tmp_path: Path) -> None:
    """`live.suite: nosuch` started a service that compared without any noise floor (one
    `live.no_baseline` warning), while `policy.suite: nosuch` failed the start."""
    from router.config import settings_from_mapping
    from router.errors import ConfigError
    from router.live.sink import load_baseline

    settings = settings_from_mapping({
        "data_dir": str(tmp_path), "live": {"suite": "no-such-suite"},
        "models": [{"name": "a", "backend": {"kind": "scripted"}}]})
    with pytest.raises(ConfigError, match=r"^live\.suite: no suite 'no-such-suite'"):
        load_baseline(settings, strict=True)
    assert load_baseline(settings).agreement == {}  # a reload later: degraded, not a crash
