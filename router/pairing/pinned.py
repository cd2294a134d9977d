"""Configured pairings: pinned partners and exclusions, which override the policy.

Persisted as one JSON document in the store (:class:`PairingsStorage`; the SQLite engine
keeps it as ``pairings.json`` in the data dir, written atomically).
"""

from __future__ import annotations

import json
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from router.errors import BadRequestError
from router.pairing.decision import Role


class Pairings(BaseModel):
    """``pinned[primary][role] = partner``; ``excluded`` pairs are never chosen, either way."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pinned: dict[str, dict[Role, str]] = Field(default_factory=dict)
    excluded: list[tuple[str, str]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _no_self_pairs(self) -> Pairings:
        for primary, roles in self.pinned.items():
            for role, partner in roles.items():
                if partner == primary:
                    raise ValueError(f"pinned.{primary}.{role}: a model cannot partner itself")
        return self

    def pinned_partner(self, primary: str, role: Role) -> str | None:
        return self.pinned.get(primary, {}).get(role)

    def is_excluded(self, a: str, b: str) -> bool:
        return (a, b) in self.excluded or (b, a) in self.excluded

    def unknown_models(self, known: set[str]) -> list[str]:
        names = set(self.pinned)
        names |= {p for roles in self.pinned.values() for p in roles.values()}
        names |= {m for pair in self.excluded for m in pair}
        return sorted(names - known)


def parse_pairings(data: object) -> Pairings:
    """Validate a JSON body; raises ``BadRequestError`` naming the first bad field."""
    try:
        return Pairings.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        raise BadRequestError(f"{where}: {err['msg']}", param=where) from None


class PairingsStorage(Protocol):
    """Where pinned pairings persist, as one JSON document (:class:`router.store.Store`)."""

    def describe(self) -> str:
        """Where, for errors."""

    async def load_pairings(self) -> str | None:
        """The saved document, ``None`` when never saved."""

    async def save_pairings(self, document: str) -> None:
        """Replace the document (raises ``StorageError`` when it cannot)."""


def pairings_document(pairings: Pairings) -> str:
    """The JSON document that persists ``pairings``."""
    return json.dumps(pairings.model_dump(mode="json"), indent=2, sort_keys=True)


def read_pairings(document: str | None) -> Pairings:
    """Pairings from their persisted document (none saved: no pairings); raises
    ``ValueError`` on a broken one."""
    return Pairings() if document is None else Pairings.model_validate_json(document)
