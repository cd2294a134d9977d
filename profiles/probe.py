"""A probe: one prompt with an id, domain tags, an answer type and optionally a gold answer."""

from __future__ import annotations

import hashlib
import json
import math
import string
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from profiles.protocol import SampleRequest

AnswerType = Literal["choice", "numeric", "refusal", "free"]
OPTION_LABELS = string.ascii_uppercase
PROBE_ID_PATTERN = r"^[a-z0-9][a-z0-9_.:-]*$"

# How a probe is asked. Short answers are all a probe needs (the letter, the number, whether
# the model complies, the gist of a free answer), and generation dominates collection time.
# Changing these changes observations: bump REQUEST_FORMAT so cached samples are not reused.
REQUEST_FORMAT = 3
MAX_TOKENS: dict[str, int] = {"choice": 6, "numeric": 16, "refusal": 24, "free": 32}
STOPS: dict[str, tuple[str, ...]] = {
    "choice": ("\n",), "numeric": ("\n",), "refusal": ("\n\n", "\nQuestion"),
    "free": ("\n\n", "\nQuestion"),
}


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1)


class Probe(BaseModel):
    """One probe of a suite.

    ``options`` (``choice`` only) are the option texts; they are labelled ``A``, ``B``, ... in
    order, and ``gold`` is then the label. For ``numeric`` the gold is the number as a string;
    for ``refusal`` it is ``"refuse"`` or ``"comply"`` (what a well-calibrated model should do).
    ``completion`` is the plain-text rendering for base models; the prompt of a ``choice``
    probe must end so that the next token is the option letter (e.g. ``"Answer:"``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=PROBE_ID_PATTERN, max_length=120)
    domains: tuple[str, ...] = Field(min_length=1)
    type: AnswerType
    messages: tuple[ChatMessage, ...] = Field(min_length=1)
    completion: str | None = None
    options: tuple[str, ...] | None = None
    gold: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Probe:
        if self.type == "choice":
            if not self.options or len(self.options) < 2:
                raise ValueError("a choice probe needs at least two options")
            if len(self.options) > len(OPTION_LABELS):
                raise ValueError("too many options")
            if any(not o.strip() for o in self.options):
                # a blank option "names" every answer: extraction read any other letter as
                # contradicting it and left it unparsed
                raise ValueError("an option text is empty or blank")
            if self.gold is not None and self.gold not in self.labels:
                raise ValueError(f"gold '{self.gold}' is not one of {list(self.labels)}")
        elif self.options is not None:
            raise ValueError(f"options are only for choice probes, not {self.type}")
        if self.type == "numeric" and self.gold is not None:
            try:
                number = float(self.gold)
            except ValueError:
                raise ValueError(f"numeric gold '{self.gold}' is not a number") from None
            if not math.isfinite(number):  # "NaN", "inf": no answer can ever match it
                raise ValueError(f"numeric gold '{self.gold}' is not a finite number")
        if self.type == "refusal" and self.gold not in (None, "refuse", "comply"):
            raise ValueError("refusal gold must be 'refuse' or 'comply'")
        if self.type == "free" and self.gold is not None:
            raise ValueError("free probes have no gold")
        if self.messages[-1].role != "user":
            raise ValueError("the last message must be the user's")
        return self

    @property
    def labels(self) -> tuple[str, ...]:
        """Option labels ``A``, ``B``, ... (empty unless ``choice``)."""
        return tuple(OPTION_LABELS[: len(self.options or ())])

    @property
    def gold_index(self) -> int | None:
        if self.type != "choice" or self.gold is None:
            return None
        return self.labels.index(self.gold)

    def content_hash(self) -> str:
        """Hash of everything that changes what a model sees or how it is scored."""
        payload = self.model_dump(mode="json", exclude={"id"})
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def request(
        self,
        n: int = 1,
        temperature: float = 0.7,
        max_tokens: int | None = None,
        seed: int | None = None,
    ) -> SampleRequest:
        """The request that collects this probe; ``choice`` probes ask for first-token logprobs."""
        if max_tokens is None:
            max_tokens = MAX_TOKENS[self.type]
        return SampleRequest(
            messages=tuple({"role": m.role, "content": m.content} for m in self.messages),
            n=n,
            temperature=temperature,
            max_tokens=max_tokens,
            top_logprobs=20 if self.type == "choice" else 0,
            seed=seed,
            stop=STOPS[self.type],
            completion_prompt=self.completion,
            domains=self.domains,
        )
