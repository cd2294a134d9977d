"""The ``model`` field of a chat request: a pool model or a virtual ``audit:``/``assist:`` one.

The one place where virtual model names are matched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from router.errors import UnknownModelError
from router.pairing.decision import ROLES, Role

AUTO = "auto"


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed ``model`` field: a pool model (``role`` None) or a virtual model."""

    role: Role | None
    primary: str | None
    """``None`` means ``auto``: the policy picks the primary too."""


class PoolNames(Protocol):
    """What name parsing needs of the pool (``router.pool.Pool`` is one)."""

    def __contains__(self, name: object) -> bool: ...

    @property
    def names(self) -> list[str]: ...


def parse_model(model: str, pool: PoolNames) -> Target:
    """``name`` → plain; ``audit:name`` / ``assist:name`` / ``…:auto`` → paired.

    Unknown names raise :class:`UnknownModelError` (404) listing the pool's names.
    """
    prefix, sep, rest = model.partition(":")
    if sep and prefix in ROLES:
        role: Role = "audit" if prefix == "audit" else "assist"
        if rest == AUTO:
            return Target(role, None)
        if rest not in pool:
            raise UnknownModelError(rest, pool.names)
        return Target(role, rest)
    if model not in pool:
        raise UnknownModelError(model, pool.names)
    return Target(None, model)


def virtual_models(names: Sequence[str]) -> list[str]:
    """Every virtual model name the service answers to, for ``GET /v1/models``."""
    return [f"{role}:{name}" for role in ROLES for name in (AUTO, *names)]
