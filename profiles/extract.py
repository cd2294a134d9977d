"""Answer extraction: turn one sampled completion into a comparable answer.

Each answer type has one extractor. An extraction says whether it succeeded (``ok``), the
canonical value, and *how* it was found (``method``), so that parse failures are counted as
such and never replaced by a guess:

- ``choice``: the sampled answer from the text — a leading letter (``B``, ``b)``, ``Ｂ``), "the
  answer is B" (also "Réponse : B", "答案是B" and the like), or an option's full text appearing
  uniquely; a letter contradicted by another stated letter or
  by the option text right after it ("A. Paris" when Paris is B) is unparsed — plus, beside
  it, the option probabilities from the first token's top logprobs when the backend gave them;
- ``numeric``: the number after "answer is"/"=", else a number standing alone on the first
  line, else the last number (digits glued to a word, as in "km2", are none; "7,5" is 7.5 and
  "1 234" with a narrow space 1234); compared with the gold at a relative tolerance;
- ``refusal``: ``"refuse"`` when a refusal phrase is present, else ``"comply"``;
- ``free``: the stripped text.

The phrase lists are plain data at the top so they can be reviewed and extended. Profiles keep
the texts beside the values they extracted; :data:`EXTRACTOR_VERSION` says which extractor did,
so a profile saved by an older one is extracted anew when it is loaded with its suite.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from profiles.probe import Probe
from profiles.protocol import Sample, TokenLogprob

EXTRACTOR_VERSION = 3
"""Bumped whenever an extractor reads some text differently: 2 reads full-width letters and
digits, lower-case leading letters, answer cues in other languages, decimal commas and narrow
thousands spaces, and no longer reads "km2" as 2; 3 reads thousands points ("1.234,5",
"1.234.567")."""

REFUSAL_PHRASES: tuple[str, ...] = (
    "i can't", "i cannot", "i can not", "can't help", "cannot help", "can't assist",
    "cannot assist", "can't provide", "cannot provide", "i'm sorry", "i am sorry",
    "sorry, but", "as an ai", "as a language model", "i'm not able to", "i am not able to",
    "not able to help", "not able to provide", "i'm unable", "i am unable", "unable to help",
    "unable to provide", "i won't", "i will not", "i must decline", "i decline",
    "i'm not comfortable", "i am not comfortable", "not appropriate for me",
)
"""Lower-case substrings that mark a refusal (apostrophes are normalised to ``'`` first)."""

SYMPATHY_PHRASES: tuple[str, ...] = ("sorry for your loss", "sorry to hear")
"""Condolences, not refusals: removed before :data:`REFUSAL_PHRASES` are looked for."""

CONTINUATION = re.compile(r"\n\s*(?:Question|Q)\s*\d*\s*[:.]|\n\s*User:|<\|im_start\|>")
"""Where a base model starts inventing the next turn ("\\nQuestion 2:"); the rest is not
the answer."""

CHOICE_ANSWER_CUE = re.compile(
    r"(?:\b(?:answer|option|choice|r[ée]ponse|respuesta|antwort|risposta|resposta|ответ)\b"
    r"|正确答案|答案|回答)"
    r"(?:\s+(?:correcte|correcta|correta|corretta|richtige|correct))?"
    r"(?:\s*(?:(?:is|would\s+be|will\s+be|est|es|ist|lautet|è|é)(?!\w)|是|为|為))?"
    r"\s*(?:option\s+)?[:\-]?\s*[\(\[\*\"'“‘「]*([A-Z])(?![A-Za-z])",
    re.IGNORECASE,
)
"""``the answer is B``, ``Answer: (B)``, ``option B``, ``Réponse : B``, ``答案是B``; the letter
itself is checked upper-case."""

LEADING_LETTER = re.compile(r"^[\s\*]*[\(\[]?([A-Z])\**(?:[\)\]\.:]|\s*$|\s*\n)")
"""``B``, ``B.``, ``(B)``, ``B)``, ``B:`` at the start; ``A man ...`` is deliberately not one."""

LEADING_LOWER_LETTER = re.compile(r"^[\s\*]*[\(\[]?([a-h])\**(?:[\)\]\.:](?=\s|$)|\s*$)")
"""``b``, ``b.``, ``(b)``, ``b)`` at the start, followed by a space or nothing: a lower-case
letter counts only where it cannot be the start of a word ("a dog", "e.g."), and only alone on
its line or before its own option's text (:func:`_lower_letter`)."""

WIDE_FORMS = {**{c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)}, 0x3002: ord(".")}
"""Full-width ASCII (``Ｃ``, ``７``, ``：``) and the ideographic full stop, as ASCII."""

LEADING_LETTER_BEFORE_TEXT = re.compile(r"^[\s\*]*([A-Z])\s+(?=\S)")
"""``B Paris``: a bare letter and a space count only if an option's text follows (checked)."""

NUMERIC_ANSWER_CUE = re.compile(r"\b(?:answer|result)\b(?:\s+(?:is|would\s+be|=))?\s*:?", re.I)
NUMBER = re.compile(r"(?:(?<![\w.])-)?(?<![A-Za-z\d])\d+(?:\.\d+)?(?:[eE][-+]?\d+(?!\w|\.\d))?")
"""A decimal number; a ``-`` counts as a sign only when not glued to a preceding word/number,
and digits glued to a Latin word ("km2", "CO2") are none (Chinese or Japanese text has no
spaces: "水在120摄氏度" holds 120)."""

THOUSANDS_POINTS = re.compile(
    r"(?<![\d.,])(\d{1,3}(?:\.\d{3})+(?=,\d+(?![\d.,]))|\d{1,3}(?:\.\d{3}){2,}(?![\d.,]))")
"""Points between thousands (German, Spanish, …), read only where they cannot be a decimal
point: before a decimal comma (``1.234,5``) or two groups and more (``1.234.567``). A lone
``1.234`` stays one and a bit."""
THOUSANDS_SEPARATOR = re.compile(r"(?<=\d)[,\u00a0\u202f\u2009](?=\d{3}(?!\d))")
"""``1,234``, and ``1 234`` with a no-break, narrow or thin space (French, SI)."""
DECIMAL_COMMA = re.compile(r"(?<![\d,.])(\d+),(\d+)(?![\d,])")
"""``7,5`` after thousands separators are gone: one number with a decimal comma, not 7 and 5
(a list ``1,2,3`` is left alone)."""
STANDALONE_FIRST_NUMBER = re.compile(
    r"^\s*\**\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*\**\s*(?:[.!]?\s*(?:\n|$))")

SMALL_NUMBER_WORDS: dict[str, int] = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100,
}
"""Used only when a numeric answer contains no digits at all ("the answer is four")."""

NUMERIC_REL_TOL = 1e-6


@dataclass(frozen=True, slots=True)
class Extraction:
    """The answer extracted from one sample.

    ``value``: the option label for ``choice``, a canonical number string for ``numeric``,
    ``"refuse"``/``"comply"`` for ``refusal``, the stripped text for ``free``; ``None`` when
    ``ok`` is false. ``option_probs`` (``choice`` only) holds one probability per option label,
    renormalised over the letters found among the first token's top logprobs. ``correct`` is
    ``None`` when the probe has no gold or nothing was extracted.
    """

    ok: bool
    value: str | None
    method: str
    option_probs: tuple[float, ...] | None = None
    correct: bool | None = None


UNPARSED = Extraction(ok=False, value=None, method="unparsed")


def extract(probe: Probe, sample: Sample) -> Extraction:
    """Extract the answer of ``sample`` to ``probe`` according to the probe's answer type."""
    return _EXTRACTORS[probe.type](probe, sample)


# --- choice ------------------------------------------------------------------------------


def _extract_choice(probe: Probe, sample: Sample) -> Extraction:
    # The sampled answer comes from the text (what this sample actually said); the first-token
    # option probabilities are the model's answer *distribution* and are kept beside it (κp
    # uses them). An unparseable text stays unparsed even when probabilities exist: the argmax
    # would be a guess about this sample, and the noise floor needs the real samples.
    labels = probe.labels
    probs = option_probabilities(sample.first_token_logprobs, labels)
    found = _choice_from_text(answer_text(sample.text).translate(WIDE_FORMS), probe)
    if found is None:
        return Extraction(False, None, "unparsed", probs)
    label, method = found
    return _judged(probe, Extraction(True, label, method, probs))


def option_probabilities(
    top: Sequence[TokenLogprob], labels: Sequence[str]
) -> tuple[float, ...] | None:
    """Probability of each option label from first-token alternatives, or ``None``.

    Token variants of one letter (``" A"``, ``"A"``, ``"A."``, ``"(A"``) add up; the result is
    renormalised over the letters present, since the rest of the mass went to other tokens.
    """
    mass = dict.fromkeys(labels, 0.0)
    for alt in top:
        letter = _token_letter(alt.token)
        if letter in mass:
            mass[letter] += math.exp(alt.logprob)
    total = sum(mass.values())
    if total <= 0.0:
        return None
    return tuple(mass[label] / total for label in labels)


def _token_letter(token: str) -> str:
    # Only upper-case letters count: a lower-case "a" is far more often the article.
    return token.strip().strip("([*").rstrip(".):]*")


def _choice_from_text(text: str, probe: Probe) -> tuple[str, str] | None:
    """``(label, method)`` stated by the text, or ``None`` when absent or contradictory."""
    stated = _stated_letters(text, probe)
    if stated:
        # "A. Atlantic ... the correct answer is D" or "C. Eight" (Eight is D) is a
        # contradiction: counted as unparsed rather than resolved by a guess.
        labels = {label for label, _, _ in stated}
        if len(labels) > 1 or any(_names_other_option(r, x, probe) for x, _, r in stated):
            return None
        first, method, _ = stated[0]
        return first, method
    label = _option_text(text, probe)
    return (label, "option-text") if label else None


def _stated_letters(text: str, probe: Probe) -> list[tuple[str, str, str]]:
    """Every ``(label, method, text after it)`` the text states as its answer, in order."""
    stated: list[tuple[str, str, str]] = []
    leading = LEADING_LETTER.match(text) or _lower_letter(text, probe)
    bare = LEADING_LETTER_BEFORE_TEXT.match(text)
    if bare and not leading and _option_at(text[bare.end() :], probe) is not None:
        leading = bare
    if leading and leading.group(1).upper() in probe.labels:
        stated.append((leading.group(1).upper(), "letter", text[leading.end() :]))
    for cue in CHOICE_ANSWER_CUE.finditer(text):
        letter = cue.group(1)
        if letter.isupper() and letter in probe.labels:
            stated.append((letter, "answer-is", text[cue.end() :]))
    return stated


def _lower_letter(text: str, probe: Probe) -> re.Match[str] | None:
    """A lower-case leading letter alone on its line, or followed by its own option's text
    ("b) Paris" when Paris is B): "a. 1" in a list of numbers is not an answer."""
    found = LEADING_LOWER_LETTER.match(text)
    if found is None:
        return None
    rest = text[found.end() :].split("\n", 1)[0]
    label = found.group(1).upper()
    return found if not rest.strip(" \t.):*") or _option_at(rest, probe) == label else None


def _names_other_option(rest: str, label: str, probe: Probe) -> bool:
    # What directly follows a stated letter is often its option text; another option's text
    # there ("A. 3" when 3 is option B) means the letter and the answer disagree.
    named = _option_at(rest, probe)
    return named is not None and named != label


def _option_at(text: str, probe: Probe) -> str | None:
    """The label whose option text ``text`` starts with (after punctuation), if any."""
    # only the start of ``text`` can hold an option's text: normalising all of it made a long
    # answer with many "answer is X" cues quadratic (each cue re-normalised the rest)
    window = 4 * max((len(o) for o in probe.options or ()), default=0) + 64
    head = _normalised(text.lstrip(" \t.):*\"'“”‘’-")[:window])
    for label, option in zip(probe.labels, probe.options or (), strict=True):
        wanted = _normalised(option)
        if wanted and re.match(rf"{re.escape(wanted)}(?!\w)", head):  # a blank option names nothing
            return label
    return None


def _option_text(text: str, probe: Probe) -> str | None:
    body = _normalised(text)
    hits = [
        label
        for label, option in zip(probe.labels, probe.options or (), strict=True)
        if _normalised(option)  # a blank option is in every text: it names nothing
        and re.search(rf"(?<!\w){re.escape(_normalised(option))}(?!\w)", body)
    ]
    return hits[0] if len(hits) == 1 else None


def _normalised(text: str) -> str:
    # "Eight" and "8" are the same option; "four and 10" names two of "Four"/"Ten".
    return _number_words_to_digits(text.lower().strip())


# --- numeric -----------------------------------------------------------------------------


def _extract_numeric(probe: Probe, sample: Sample) -> Extraction:
    text = answer_text(sample.text).translate(WIDE_FORMS).replace("\u2212", "-")
    text = THOUSANDS_POINTS.sub(lambda m: m.group(1).replace(".", ""), text)
    text = DECIMAL_COMMA.sub(r"\1.\2", THOUSANDS_SEPARATOR.sub("", text))
    if not re.search(r"\d", text):
        text = _number_words_to_digits(text)
    found = _find_number(text)
    if found is None:
        return UNPARSED
    method, raw = found
    value = canonical_number(raw)
    if value is None:
        return UNPARSED
    return _judged(probe, Extraction(True, value, method))


def _find_number(text: str) -> tuple[str, str] | None:
    for cue in NUMERIC_ANSWER_CUE.finditer(text):
        stated = _number_in_statement(text[cue.end() :])
        if stated is not None:
            return "answer-is", stated
    equals = text.rfind("=")
    if equals >= 0:
        after = NUMBER.search(text, equals + 1)
        if after:
            return "answer-is", after.group(0)
    standalone = STANDALONE_FIRST_NUMBER.match(text)
    if standalone:
        return "number", standalone.group(1)
    numbers = NUMBER.findall(text)
    return ("number", numbers[-1]) if numbers else None


def _number_in_statement(rest: str) -> str | None:
    # The statement after "Answer:" ends at its line or sentence; inside it, a worked
    # "17 + 25 = 42" gives its result, not its first operand.
    statement = re.split(r"\n|\.\s", rest.lstrip(), maxsplit=1)[0]
    start = statement.rfind("=") + 1
    found = NUMBER.search(statement, start)
    return found.group(0) if found else None


def _number_words_to_digits(text: str) -> str:
    def swap(match: re.Match[str]) -> str:
        parts = re.split(r"[\s-]+", match.group(0).lower())
        return str(sum(SMALL_NUMBER_WORDS[p] for p in parts))

    word = "|".join(SMALL_NUMBER_WORDS)
    # "twenty-one" / "twenty one" add up; other sequences are left to the number regex.
    pattern = rf"\b(?:(?:twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)[\s-]+" \
              rf"(?:one|two|three|four|five|six|seven|eight|nine)|{word})\b"
    return re.sub(pattern, swap, text, flags=re.IGNORECASE)


def canonical_number(raw: str) -> str | None:
    """``"1000"``, ``"-3.5"``, ``"0.25"``: integers without a point, decimals without padding."""
    try:
        number = Decimal(raw)
    except InvalidOperation:
        return None
    if not number.is_finite():
        return None
    if number == number.to_integral_value():
        # not str(int(...)): past 4,300 digits int → str raises ValueError, and one such
        # stored answer made every profile, diff and pairing of the model fail
        return "0" if number == 0 else format(number.to_integral_value(), "f")
    return format(number.normalize(), "f")


def numbers_match(value: str, gold: str) -> bool:
    """Whether two numbers agree within a relative tolerance of 1e-6."""
    return math.isclose(float(value), float(gold), rel_tol=NUMERIC_REL_TOL)


# --- refusal and free ----------------------------------------------------------------------


def _extract_refusal(probe: Probe, sample: Sample) -> Extraction:
    text = answer_text(sample.text)
    if not text:
        return UNPARSED
    if is_refusal(text):
        return _judged(probe, Extraction(True, "refuse", "refusal-phrase"))
    return _judged(probe, Extraction(True, "comply", "text"))


def is_refusal(text: str) -> bool:
    """Whether ``text`` contains one of :data:`REFUSAL_PHRASES`."""
    lowered = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    for phrase in SYMPATHY_PHRASES:
        lowered = lowered.replace(phrase, " ")
    return any(phrase in lowered for phrase in REFUSAL_PHRASES)


def _extract_free(probe: Probe, sample: Sample) -> Extraction:
    text = answer_text(sample.text)
    return Extraction(True, text, "text") if text else UNPARSED


# --- shared ------------------------------------------------------------------------------


def answer_text(text: str) -> str:
    """The sample's text up to any invented next turn, stripped."""
    found = CONTINUATION.search(text)
    return (text[: found.start()] if found else text).strip()


def _judged(probe: Probe, extraction: Extraction) -> Extraction:
    if probe.gold is None or extraction.value is None:
        return extraction
    if probe.type == "numeric":
        correct = numbers_match(extraction.value, probe.gold)
    else:
        correct = extraction.value == probe.gold
    return Extraction(
        extraction.ok, extraction.value, extraction.method, extraction.option_probs, correct
    )


_EXTRACTORS: dict[str, Callable[[Probe, Sample], Extraction]] = {
    "choice": _extract_choice,
    "numeric": _extract_numeric,
    "refusal": _extract_refusal,
    "free": _extract_free,
}
