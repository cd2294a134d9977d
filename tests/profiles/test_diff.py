"""The diff engine on the varied synthetic generator: calibration, power and the refusals."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.stats import binom

from profiles.collect import Decoding
from profiles.diff import compute_diff
from profiles.profile import ProbeRecord, Profile
from profiles.synthetic import Shift, World, synthetic_pair

SMALL = World(domains=6, probes=(20, 30))
NUDGE_06 = 0.21  # nudge_sd giving 0.06 mean TV between two requests' answer distributions


def test_false_flag_rate_over_200_null_pairs_is_at_most_q_domain() -> None:
    """≥ 200 seeded null pairs with per-request nudges: pairs flagging any domain ≤ 2.5 %.

    The count is tested against Binomial(200, 0.025): more than its 99.9th percentile fails.
    500 re-splits still resolve p = 1/501 below BH's smallest threshold here (0.02/6).
    """
    world = dataclasses.replace(SMALL, nudge_sd=NUDGE_06)
    pairs = 200
    flagging = 0
    for seed in range(pairs):
        pair = synthetic_pair(seed, 5, None, world)
        diff = compute_diff(pair.a, pair.b, pair.suite, seed=seed, n_permutations=500,
                            n_resamples=20)
        flagging += bool(diff.flagged_domains)
    assert flagging <= binom.ppf(0.999, pairs, 0.025)


def test_twenty_point_shifts_are_found_with_all_samples_at_k_20() -> None:
    """The domain permutation test over all samples (the old per-half interval found ~half)."""
    found = 0
    for seed in range(10):
        pair = synthetic_pair(seed, 20, Shift(0.20), SMALL)
        diff = compute_diff(pair.a, pair.b, pair.suite, seed=seed, n_permutations=1000,
                            n_resamples=50)
        found += set(diff.flagged_domains) == pair.planted
    assert found >= 8


def test_the_shift_reads_in_points_of_moved_answer_mass() -> None:
    pair = synthetic_pair(3, 20, Shift(0.30), SMALL)
    diff = compute_diff(pair.a, pair.b, pair.suite, n_permutations=500, n_resamples=500)
    planted = diff.domain(next(iter(pair.planted)))
    assert planted.flagged and planted.status == "flagged"
    # moved min(30 points, the modal answer's mass) on every probe: close to 30, not 0.09
    assert 20 < planted.shift < 35 and planted.shift_low < planted.shift < planted.shift_high


def test_flagged_domains_are_confirmed_on_the_fresh_collection() -> None:
    pair = synthetic_pair(4, 10, Shift(0.40), SMALL)
    diff = compute_diff(pair.a, pair.b, pair.suite, n_permutations=500, n_resamples=50)
    assert diff.flagged_domains == sorted(pair.planted)
    assert diff.overall.flagged and diff.overall.replicated is None  # its own test
    assert diff.domain(diff.flagged_domains[0]).replicated is True
    assert diff.settings["confirm_samples"] == 10
    without = compute_diff(pair.a, dataclasses.replace(pair.b, confirm_records={}), pair.suite,
                           n_permutations=500, n_resamples=50)
    assert without.domain(without.flagged_domains[0]).replicated is None
    assert any("replication not tested: no confirm collection for b" in n for n in without.notes)


def _with(profile: Profile, probe_id: str, texts: tuple[str, ...]) -> Profile:
    values = tuple(t if t in "ABCD" else None for t in texts)
    records = {**profile.records, probe_id: ProbeRecord(probe_id, probe_id, texts, values)}
    return dataclasses.replace(profile, records=records)


def test_one_probe_with_one_sample_is_left_out_not_the_whole_diff() -> None:
    pair = synthetic_pair(5, 5, None, SMALL)
    probe = pair.suite.probes[0].id
    a = _with(pair.a, probe, ("A",))
    diff = compute_diff(a, pair.b, pair.suite, n_permutations=200, n_resamples=20)
    assert diff.n_probes_tested == len(pair.suite.probes) - 1
    assert any("fewer than 2 samples" in n and probe in n for n in diff.notes)


def test_identical_samples_from_both_models_are_refused() -> None:
    pair = synthetic_pair(6, 5, None, SMALL)
    probe = pair.suite.probes[1].id
    texts = ("A", "B", "A", "C", "D")  # deviations matched sample by sample
    diff = compute_diff(_with(pair.a, probe, texts), _with(pair.b, probe, texts), pair.suite,
                        n_permutations=200, n_resamples=20)
    assert diff.n_probes_tested == len(pair.suite.probes) - 1
    assert any("identical samples from both models" in n for n in diff.notes)


def test_greedy_profiles_are_not_tested() -> None:
    pair = synthetic_pair(7, 5, Shift(0.5), SMALL)
    greedy = dataclasses.replace(pair.b, decoding=Decoding(samples=5, temperature=0.0))
    diff = compute_diff(pair.a, greedy, pair.suite, n_permutations=200, n_resamples=20)
    assert diff.n_probes_tested == 0 and not diff.flagged_domains
    assert any("temperature 0" in n for n in diff.notes)
    assert all(d.status == "too small" for d in diff.domains)


def test_small_domains_are_reported_too_small_and_never_flagged() -> None:
    pair = synthetic_pair(8, 10, Shift(0.6, 6), SMALL)
    keep = {p.id for d in pair.suite.domains() for p in
            [q for q in pair.suite.probes if d in q.domains][:4]}
    a = dataclasses.replace(pair.a, records={k: v for k, v in pair.a.records.items()
                                             if k in keep})
    diff = compute_diff(a, pair.b, pair.suite, n_permutations=200, n_resamples=20)
    assert not diff.flagged_domains
    assert all(d.status == "too small" and d.pvalue is None for d in diff.domains)
    assert all(d.shift > 20 for d in diff.domains)  # the effect is still shown
    assert any("too small to test" in n for n in diff.notes)


def test_diff_json_is_schema_2_with_points() -> None:
    pair = synthetic_pair(9, 5, None, SMALL)
    data = compute_diff(pair.a, pair.b, pair.suite, n_permutations=100,
                        n_resamples=20).to_json()
    assert data["schema"] == "diffroute.diff/2"
    row = data["domains"][0]
    assert {"shift", "shift_low", "shift_high", "pvalue", "qvalue", "status",
            "confirm_pvalue"} <= set(row)
    assert data["settings"]["domain_correction"] == "benjamini-hochberg"
    assert np.isfinite(row["shift"]) and row["status"] in ("flagged", "not flagged")


@pytest.mark.parametrize("k", [5])
def test_coupled_one_request_samples_are_what_the_null_excludes(k: int) -> None:
    """With one shared request per probe (the old collection) a large nudge is flagged as a
    difference: the reason collection now makes one request per sample."""
    shared = World(domains=6, probes=(20, 30), nudge_sd=1.0, one_request_per_probe=True)
    independent = dataclasses.replace(shared, one_request_per_probe=False)
    coupled_flags = independent_flags = 0
    for seed in range(10):
        for world in (shared, independent):
            pair = synthetic_pair(seed, k, None, world)
            diff = compute_diff(pair.a, pair.b, pair.suite, seed=seed, n_permutations=500,
                                n_resamples=20)
            if world is shared:
                coupled_flags += bool(diff.flagged_domains)
            else:
                independent_flags += bool(diff.flagged_domains)
    assert coupled_flags >= 5 and independent_flags <= 1


def test_a_null_diff_still_says_it_has_a_confirm_collection() -> None:
    pair = synthetic_pair(10, 5, None, SMALL)
    diff = compute_diff(pair.a, pair.b, pair.suite, n_permutations=100, n_resamples=20)
    assert diff.settings["confirm_samples"] == 5 and not diff.overall.flagged
    assert all(d.replicated is None for d in diff.domains)  # nothing flagged: nothing to confirm
