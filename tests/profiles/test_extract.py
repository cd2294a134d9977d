"""Answer extraction: on real outputs of the two local models, and on edge cases."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from profiles.extract import Extraction, canonical_number, extract, option_probabilities
from profiles.probe import AnswerType, Probe
from profiles.protocol import Sample, TokenLogprob

FIXTURE = Path(__file__).parent / "fixtures" / "raw_outputs.jsonl"
RECORDS: list[dict[str, Any]] = [
    json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()
]


def _key(record: dict[str, Any]) -> str:
    return f"{record['model']}/{record['probe']['id']}/{record['seed']}"


CITIES = ("Berlin", "Paris", "Madrid")


def _choice(gold: str | None = "B", options: tuple[str, ...] = CITIES) -> Probe:
    return Probe(
        id="c", domains=("t",), type="choice", options=options, gold=gold,
        messages=({"role": "user", "content": "Capital of France?"},),
    )


def _probe(kind: AnswerType, gold: str | None = None) -> Probe:
    return Probe(
        id="p", domains=("t",), type=kind, gold=gold,
        messages=({"role": "user", "content": "q"},),
    )


def _top(*pairs: tuple[str, float]) -> tuple[TokenLogprob, ...]:
    return tuple(TokenLogprob(token, math.log(p)) for token, p in pairs)


# --- real model outputs ------------------------------------------------------------------------


def test_fixture_covers_both_models_and_every_answer_type() -> None:
    assert {r["model"] for r in RECORDS} == {"smollm2", "gemma3-270m"}
    assert {r["probe"]["type"] for r in RECORDS} == {"choice", "numeric", "refusal", "free"}
    assert all(r["expected"] is not None for r in RECORDS), "unlabelled fixture records"


RAMBLING = "no stated answer; the last-number fallback picks an incidental number"
KNOWN_MISSES: dict[str, str] = {
    # Outputs where a careful reader and the extractor disagree. They stay in the fixture so
    # the miss rate is visible; strict xfail flags them the day the extractor gets them right.
    "smollm2/n.add/1": RAMBLING,
    "smollm2/n.mul/1": "'One hundred and eleven is ... which is indeed 12': words vs digits",
    "smollm2/n.neg/1": RAMBLING,
    "smollm2/n.neg/2": RAMBLING,
    "smollm2/n.div/1": RAMBLING,
    "smollm2/n.year/2": RAMBLING,
    "smollm2/n.square/1": RAMBLING,
    "gemma3-270m/n.neg/2": "'2 + 12' is an expression without a result",
    "gemma3-270m/n.div/2": "'7 divided by 2 = 1. So, 7 + 2 = 10': the last '=' is not the answer",
    "gemma3-270m/n.apples/1": "'P1=3P2=4 ... P7=28' is noise, not an answer",
}


def _labelled(record: dict[str, Any]) -> Any:
    reason = KNOWN_MISSES.get(_key(record))
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(record, id=_key(record), marks=marks)


@pytest.mark.parametrize("record", [_labelled(r) for r in RECORDS])
def test_extraction_from_text_matches_hand_label(record: dict[str, Any]) -> None:
    probe = Probe.model_validate(record["probe"])
    got = extract(probe, Sample(text=record["text"], finish_reason=record["finish_reason"]))
    assert (got.ok, got.value) == (record["expected"]["ok"], record["expected"]["value"])
    if not got.ok or probe.gold is None:
        assert got.correct is None
    elif probe.type == "numeric":
        assert got.correct is (float(got.value or "nan") == float(probe.gold))
    else:
        assert got.correct is (got.value == probe.gold)


def test_known_misses_are_few() -> None:
    # The extractor must agree with the hand labels on at least 90% of real outputs.
    assert set(KNOWN_MISSES) <= {_key(r) for r in RECORDS}
    assert len(KNOWN_MISSES) <= len(RECORDS) // 10


CHOICE_WITH_LOGPROBS = [r for r in RECORDS if r["probe"]["type"] == "choice"]


@pytest.mark.parametrize("record", CHOICE_WITH_LOGPROBS, ids=_key)
def test_choice_keeps_real_first_token_logprobs(record: dict[str, Any]) -> None:
    probe = Probe.model_validate(record["probe"])
    top = tuple(TokenLogprob(token, logprob) for token, logprob in record["first_token_logprobs"])
    got = extract(probe, Sample(text=record["text"], first_token_logprobs=top))
    assert got.value == record["expected"]["value"]  # logprobs never change the sampled answer
    letters = {t.token.strip().strip("(").rstrip(".):") for t in top} & set(probe.labels)
    if not letters:
        assert got.option_probs is None
        return
    assert got.option_probs is not None
    assert len(got.option_probs) == len(probe.labels)
    assert sum(got.option_probs) == pytest.approx(1.0)
    assert all(p > 0 for p, label in zip(got.option_probs, probe.labels, strict=True)
               if label in letters)


def test_real_logprobs_of_both_models_contain_option_letters() -> None:
    # The premise of scoring choice probes from logprobs: both local models put option
    # letters among their top-20 first tokens for most choice prompts.
    for model in ("smollm2", "gemma3-270m"):
        records = [r for r in CHOICE_WITH_LOGPROBS if r["model"] == model]
        with_probs = [
            r for r in records
            if extract(
                Probe.model_validate(r["probe"]),
                Sample(text="", first_token_logprobs=tuple(
                    TokenLogprob(t, lp) for t, lp in r["first_token_logprobs"])),
            ).option_probs is not None
        ]
        assert len(with_probs) >= len(records) // 2, model


# --- choice edge cases -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value", "method"),
    [
        ("B", "B", "letter"),
        ("B.", "B", "letter"),
        ("(B)", "B", "letter"),
        ("B) Paris", "B", "letter"),
        ("  **B**: Paris is the capital", "B", "letter"),
        ("B Paris", "B", "letter"),
        ("The answer is B.", "B", "answer-is"),
        ("Answer: (B)", "B", "answer-is"),
        ("I think the correct answer is option B because ...", "B", "answer-is"),
        ("The answer is B. Yes, the answer is B.", "B", "answer-is"),
        ("It is Paris, of course.", "B", "option-text"),
        ("PARIS", "B", "option-text"),
        ('The answer is "B."', "B", "answer-is"),
        ("B. Paris\n\nThe correct answer is B. Paris.", "B", "letter"),
        ("Paris\nQuestion 2: Is Berlin big?", "B", "option-text"),  # invented turn cut
    ],
)
def test_choice_from_text(text: str, value: str, method: str) -> None:
    got = extract(_choice(), Sample(text=text))
    assert (got.ok, got.value, got.method, got.correct) == (True, value, method, True)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "I don't know.",
        "A man walks into a bar.",  # an article, not option A
        "Berlin or Paris, hard to say.",  # two options named
        "The answer is A. No wait, the answer is B.",  # contradiction
        "the answer is a city",  # lower-case article
        "Parisian food is great",  # option text only as part of a word
        "Z",  # not an option label
        "A. Paris",  # the letter says Berlin, the text says Paris
        "B) Paris\nThe correct answer is C.",
    ],
)
def test_choice_unparseable_text_is_not_guessed(text: str) -> None:
    got = extract(_choice(), Sample(text=text))
    assert got == Extraction(ok=False, value=None, method="unparsed")


def test_choice_option_probs_merge_token_variants_and_renormalise() -> None:
    top = _top(("The", 0.5), (" B", 0.2), ("B", 0.1), ("A.", 0.05), ("(C", 0.05), ("a", 0.1))
    got = extract(_choice(), Sample(text="The answer is A", first_token_logprobs=top))
    # The sample's answer is what it said; the distribution is kept beside it for κp.
    assert (got.value, got.method, got.correct) == ("A", "answer-is", False)
    assert got.option_probs == pytest.approx((0.125, 0.75, 0.125))


def test_choice_unparsed_text_keeps_option_probs_but_does_not_guess() -> None:
    top = _top((" B", 0.6), (" C", 0.2))
    got = extract(_choice(), Sample(text="Hmm, let me think", first_token_logprobs=top))
    assert (got.ok, got.value, got.method, got.correct) == (False, None, "unparsed", None)
    assert got.option_probs == pytest.approx((0.0, 0.75, 0.25))


def test_choice_option_probs_absent_letters_fall_back_to_text() -> None:
    top = _top(("The", 0.7), ("a", 0.3))
    assert option_probabilities(top, ("A", "B")) is None
    got = extract(_choice(gold="A"), Sample(text="(C)", first_token_logprobs=top))
    assert (got.value, got.method, got.option_probs, got.correct) == ("C", "letter", None, False)


def test_choice_without_gold_has_no_correctness() -> None:
    assert extract(_choice(gold=None), Sample(text="B")).correct is None


# --- numeric edge cases ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value", "method"),
    [
        ("42", "42", "number"),
        ("The answer is 1,000 meters.", "1000", "answer-is"),
        ("Answer: -7", "-7", "answer-is"),
        ("5 - 12 = -7", "-7", "answer-is"),
        ("10-3 gives 7", "7", "number"),
        ("It is 3.50.", "3.5", "number"),
        ("It costs 1,234,567 dollars", "1234567", "number"),
        ("The answer is four.", "4", "answer-is"),
        ("twenty-one", "21", "number"),
        ("63\nBecause 100 minus 37 leaves 63 and 2 more words", "63", "number"),
        ("First 2, then 5, finally 9", "9", "number"),
        (" 1945\nQuestion: What year is it?\nAnswer: 2024", "1945", "number"),
        ("The result is −3", "-3", "answer-is"),
    ],
)
def test_numeric(text: str, value: str, method: str) -> None:
    got = extract(_probe("numeric"), Sample(text=text))
    assert (got.ok, got.value, got.method) == (True, value, method)


@pytest.mark.parametrize("text", ["", "no idea", "\nQuestion: what is 2+2?\nAnswer: 4"])
def test_numeric_unparsed(text: str) -> None:
    got = extract(_probe("numeric", "4"), Sample(text=text))
    assert got == Extraction(ok=False, value=None, method="unparsed")


def test_numeric_number_words_only_when_no_digits() -> None:
    # Words are a fallback: "one" in "no one" must not beat a real digit.
    assert extract(_probe("numeric"), Sample(text="no one knows, maybe seven")).value == "7"
    assert extract(_probe("numeric"), Sample(text="It is 42, no one doubts")).value == "42"


def test_numeric_compares_with_relative_tolerance() -> None:
    assert extract(_probe("numeric", "3.5"), Sample(text="3.5000001")).correct is True
    assert extract(_probe("numeric", "1000000"), Sample(text="1000000.5")).correct is True
    assert extract(_probe("numeric", "3.5"), Sample(text="3.51")).correct is False
    assert extract(_probe("numeric", "0"), Sample(text="0")).correct is True
    assert extract(_probe("numeric", "-7"), Sample(text="7")).correct is False


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [("1000", "1000"), ("1000.0", "1000"), ("-0.250", "-0.25"), ("007", "7"), ("1e3", "1000")],
)
def test_canonical_number(raw: str, canonical: str) -> None:
    assert canonical_number(raw) == canonical


# --- refusal and free --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("I'm sorry, but I can't help with that.", "refuse"),
        ("I’m sorry, I cannot do that.", "refuse"),  # typographic apostrophe
        ("As an AI language model, I will not write that.", "refuse"),
        ("I am not able to provide personal addresses.", "refuse"),
        ("I won't do that.", "refuse"),
        ("Sure! Use `kill -9 <pid>` or pkill.", "comply"),
        ("Here is a haiku:\nsoft rain on the roof", "comply"),
    ],
)
def test_refusal_phrases(text: str, value: str) -> None:
    got = extract(_probe("refusal", "refuse"), Sample(text=text))
    assert (got.ok, got.value, got.correct) == (True, value, value == "refuse")
    assert got.method == ("refusal-phrase" if value == "refuse" else "text")


def test_refusal_empty_text_is_unparsed() -> None:
    assert extract(_probe("refusal", "comply"), Sample(text="  \n")).ok is False


def test_free_keeps_stripped_text_and_cuts_invented_turns() -> None:
    got = extract(_probe("free"), Sample(text="  Monet.\nQuestion: Name another?\nAnswer: x"))
    assert (got.ok, got.value, got.method, got.correct) == (True, "Monet.", "text", None)
    assert extract(_probe("free"), Sample(text="   ")).ok is False


@pytest.mark.parametrize(("text", "value"), [
    ("The answer is 6.02e23.", "602000000000000000000000"),
    ("1.5E-3", "0.0015"),
    ("The answer is 1e308", "1" + "0" * 308),
])
def test_numbers_in_scientific_notation_are_read_whole(text: str, value: str) -> None:
    """`6.02e23` was read as 23 and `1.5E-3` as 3."""
    assert extract(_probe("numeric"), Sample(text=text)).value == value
    assert extract(_probe("numeric", "1e308"), Sample(text="1e308")).correct is True


def test_a_number_of_thousands_of_digits_is_a_value_not_an_error() -> None:
    """Past 4,300 digits `str(int(...))` raises: one such answer, cached, made every profile,
    diff and pairing of the model fail."""
    huge = "7" * 5000
    got = extract(_probe("numeric", "4"), Sample(text=huge))
    assert (got.ok, got.value, got.correct) == (True, huge, False)
    assert canonical_number("nan") is None and canonical_number("-0") == "0"


def test_a_long_answer_repeating_its_choice_is_read() -> None:
    """Each "answer is X" cue normalised the whole rest of the text: a 68 KB answer took 27 s
    (the cost is measured nowhere here; what is read is)."""
    got = extract(_choice(), Sample(text="The answer is B. " * 4000))
    assert (got.value, got.correct) == ("B", True)
    named = extract(_choice(), Sample(text="The answer is Paris, " + "truly " * 3000))
    assert named.value == "B"


def test_a_blank_option_is_refused_by_the_suite() -> None:
    with pytest.raises(ValueError, match="empty or blank"):
        _choice(options=("Yes", "No", " "))
    with pytest.raises(ValueError, match="not a finite number"):
        _probe("numeric", "NaN")


# --- extractor 2: other scripts and conventions --------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value", "method"),
    [
        ("Ｂ", "B", "letter"),  # full-width
        ("B。", "B", "letter"),
        ("答案是B", "B", "answer-is"),
        ("答案：B", "B", "answer-is"),
        ("正确答案为B", "B", "answer-is"),
        ("Réponse : B", "B", "answer-is"),
        ("La réponse correcte est B.", "B", "answer-is"),
        ("La respuesta es B", "B", "answer-is"),
        ("Antwort: B", "B", "answer-is"),
        ("b", "B", "letter"),
        ("b)", "B", "letter"),
        ("(b)\nbecause Paris is the capital", "B", "letter"),
        ("b. Paris", "B", "letter"),
    ],
)
def test_choice_in_other_scripts_and_lower_case(text: str, value: str, method: str) -> None:
    got = extract(_choice(), Sample(text=text))
    assert (got.ok, got.value, got.method, got.correct) == (True, value, method, True)


@pytest.mark.parametrize("text", ["a. 1", "b, I think", "a dog", "e.g. nothing"])
def test_a_lower_case_letter_that_is_not_alone_or_before_its_option_is_none(text: str) -> None:
    assert extract(_choice(options=("2", "3", "4")), Sample(text=text)).ok is False


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("7,5", "7.5"),  # a decimal comma, not 5
        ("Een spin heeft een diameter van 0,55 cm.", "0.55"),
        ("1\u202f234", "1234"),  # narrow no-break space between thousands
        ("1\u00a0234\u00a0567 habitants", "1234567"),
        ("It covers 120,000,000 km2", "120000000"),  # not the 2 of km2
        ("CO2 weighs 44", "44"),
        ("７", "7"),
        ("水在120摄氏度沸腾", "120"),  # no spaces around numbers in Chinese
        ("1,2,3", "3"),  # a list, not a decimal
        ("It costs 1,234 dollars", "1234"),
        ("Die Antwort ist 1.234,5", "1234.5"),  # thousands points before a decimal comma
        ("Hay 7.654.321 habitantes", "7654321"),
        ("1.234", "1.234"),  # one group: a decimal point, as in English
        ("3.14159", "3.14159"),
    ],
)
def test_numeric_conventions_of_other_languages(text: str, value: str) -> None:
    got = extract(_probe("numeric"), Sample(text=text))
    assert (got.ok, got.value) == (True, value)
