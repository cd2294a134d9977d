"""Configured pairings: pinned partners and exclusions, which override the policy.

Persisted as ``pairings.json`` in the data dir, written atomically (temp file, fsync, rename)
so a crash never leaves a half-written file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

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


class PairingsStore:
    """The persisted pairings of one data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "pairings.json"

    def load(self) -> Pairings:
        try:
            return Pairings.model_validate_json(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return Pairings()

    def save(self, pairings: Pairings) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".pairings.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(pairings.model_dump(mode="json"), fh, indent=2, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
