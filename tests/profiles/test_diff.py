"""``compute_diff`` on real answers without words (issue #19), and probes it cannot score.

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

from profiles.diff import Diff, compute_diff
from profiles.embed import EmbeddingError, HashEmbedder, MiniLMEmbedder, Vectors
from profiles.matrix import pool_matrix
from profiles.profile import Profile
from profiles.report import render_text
from profiles.suite import Suite, load_suite
from tests.members import MEMBERS, WORDLESS, member_profiles

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
    assert np.isfinite([instructions.divergence, instructions.divergence_low,
                        instructions.divergence_high]).all()
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
    assert agree.left_out == [] and agree.overall.divergence == pytest.approx(0.0, abs=1e-9)
    b.records[probe] = dataclasses.replace(b.records[probe], texts=tuple(apart))
    differ = compute_diff(a, b, suite, n_permutations=200, n_resamples=200)
    assert differ.overall.divergence > 0.8


@pytest.mark.parametrize("value", [0.0, np.nan], ids=["zero", "nan"])
def test_an_unusable_embedding_leaves_its_probe_out_with_a_note(
        members: tuple[Profile, Profile], suite: Suite, value: float) -> None:
    diff = compute_diff(*members, suite, embedder=WordlessAs(value), n_permutations=500,
                        n_resamples=500)
    assert [x.probe_id for x in diff.left_out] == ["instr-031"]
    assert "1 of its 10 answers embed to a zero or non-finite vector" in diff.left_out[0].reason
    assert any(n.startswith("probe instr-031 left out:") for n in diff.notes)
    assert diff.n_probes_tested == 9 and diff.domain("instructions").n_probes == len(FREE) - 1
    assert np.isfinite(diff.domain("instructions").divergence)
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
