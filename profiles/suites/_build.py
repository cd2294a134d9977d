"""Builders that render probe content into :class:`~profiles.probe.Probe` objects.

Every prompt follows the conventions the collector and the tiny local models rely on: a
``choice`` probe lists its options as ``A. ...`` lines and ends with ``Answer with the letter
only.``; its base-model ``completion`` ends with ``Answer:`` so the next token is the letter.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from profiles.probe import OPTION_LABELS, ChatMessage, Probe

CHOICE_INSTRUCTION = "Answer with the letter only."
NUMERIC_INSTRUCTION = "Answer with the number only."
LIKERT = ("Strongly agree", "Agree", "Disagree", "Strongly disagree")


def shuffled(probe_id: str, correct: str, distractors: Sequence[str]) -> tuple[list[str], str]:
    """Options in an order fixed by the probe id, and the gold label of ``correct``.

    Seeding by id (not by a shared generator) keeps each probe's order stable when other
    probes are added or removed, so editing one probe does not re-collect its neighbours.
    """
    options = [correct, *distractors]
    if len(set(options)) != len(options):
        raise ValueError(f"{probe_id}: options repeat: {options}")
    random.Random(f"options:{probe_id}").shuffle(options)
    return options, OPTION_LABELS[options.index(correct)]


def choice(
    probe_id: str,
    domain: str,
    question: str,
    options: Sequence[str],
    gold: str | None = None,
) -> Probe:
    """A multiple-choice probe with options in the given order (``gold`` is a label or None)."""
    lines = "\n".join(
        f"{label}. {text}" for label, text in zip(OPTION_LABELS, options, strict=False)
    )
    return Probe(
        id=probe_id,
        domains=(domain,),
        type="choice",
        messages=(ChatMessage(role="user", content=f"{question}\n{lines}\n{CHOICE_INSTRUCTION}"),),
        completion=f"Question: {question}\n{lines}\nAnswer:",
        options=tuple(options),
        gold=gold,
    )


def choice_gold(
    probe_id: str, domain: str, question: str, correct: str, distractors: Sequence[str]
) -> Probe:
    """A multiple-choice probe with a correct answer, options shuffled by id."""
    options, gold = shuffled(probe_id, correct, distractors)
    return choice(probe_id, domain, question, options, gold)


def likert(probe_id: str, domain: str, statement: str) -> Probe:
    """An opinion-survey probe on a four-point agreement scale (kept in scale order)."""
    question = f'Do you agree or disagree with this statement: "{statement}"'
    return choice(probe_id, domain, question, LIKERT)


def numeric(probe_id: str, domain: str, question: str, gold: int | float | str | None) -> Probe:
    """A probe whose answer is a number."""
    return Probe(
        id=probe_id,
        domains=(domain,),
        type="numeric",
        messages=(ChatMessage(role="user", content=f"{question}\n{NUMERIC_INSTRUCTION}"),),
        completion=f"Question: {question}\nAnswer:",
        gold=None if gold is None else str(gold),
    )


def free(probe_id: str, domain: str, question: str) -> Probe:
    """A probe answered in free text, without gold."""
    return Probe(
        id=probe_id,
        domains=(domain,),
        type="free",
        messages=(ChatMessage(role="user", content=question),),
        completion=f"Question: {question}\nAnswer:",
    )


def refusal(probe_id: str, domain: str, request: str, gold: str | None) -> Probe:
    """A request where what is measured is whether the model complies or refuses."""
    return Probe(
        id=probe_id,
        domains=(domain,),
        type="refusal",
        messages=(ChatMessage(role="user", content=request),),
        completion=f"Question: {request}\nAnswer:",
        gold=gold,
    )


class Numbered:
    """Hands out ids ``<prefix>-001``, ``<prefix>-002``, ... in order of use."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._count = 0

    def __call__(self) -> str:
        self._count += 1
        return f"{self._prefix}-{self._count:03d}"
