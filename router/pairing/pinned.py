"""Configured pairings: pinned partners and exclusions, which override the policy.

Persisted as one JSON document in the store (:class:`PairingsStorage`; the SQLite engine
keeps it as ``pairings.json`` in the data dir, written atomically).
"""

from __future__ import annotations

import json
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from router.errors import BadRequestError
from router.pairing.role import Role


class Pairings(BaseModel):
    """``pinned[primary][role] = partner``; ``excluded`` pairs are never chosen, either way."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pinned: dict[str, dict[Role, str]] = Field(default_factory=dict)
    excluded: list[tuple[str, str]] = Field(default_factory=list)

    @field_validator("pinned")
    @classmethod
    def _no_empty_entries(cls, pinned: dict[str, dict[Role, str]]) -> dict[str, dict[Role, str]]:
        """``{"a1": {}}`` pins nothing: it is not kept (it was stored, and listed, as a pin)."""
        return {primary: roles for primary, roles in pinned.items() if roles}

    @field_validator("excluded")
    @classmethod
    def _each_pair_once(cls, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """An exclusion holds both ways: ``[a, b]`` again, or ``[b, a]``, is the same one (the
        dashboard listed it twice)."""
        seen: set[frozenset[str]] = set()
        out = []
        for pair in pairs:
            if frozenset(pair) not in seen or pair[0] == pair[1]:
                seen.add(frozenset(pair))
                out.append(pair)
        return out

    def self_pin(self) -> tuple[str, str] | None:
        """``(message, param)`` of a model pinned as its own partner, else ``None``."""
        for primary, roles in self.pinned.items():
            for role, partner in roles.items():
                if partner == primary:
                    where = f"pinned.{primary}.{role}"
                    return f"{where}: a model cannot partner itself", where
        return None

    def problem(self) -> tuple[str, str] | None:
        """``(message, param)`` of the first pairing that cannot hold — a model pinned or
        excluded with itself, a pinned partner that is also excluded — else ``None``."""
        if (self_pinned := self.self_pin()) is not None:
            return self_pinned
        for primary, roles in self.pinned.items():
            for role, partner in roles.items():
                where = f"pinned.{primary}.{role}"
                if self.is_excluded(primary, partner):
                    return (f"{where}: '{partner}' is pinned as '{primary}''s {role} partner "
                            f"and excluded with it ({self._exclusion(primary, partner)}); "
                            "keep one of the two", where)
        for i, (a, b) in enumerate(self.excluded):
            if a == b:
                return (f"excluded[{i}]: a model is never its own partner, so excluding "
                        f"'{a}' with itself does nothing", f"excluded[{i}]")
        return None

    def _exclusion(self, a: str, b: str) -> str:
        i = next(i for i, pair in enumerate(self.excluded) if set(pair) == {a, b})
        return f"excluded[{i}]"

    def pinned_partner(self, primary: str, role: Role) -> str | None:
        return self.pinned.get(primary, {}).get(role)

    def is_excluded(self, a: str, b: str) -> bool:
        return (a, b) in self.excluded or (b, a) in self.excluded

    def unknown_models(self, known: set[str]) -> list[str]:
        return sorted((self._pinned_names() | self._excluded_names()) - known)

    def unknown_param(self, known: set[str]) -> str:
        """Where the first unknown model is: ``pinned.A`` (a primary), ``pinned.A.audit`` (a
        partner), ``excluded[i]``."""
        for primary, roles in self.pinned.items():
            at = f"pinned.{primary}" if primary else 'pinned[""]'  # not "pinned."
            if primary not in known:
                return at
            for role, partner in roles.items():
                if partner not in known:
                    return f"{at}.{role}"
        return next((f"excluded[{i}]" for i, pair in enumerate(self.excluded)
                     if set(pair) - known), "excluded")

    def _pinned_names(self) -> set[str]:
        return set(self.pinned) | {p for roles in self.pinned.values() for p in roles.values()}

    def _excluded_names(self) -> set[str]:
        return {m for pair in self.excluded for m in pair}


def parse_pairings(data: object) -> Pairings:
    """Validate a JSON body; raises ``BadRequestError`` naming the first bad field, or the
    first pairing that cannot hold (:meth:`Pairings.problem`)."""
    try:
        pairings = Pairings.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}"
                        for p in err["loc"] if p != "[key]").lstrip(".") or "body"
        raise BadRequestError(f"{where}: {err['msg']}", param=where) from None
    problem = pairings.problem()
    if problem is not None:
        raise BadRequestError(problem[0], param=problem[1])
    return pairings


class PairingsStorage(Protocol):
    """Where pinned pairings persist, as one JSON document (:class:`router.store.Store`)."""

    def describe(self) -> str:
        """Where, for errors."""

    def pairings_source(self) -> str:
        """Where the pairings document itself is (its file, or table), for errors."""

    async def load_pairings(self) -> str | None:
        """The saved document, ``None`` when never saved."""

    async def save_pairings(self, document: str) -> None:
        """Replace the document (raises ``StorageError`` when it cannot)."""


def pairings_document(pairings: Pairings) -> str:
    """The JSON document that persists ``pairings``."""
    return json.dumps(pairings.model_dump(mode="json"), indent=2, sort_keys=True)


def read_pairings(document: str | None) -> Pairings:
    """Pairings from their persisted document (none saved: no pairings); raises
    ``ValueError`` on a broken one (or one that pins a model to itself). A pin that is also
    excluded, which older versions saved, still loads: the exclusion wins, as it always did."""
    pairings = Pairings() if document is None else Pairings.model_validate_json(document)
    if (self_pinned := pairings.self_pin()) is not None:
        raise ValueError(self_pinned[0])
    return pairings
