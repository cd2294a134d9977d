"""Secrets in settings: given literally or as ``env:VAR``, never shown.

A value ``env:VAR`` is a reference resolved from the environment when it is used
(:class:`SecretRef`); its value is never logged or dumped.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Annotated

from pydantic import PlainSerializer, PlainValidator


class SecretRef:
    """A secret given literally or as ``env:VAR``; ``str()`` and ``repr()`` never show it."""

    __slots__ = ("_raw",)

    def __init__(self, raw: str) -> None:
        self._raw = raw

    @property
    def env_var(self) -> str | None:
        return self._raw[4:] if self._raw.startswith("env:") else None

    def value(self) -> str | None:
        """The secret, or ``None`` when its environment variable is unset or empty."""
        var = self.env_var
        if var is None:
            return self._raw
        return os.environ.get(var) or None

    def describe(self) -> str:
        var = self.env_var
        return f"env:{var}" if var else "<literal>"

    def __repr__(self) -> str:
        return f"SecretRef({self.describe()})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretRef) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)


REDACTED = "[redacted]"


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each of ``secrets`` replaced by ``[redacted]``: for
    texts that come from outside (an upstream's error message may echo the key it was sent)."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _to_secret(value: object) -> SecretRef:
    if isinstance(value, SecretRef):
        return value
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string (a literal or env:VAR)")
    if value.startswith("env:") and not value[4:]:
        raise ValueError("env: must name a variable, e.g. env:OPENAI_API_KEY")
    return SecretRef(value)


Secret = Annotated[
    SecretRef,
    PlainValidator(_to_secret),
    PlainSerializer(lambda s: s.describe(), return_type=str),
]
