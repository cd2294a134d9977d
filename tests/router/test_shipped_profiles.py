"""The shipped profiles of the embedded pool, measured on the real models at the default k with
a confirm collection (issue #13): real models against themselves flag nothing, and the diffs
between members are replicated, not "not tested".

* *twice*: each shipped model's profile against its own confirm collection (the same model
  profiled twice: other seeds, later requests);
* *copy*: SmolLM2 against ``smollm2-copy`` — the same weights and settings under another pool
  name, so another cache key and other seeds — collected the same way on the same machine
  (``tests/data/smollm2-copy.json.gz``, written by ``benchmarks/real_null.py --export``; its
  confirm collection was not needed: a domain is flagged on the first collection).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from profiles.collect import DEFAULT_SAMPLES
from profiles.diff import Diff, compute_diff
from profiles.embed import Embedder, make_embedder
from profiles.profile import Profile
from profiles.suite import load_suite
from router.config import PROFILE_SAMPLES
from router.embedded import default_settings
from router.profiling.sources import shipped_profiles_dir

MODELS = ("smollm2", "smollm2-terse", "gemma3", "gemma3-cool")
COPY = Path(__file__).resolve().parents[1] / "data" / "smollm2-copy.json.gz"


def shipped(name: str) -> Profile:
    return Profile.load(Path(str(shipped_profiles_dir().joinpath(f"{name}.json.gz"))))


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    """The hash embedder scores free-text answers here: MiniLM in pure numpy takes minutes per
    diff at k = 20 on two cores (``benchmarks/real_null.py`` runs both)."""
    return make_embedder("hash")


def nothing_flagged(diff: Diff) -> None:
    tested = [d for d in diff.domains if d.pvalue is not None]
    assert len(tested) >= 10, [d.name for d in diff.domains]
    assert diff.flagged_domains == [], [(d.name, d.pvalue, d.shift) for d in diff.domains
                                        if d.flagged]


def test_shipped_profiles_are_built_at_the_default_k_with_a_confirm_collection() -> None:
    suite = load_suite("default")
    for name in MODELS:
        profile = shipped(name)
        assert profile.decoding.samples == DEFAULT_SAMPLES
        assert len(profile.records) == len(profile.confirm_records) == len(suite.probes)
        assert all(len(r.values) == DEFAULT_SAMPLES for r in profile.records.values())
    # what the CLI builds and the service reads by default (the policy and the live baseline)
    settings = default_settings()
    assert PROFILE_SAMPLES == DEFAULT_SAMPLES == settings.policy.samples
    assert settings.live.profile_samples == DEFAULT_SAMPLES


@pytest.mark.parametrize("name", MODELS)
def test_a_real_model_profiled_twice_flags_nothing(name: str, embedder: Embedder) -> None:
    one = shipped(name)
    first = dataclasses.replace(one, confirm_records={})
    again = dataclasses.replace(one, model=f"{name}-again", records=one.confirm_records,
                                confirm_records={})
    nothing_flagged(compute_diff(first, again, load_suite("default"), embedder=embedder))


def test_a_real_model_against_a_copy_of_itself_flags_nothing(embedder: Embedder) -> None:
    copy = Profile.load(COPY)
    one = shipped("smollm2")
    assert copy.model == "smollm2-copy" and copy.model_key == one.model_key  # same settings
    # its own samples (own cache key and seeds), not the first name's answers again
    differ = sum(copy.records[p].values != r.values for p, r in one.records.items())
    assert differ > len(one.records) // 2
    assert copy.decoding == one.decoding and len(copy.records) == len(one.records)
    nothing_flagged(compute_diff(one, copy, load_suite("default"), embedder=embedder))


def test_the_embedded_pools_diffs_are_replicated(tmp_path: Path) -> None:
    """SmolLM2 and Gemma 3 differ, and every flagged domain was tested on the confirm
    collections (``diffroute diff smollm2 gemma3`` on a fresh install)."""
    from router.profiling.sources import ProfileQuery, diff_models

    settings = default_settings(tmp_path)
    diff = diff_models(settings, "smollm2", "gemma3", ProfileQuery("default"))
    assert diff.flagged_domains
    assert not [n for n in diff.notes if "replication not tested" in n]
    flagged = [d for d in diff.domains if d.flagged]
    assert all(d.replicated is not None for d in flagged)
    assert sum(bool(d.replicated) for d in flagged) >= len(flagged) // 2


def test_the_build_config_is_the_embedded_pool(tmp_path: Path) -> None:
    """``router/data/embedded-build.yaml`` (what the README's rebuild command uses) collects
    under the embedded pool's cache keys, k requests at a time."""
    from profiles.store import observation_key
    from router.config import load_settings
    from router.pool import Pool

    path = Path(__file__).resolve().parents[2] / "router" / "data" / "embedded-build.yaml"
    build, embedded = load_settings(path), default_settings(tmp_path)
    keys = [{m.name: observation_key(m.name, pool.get(m.name).identity())
             for m in settings.models}
            for settings, pool in ((build, Pool(build)), (embedded, Pool(embedded)))]
    assert keys[0] == keys[1] and list(keys[0]) == list(MODELS)
    assert all(m.max_concurrency == DEFAULT_SAMPLES for m in build.models)
