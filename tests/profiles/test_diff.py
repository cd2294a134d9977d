"""The diff engine: calibration, power and refusals on the varied synthetic generator
(issue #13); ``compute_diff`` on real answers without words (issue #19), and probes it cannot score.

The profiles are real SmolLM2 answers of two pool members (``tests/members.py``): ten
default-suite probes at k = 5, among them ``"```"``, ``"---"`` and a row of emoji. Every
embedder must score them all; a probe an embedder cannot score is left out with a note, and the
diff of the rest goes on.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np
import pytest
from scipy.stats import binom

from profiles.collect import Decoding
from profiles.diff import Diff, compute_diff
from profiles.embed import EmbeddingError, HashEmbedder, MiniLMEmbedder, Vectors
from profiles.matrix import pool_matrix
from profiles.profile import ProbeRecord, Profile
from profiles.report import render_text
from profiles.suite import Suite, load_suite
from profiles.synthetic import Shift, World, synthetic_pair
from tests.members import MEMBERS, WORDLESS, member_profiles

SMALL = World(domains=6, probes=(20, 30))
NUDGE_06 = 0.21  # nudge_sd giving 0.06 mean TV between two requests' answer distributions
WORD = re.compile(r"\w")
FREE = ("instr-028", "instr-029", "instr-030", "instr-031", "instr-032", "instr-033",
        "instr-034")


@pytest.fixture(scope="module")
def suite() -> Suite:
    return load_suite("default")


@pytest.fixture(scope="module")
def members() -> tuple[Profile, Profile]:
    return member_profiles()


class WordlessAs:
    """The hash embedder, except that texts without a word embed to ``value`` (zero: what the
    hash embedder did before #19; NaN: what a broken endpoint may send)."""

    def __init__(self, value: float) -> None:
        self.inner = HashEmbedder()
        self.value = value
        self.name = f"wordless-{value}"
        self.dim = self.inner.dim

    def embed(self, texts: Sequence[str]) -> Vectors:
        vectors = self.inner.embed(texts)
        vectors[[not WORD.search(t) for t in texts]] = self.value
        return vectors

    async def aembed(self, texts: Sequence[str]) -> Vectors:
        return self.embed(texts)


class RefusesWordless:
    """An endpoint that answers 400 to any batch holding a text without a word."""

    name = "refuses-wordless"
    dim = 256

    def __init__(self, status: int = 400) -> None:
        self.status = status
        self.batches = 0

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.batches += 1
        if any(not WORD.search(t) for t in texts):
            raise EmbeddingError("https://emb.example/v1/embeddings answered", self.status,
                                 '{"error": "input has no tokens"}')
        return HashEmbedder().embed(texts)

    async def aembed(self, texts: Sequence[str]) -> Vectors:
        return self.embed(texts)


def test_the_fixture_holds_the_answers_of_the_issue(members: tuple[Profile, Profile]) -> None:
    by_name = dict(zip(MEMBERS, members, strict=True))
    for (member, probe_id), text in WORDLESS.items():
        assert text in by_name[member].records[probe_id].texts
    assert all(len(r.texts) == 5 for p in members for r in p.records.values())


@pytest.mark.parametrize("embedder", [HashEmbedder(), MiniLMEmbedder()],
                         ids=["hash", "minilm"])
def test_every_real_answer_is_scored(members: tuple[Profile, Profile], suite: Suite,
                                     embedder: HashEmbedder | MiniLMEmbedder) -> None:
    diff = compute_diff(*members, suite, embedder=embedder, n_permutations=500,
                        n_resamples=500)
    assert diff.left_out == [] and not any("left out" in n for n in diff.notes)
    assert diff.n_probes_tested == 10 and diff.settings["samples"] == 5
    instructions = diff.domain("instructions")
    assert instructions.n_probes == len(FREE)
    assert np.isfinite([instructions.shift, instructions.shift_low,
                        instructions.shift_high]).all()
    # the same weights under two seeds: their free answers do not part beyond their noise
    assert not instructions.flagged


def test_two_models_answering_a_fence_agree_and_a_fence_is_not_code() -> None:
    fence = "```"
    code = '```json\n{\n  "name": "Ana",\n  "age": 30\n}\n```'  # smol-b on instr-029
    probe = "instr-029"
    a, b = member_profiles()
    same = [fence] * 5
    apart = [code] * 5
    for records, texts in ((a.records, same), (b.records, same)):
        records[probe] = dataclasses.replace(records[probe], texts=tuple(texts))
    full = load_suite("default")
    suite = Suite(full.manifest, tuple(p for p in full.probes if p.id == probe))
    agree = compute_diff(a, b, suite, n_permutations=200, n_resamples=200)
    assert agree.left_out == [] and agree.overall.shift == pytest.approx(0.0, abs=1e-6)
    b.records[probe] = dataclasses.replace(b.records[probe], texts=tuple(apart))
    differ = compute_diff(a, b, suite, n_permutations=200, n_resamples=200)
    assert differ.overall.shift > 80


@pytest.mark.parametrize("value", [0.0, np.nan], ids=["zero", "nan"])
def test_an_unusable_embedding_leaves_its_probe_out_with_a_note(
        members: tuple[Profile, Profile], suite: Suite, value: float) -> None:
    diff = compute_diff(*members, suite, embedder=WordlessAs(value), n_permutations=500,
                        n_resamples=500)
    assert [x.probe_id for x in diff.left_out] == ["instr-031"]
    assert "1 of its 10 answers embed to a zero or non-finite vector" in diff.left_out[0].reason
    assert any(n.startswith("probe instr-031 left out:") for n in diff.notes)
    assert diff.n_probes_tested == 9 and diff.domain("instructions").n_probes == len(FREE) - 1
    assert np.isfinite(diff.domain("instructions").shift)
    assert diff.to_json()["left_out"] == [{"probe_id": "instr-031",
                                            "reason": diff.left_out[0].reason}]
    assert "instr-031 left out" in render_text(diff, color=False)


def test_an_endpoint_refusing_an_input_costs_only_that_probe(
        members: tuple[Profile, Profile], suite: Suite) -> None:
    embedder = RefusesWordless()
    diff = compute_diff(*members, suite, embedder=embedder, n_permutations=500,
                        n_resamples=500)
    assert [x.probe_id for x in diff.left_out] == ["instr-031"]
    assert "refused its answers" in diff.left_out[0].reason
    assert "input has no tokens" in diff.left_out[0].reason
    assert embedder.batches == 1 + len(FREE)  # the batch, then each free probe alone
    assert diff.n_probes_tested == 9


def test_an_embedder_that_fails_itself_still_fails_the_diff(
        members: tuple[Profile, Profile], suite: Suite) -> None:
    with pytest.raises(EmbeddingError):  # a 500 is the endpoint's fault, not one probe's
        compute_diff(*members, suite, embedder=RefusesWordless(status=500))


def test_no_scorable_probe_is_a_value_error(members: tuple[Profile, Profile],
                                            suite: Suite) -> None:
    class Zero(WordlessAs):
        def embed(self, texts: Sequence[str]) -> Vectors:
            return np.zeros((len(texts), self.dim), dtype=np.float32)

    with pytest.raises(ValueError, match="no shared probe could be scored: instr-028"):
        compute_diff(*members, suite, embedder=Zero(0.0), domain="instructions")


def _with_samples(profile: Profile, probe_id: str, n: int) -> Profile:
    record = profile.records[probe_id]
    records = {**profile.records, probe_id: dataclasses.replace(
        record, texts=record.texts[:n], values=record.values[:n])}
    return dataclasses.replace(profile, records=records)


@pytest.mark.parametrize("n", [1, 3])
def test_a_probe_cut_short_is_left_out_and_k_stays(
        members: tuple[Profile, Profile], suite: Suite, n: int) -> None:
    a, b = members  # an interrupted build: one probe has fewer samples than the others
    diff = compute_diff(a, _with_samples(b, "instr-030", n), suite, n_permutations=200,
                        n_resamples=200)
    assert [x.probe_id for x in diff.left_out] == ["instr-030"]
    assert f"too few samples (5 of smol-a, {n} of smol-b; the diff uses 5" in \
        diff.left_out[0].reason
    assert diff.settings["samples"] == 5 and diff.n_probes_tested == 9
    assert any(note.startswith("probe instr-030 left out: too few") for note in diff.notes)


def test_k_is_what_most_probes_have(members: tuple[Profile, Profile], suite: Suite) -> None:
    a, b = members
    for probe_id in b.records:
        if probe_id != "instr-030":
            b = _with_samples(b, probe_id, 3)
    diff = compute_diff(a, b, suite, n_permutations=200, n_resamples=200)
    assert diff.settings["samples"] == 3 and diff.left_out == []
    assert diff.n_probes_tested == 10  # instr-030's five samples are used as three


def _corrupt_probs(profile: Profile, probe_id: str) -> Profile:
    record = profile.records[probe_id]
    assert record.option_probs, "a real choice record has first-token probabilities"
    bad = (float("nan"), *record.option_probs[1:])
    return dataclasses.replace(profile, records={
        **profile.records, probe_id: dataclasses.replace(record, option_probs=bad)})


def test_unusable_option_probabilities_fall_back_to_sampled_answers(
        members: tuple[Profile, Profile], suite: Suite) -> None:
    a, b = members
    corrupt = _corrupt_probs(b, "code-031")
    diff: Diff = compute_diff(a, corrupt, suite, n_permutations=200, n_resamples=200)
    assert diff.left_out == [] and diff.n_probes_tested == 10
    assert any("option probabilities not usable" in n and "code-031 (smol-b)" in n
               for n in diff.notes)
    # the matrix (and the policy built on it) reads that probe from its sampled answers
    without = dataclasses.replace(corrupt, records={**corrupt.records, "code-031":
                                  dataclasses.replace(corrupt.records["code-031"],
                                                      option_probs=None)})
    got, expected = (pool_matrix([a, p], suite, bootstrap=0).domains["code"]
                     for p in (corrupt, without))
    assert np.array_equal(got.agreement, expected.agreement, equal_nan=True)
    assert np.array_equal(got.kappa, expected.kappa, equal_nan=True)


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
    # a build stopped early in its confirm pass: a few probes confirmed, the domain not tested
    # (it was "not replicated", a real difference reported as noise)
    first = sorted(pair.b.confirm_records)[:2]
    partial = dataclasses.replace(pair.b, confirm_records={
        pid: pair.b.confirm_records[pid] for pid in first})
    stopped = compute_diff(pair.a, partial, pair.suite, n_permutations=500, n_resamples=50)
    row = stopped.domain(stopped.flagged_domains[0])
    assert row.replicated is None and row.confirm_pvalue is None
    assert any(f"replication of {row.name} not tested" in n for n in stopped.notes), stopped.notes


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
    assert [x.probe_id for x in diff.left_out] == [probe]
    assert any("too few samples" in n and probe in n for n in diff.notes)


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
    # said as nothing tested, not as "no difference" (nor as a missing confirm collection)
    text = render_text(diff)
    assert "no probe differs beyond noise" not in text and "no confirm collection" not in text
    assert f"nothing tested: all {len(pair.suite.probes)} shared probes were left out" in text


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


def test_a_probe_whose_every_answer_changed_is_significant_alone() -> None:
    """k = 20, one probe answered "B" by A and "D" by B every time, the rest alike: its exact
    p-value is 2/C(40, 20) ≈ 1e-11, but at 2,000 re-splits it read 1/2001, above BH's first
    threshold 0.05/m — so no probe could be significant alone, and this one was not even a
    hunk. The nominally significant probes now get the re-splits BH needs."""
    pair = synthetic_pair(11, 20, None, SMALL)
    probe = pair.suite.probes[3].id
    a, b = _with(pair.a, probe, ("B",) * 20), _with(pair.b, probe, ("D",) * 20)
    diff = compute_diff(a, b, pair.suite, seed=1, n_resamples=20)
    assert len(pair.suite.probes) / 0.05 > 2001  # the default re-splits are too coarse here
    hunk = next((h for h in diff.hunks if h.probe_id == probe), None)
    assert hunk is not None and hunk.significant, [(h.probe_id, h.pvalue) for h in diff.hunks]
    assert hunk.pvalue < 0.05 / len(pair.suite.probes)


def test_refining_many_changed_probes_costs_about_what_one_alone_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every nominally significant probe got 2m/q re-splits: the work grew as (changed
    probes) × m, and a diff of 2,000 probes at k = 20 with half of them changed took 128 s
    instead of 5 (a 20,000-probe suite: hours, holding ``/v1/profiles/diff``'s one slot).
    Together, n probes no re-split reached need n·q/m each for BH, not q/m."""
    import profiles.diff as diff_module

    world = World(domains=6, probes=(100, 100))
    pair = synthetic_pair(14, 20, Shift(0.9, domains=3), world)
    splits_made: list[int] = []
    real = diff_module._split_matrix

    def counted(probes: Sequence[object], *args: object) -> object:
        if args[5] == 3 + 7:  # (a, b, k, embedder, n_perm, seed, …): the probes' refinement
            splits_made.append(len(probes) * int(args[4]))  # type: ignore[call-overload]
        return real(probes, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(diff_module, "_split_matrix", counted)
    diff = compute_diff(pair.a, pair.b, pair.suite, seed=3, n_resamples=20)
    assert diff.n_significant > 100  # the changed probes are found…
    # …for about one probe's refinement (2m/q), not one per changed probe
    assert sum(splits_made) <= 4 * 2 * diff.n_probes_tested / 0.05, splits_made


def test_a_suite_of_many_domains_can_still_flag_one() -> None:
    """45 domains (an MMLU-like suite has 57): at 2,000 joint re-splits a domain's least
    p-value, 1/2001, is above BH's first threshold 0.02/45, so a domain whose every answer
    moved was "0 of 45 domains flagged". The nominally significant domains now get the
    re-splits BH needs."""
    many = World(domains=45, probes=(5, 6))
    pair = synthetic_pair(12, 20, Shift(0.9), many)
    diff = compute_diff(pair.a, pair.b, pair.suite, seed=2, n_resamples=20)
    assert 0.02 / len(diff.domains) < 1 / 2001
    assert diff.flagged_domains == sorted(pair.planted), [
        (d.name, d.pvalue) for d in diff.domains if d.name in pair.planted]
