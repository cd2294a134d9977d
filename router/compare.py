"""A first comparison of the two answers of a paired call.

Normalised text equality, else token Jaccard similarity, plus a ``difflib`` unified diff. This
is deliberately cheap (it runs on the response path) and noise-blind: the live-diff work replaces
its core with a comparison against the pair's profiled noise floor, keeping the interface
``compare(primary_text, partner_text, domains) -> Comparison``.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_THRESHOLD = 0.5
"""Divergence (1 − Jaccard) above which two answers are flagged as disagreeing."""

_WORD = re.compile(r"\w+", re.UNICODE)
_REVIEW_AGREE = re.compile(r"^\W*agree\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Comparison:
    """How far two answers are apart, and whether that counts as a disagreement."""

    agreement: float
    """In [0, 1]; 1 means the answers say the same thing."""
    flagged: bool
    divergence: float
    threshold: float
    unified_diff: str
    method: str = "jaccard"

    def to_json(self) -> dict[str, object]:
        return {"agreement": self.agreement, "flagged": self.flagged,
                "divergence": self.divergence, "threshold": self.threshold,
                "method": self.method}


def normalise(text: str) -> str:
    """Case-folded words of ``text`` joined by single spaces (punctuation dropped)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_WORD.findall(folded))


def jaccard(a: str, b: str) -> float:
    """Jaccard similarity of the word sets of two normalised texts (1 for two empty texts)."""
    sa, sb = set(a.split()), set(b.split())
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def unified_diff(primary_text: str, partner_text: str) -> str:
    """A ``git diff``-like rendering of the two answers, line by line."""
    lines = difflib.unified_diff(
        primary_text.splitlines(keepends=True), partner_text.splitlines(keepends=True),
        fromfile="primary", tofile="partner", lineterm="\n")
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def compare(primary_text: str, partner_text: str, domains: Sequence[str] = (), *,
            pair: tuple[str, str] | None = None,
            threshold: float = DEFAULT_THRESHOLD) -> Comparison:
    """Compare two answers; ``domains`` and ``pair`` are unused here (noise-floor hook)."""
    del domains, pair  # the noise-floor-aware comparison needs them; this one does not
    a, b = normalise(primary_text), normalise(partner_text)
    agreement = 1.0 if a == b else jaccard(a, b)
    divergence = 1.0 - agreement
    diff = "" if a == b else unified_diff(primary_text, partner_text)
    return Comparison(agreement, divergence > threshold, divergence, threshold, diff)


def compare_review(primary_text: str, partner_text: str, domains: Sequence[str] = (), *,
                   pair: tuple[str, str] | None = None) -> Comparison:
    """Read an auditor's review of the primary's answer (see ``paired.REVIEW_INSTRUCTION``).

    A review starting with ``AGREE`` is agreement; anything else is a flagged disagreement whose
    diff is against the answer the reviewer gave instead.
    """
    review_text = partner_text
    if _REVIEW_AGREE.match(review_text):
        return Comparison(1.0, False, 0.0, DEFAULT_THRESHOLD, "", method="review")
    correction = re.sub(r"^\W*disagree\W*", "", review_text, flags=re.IGNORECASE).strip()
    base = compare(primary_text, correction or review_text, domains, pair=pair)
    return Comparison(base.agreement, True, base.divergence, base.threshold,
                      unified_diff(primary_text, correction or review_text), method="review")
