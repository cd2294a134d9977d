"""Comparison of the two answers of a paired call.

Two comparers share the interface ``(primary_text, partner_text, domains, *, pair) ->
Comparison``:

* :func:`compare` — normalised text equality, else token Jaccard similarity, plus a ``difflib``
  unified diff. Cheap and noise-blind; kept as the simple baseline.
* :class:`NoiseAwareComparer` — the live-diff comparison. When the task's dominant domain is a
  *typed* probe domain (most of its probes share an answer type, see :func:`domain_types`), the
  answers are extracted with :mod:`profiles.extract` and compared as values (``B`` and "The
  answer is B." agree). Otherwise — or when extraction fails — the divergence is the cosine
  distance of the two answers' embeddings, and it is flagged only beyond the pair's profiled
  *noise floor* for the domain (how far each model's own samples of the same probe lie apart),
  read from a :class:`NoiseFloors`; unprofiled pairs use :data:`DEFAULT_SEMANTIC_THRESHOLD`.
  An embedding that cannot be scored (zero or non-finite, from a remote embedder) falls back to
  :func:`compare`, with a warning in the log: a live comparison is never skipped for it.

Answers without words (``"```"``, ``"---"``, emoji) normalise to the empty string; they are the
same answer only if their stripped texts are.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from profiles.embed import Embedder, HashEmbedder, usable_rows
from profiles.extract import extract
from profiles.probe import AnswerType, Probe
from profiles.protocol import Sample

DEFAULT_THRESHOLD = 0.5
"""Divergence (1 − Jaccard) above which two answers are flagged as disagreeing."""

_WORD = re.compile(r"\w+", re.UNICODE)
_VERDICT = re.compile(r"^[\W_]*(?:verdict[\W_]*)?(?:i\s+)?"
                      r"(?P<no>dis|do\s+not\s+|don[\u2019']?t\s+)?agreed?\b[\W_]*", re.IGNORECASE)
"""A review's verdict, first thing in it: ``AGREE``, ``**AGREE**``, ``I agree.``, ``Verdict:
agree``; ``DISAGREE``, ``I disagree``, ``I don't agree`` (``no``: a disagreement)."""
_log = structlog.get_logger("diffroute.compare")


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


class Comparer(Protocol):
    """``compare(primary_text, partner_text, domains, *, pair)`` → :class:`Comparison`."""

    def __call__(self, primary_text: str, partner_text: str, domains: Sequence[str], *,
                 pair: tuple[str, str] | None = None) -> Comparison: ...


def normalise(text: str) -> str:
    """Case-folded words of ``text`` joined by single spaces (punctuation dropped)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_WORD.findall(folded))


def same_answer(primary_text: str, partner_text: str, a: str, b: str) -> bool:
    """Whether two answers are the same, given their normalised forms ``a`` and ``b``: equal
    words, or — for answers without words — equal stripped texts."""
    return a == b and (bool(a) or primary_text.strip() == partner_text.strip())


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
    same = same_answer(primary_text, partner_text, a, b)
    agreement = 1.0 if same else jaccard(a, b) if a or b else 0.0
    divergence = 1.0 - agreement
    diff = "" if same else unified_diff(primary_text, partner_text)
    return Comparison(agreement, divergence > threshold, divergence, threshold, diff)


def compare_review(primary_text: str, partner_text: str, domains: Sequence[str] = (), *,
                   pair: tuple[str, str] | None = None) -> Comparison:
    """Read an auditor's review of the primary's answer (see ``paired.REVIEW_INSTRUCTION``).

    A review whose verdict (:data:`_VERDICT`, as models write it: ``AGREE``, ``I agree.``,
    ``**Verdict:** agree``) agrees is agreement; anything else is a flagged disagreement whose
    diff is against the answer the reviewer gave after its verdict.
    """
    review_text = partner_text
    verdict = _VERDICT.match(review_text)
    if verdict is not None and verdict.group("no") is None:
        return Comparison(1.0, False, 0.0, DEFAULT_THRESHOLD, "", method="review")
    correction = review_text[verdict.end():].strip() if verdict is not None else review_text
    base = compare(primary_text, correction or review_text, domains, pair=pair)
    return Comparison(base.agreement, True, base.divergence, base.threshold,
                      unified_diff(primary_text, correction or review_text), method="review")


# --- the noise-floor-aware comparison ---------------------------------------------------------

DEFAULT_SEMANTIC_THRESHOLD = 0.35
"""Cosine distance above which two free-text answers of an unprofiled pair disagree.

Calibrated on the default 256-d hash embedder: paraphrases of one answer lie at 0.15–0.3,
unrelated answers near 1.0. A profiled pair uses its own floor instead (:class:`NoiseFloors`).
"""
TYPED_THRESHOLD = 0.5
"""Typed divergence is 0 (same extracted answer) or 1; any mismatch of the values is flagged.

A single comparison of two sampled values cannot be tested against sampling noise; the pair's
noise on typed answers enters the *predicted* disagreement rate instead (``router.live.rates``).
"""
TYPED_DOMAIN_SHARE = 0.75
"""A domain is typed when at least this share of its probes have one non-``free`` type."""
_CHOICE_LABELS = ("A", "B", "C", "D", "E")


class NoiseFloors(Protocol):
    """Per-pair, per-domain semantic noise floors (cosine distance), from profiles."""

    def semantic_threshold(self, pair: tuple[str, str], domain: str) -> float | None:
        """The pair's threshold in ``domain``, or ``None`` when the pair is unprofiled there."""
        ...


def domain_types(probes: Iterable[Probe],
                 share: float = TYPED_DOMAIN_SHARE) -> dict[str, AnswerType]:
    """``domain → answer type`` for the domains whose probes are mostly of one typed kind."""
    counts: dict[str, Counter[AnswerType]] = {}
    for probe in probes:
        for domain in probe.domains:
            counts.setdefault(domain, Counter())[probe.type] += 1
    out: dict[str, AnswerType] = {}
    for domain, kinds in counts.items():
        kind, n = kinds.most_common(1)[0]
        if kind != "free" and n >= share * sum(kinds.values()):
            out[domain] = kind
    return out


def _typed_probe(kind: AnswerType, domain: str) -> Probe:
    """A stand-in probe so that ``profiles.extract`` can read a live answer of type ``kind``."""
    options = _CHOICE_LABELS if kind == "choice" else None
    return Probe(id="live", domains=(domain,), type=kind, options=options,
                 messages=({"role": "user", "content": "live"},))


class NoiseAwareComparer:
    """The live-diff :class:`~router.paired.engine.Comparer` (see the module docstring).

    ``floors`` may be replaced at run time (profiles are loaded after the service starts).
    """

    def __init__(self, floors: NoiseFloors | None = None,
                 types: Mapping[str, AnswerType] | None = None,
                 embedder: Embedder | None = None,
                 default_threshold: float = DEFAULT_SEMANTIC_THRESHOLD) -> None:
        self.floors = floors
        self.types = dict(types or {})
        self.embedder = embedder or HashEmbedder()
        self.default_threshold = default_threshold
        self._probes = {(k, d): _typed_probe(k, d) for d, k in self.types.items()}

    def __call__(self, primary_text: str, partner_text: str, domains: Sequence[str] = (), *,
                 pair: tuple[str, str] | None = None) -> Comparison:
        typed = self._typed(primary_text, partner_text, domains[0]) if domains else None
        if typed is not None:
            return typed
        threshold = self.threshold(pair, domains)
        # equal texts are the same answer: the usual agreement skips normalising both
        if primary_text == partner_text or same_answer(
                primary_text, partner_text, normalise(primary_text), normalise(partner_text)):
            return Comparison(1.0, False, 0.0, threshold, "", method="semantic")
        vectors = self.embedder.embed([primary_text, partner_text])
        if not usable_rows(vectors).all():
            _log.warning("compare.embedding_unusable", embedder=self.embedder.name,
                         pair=list(pair or ()), fallback="jaccard")
            return compare(primary_text, partner_text, domains, pair=pair)
        divergence = min(1.0, max(0.0, 1.0 - float(vectors[0] @ vectors[1])))
        flagged = divergence > threshold
        # the text diff is stored only with a live diff: computed for flagged comparisons only
        diff = unified_diff(primary_text, partner_text) if flagged else ""
        return Comparison(1.0 - divergence, flagged, divergence, threshold, diff,
                          method="semantic")

    def threshold(self, pair: tuple[str, str] | None, domains: Sequence[str]) -> float:
        """The pair's floor in its dominant profiled domain, else the documented default."""
        if self.floors is not None and pair is not None:
            for domain in domains:
                floor = self.floors.semantic_threshold(pair, domain)
                if floor is not None:
                    return floor
        return self.default_threshold

    def _typed(self, primary_text: str, partner_text: str, domain: str) -> Comparison | None:
        kind = self.types.get(domain)
        if kind is None:
            return None
        probe = self._probes[(kind, domain)]
        va = extract(probe, Sample(primary_text, "stop")).value
        vb = extract(probe, Sample(partner_text, "stop")).value
        if va is None or vb is None or (kind == "refusal" and va == vb == "comply"):
            return None  # nothing typed to compare (or two complying answers): compare meaning
        same = va == vb
        diff = "" if same else unified_diff(primary_text, partner_text)
        return Comparison(float(same), not same, float(not same), TYPED_THRESHOLD, diff,
                          method=f"typed:{kind}")
