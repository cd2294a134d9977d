"""Live comparisons of answers without words (issue #19) and of unusable embeddings."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pytest
from structlog.testing import capture_logs

from profiles.embed import HashEmbedder, Vectors
from router.paired.compare import NoiseAwareComparer, compare, compare_review

# SmolLM2's real answers (tests/profiles/fixtures/raw_outputs.jsonl)
FENCE, RULE, EMOJI = "```", "---", "🌟🌟🌍🌈🌊🌌🌊🌊🌌"
CODE = '```json\n{\n  "name": "Ana",\n  "age": 30\n}\n```'


class ZeroForWordless:
    """A remote embedder that sends zero vectors for texts without a word."""

    name = "zero-for-wordless"
    dim = 256

    def embed(self, texts: Sequence[str]) -> Vectors:
        vectors = HashEmbedder().embed(texts)
        vectors[[not re.search(r"\w", t) for t in texts]] = 0.0
        return vectors

    async def aembed(self, texts: Sequence[str]) -> Vectors:
        return self.embed(texts)


def test_answers_without_words_agree_only_with_the_same_symbols() -> None:
    comparer = NoiseAwareComparer()
    same = comparer(FENCE, " ```\n", ["code"], pair=("a", "b"))
    assert same.agreement == 1.0 and not same.flagged
    for other in (RULE, EMOJI, CODE):
        apart = comparer(FENCE, other, ["code"], pair=("a", "b"))
        assert apart.flagged and apart.divergence > 0.8 and apart.method == "semantic"
        assert apart.unified_diff.startswith("--- primary")


def test_the_jaccard_baseline_tells_symbols_apart_too() -> None:
    assert compare(FENCE, FENCE).agreement == 1.0
    assert compare(FENCE, RULE).agreement == 0.0 and compare(FENCE, RULE).flagged
    assert compare("Paris.", "paris").agreement == 1.0  # words: as before


def test_an_unusable_embedding_falls_back_to_jaccard_with_a_warning() -> None:
    comparer = NoiseAwareComparer(embedder=ZeroForWordless())
    with capture_logs() as logs:
        result = comparer(FENCE, CODE, ["code"], pair=("a", "b"))
    assert result.method == "jaccard" and result.flagged
    assert np.isfinite(result.divergence)
    assert [e["event"] for e in logs] == ["compare.embedding_unusable"]
    assert logs[0]["embedder"] == "zero-for-wordless" and logs[0]["pair"] == ["a", "b"]


@pytest.mark.parametrize(("review", "agrees"), [
    ("AGREE", True), ("agree", True), ("**AGREE**", True), ("I agree.", True),
    ("Agreed — the answer is right.", True), ("Verdict: AGREE", True),
    ("**Verdict:** agree", True), ("> AGREE\n", True),
    ("DISAGREE\nParis", False), ("I disagree: it is Paris.", False),
    ("I don't agree. Paris.", False), ("I don\u2019t agree", False),
    ("I do not agree; Paris", False), ("The answer is wrong: Paris.", False),
    ("agreeable weather", False), ("", False),
])
def test_a_review_verdict_is_read_as_models_write_it(review: str, agrees: bool) -> None:
    """Models do not all answer with exactly AGREE: "I agree." was a flagged disagreement."""
    result = compare_review("Lyon is the capital of France.", review)
    assert result.flagged is not agrees and result.method == "review"
    if not agrees and review.strip():
        assert "Lyon" in result.unified_diff  # the diff is against the reviewer's answer


def test_a_disagreeing_review_is_compared_by_the_answer_after_its_verdict() -> None:
    result = compare_review("Lyon is the capital of France.", "I disagree: Paris is the capital.")
    assert result.flagged and "+Paris is the capital." in result.unified_diff
    assert "disagree" not in result.unified_diff.lower()
