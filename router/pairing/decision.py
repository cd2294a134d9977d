"""What a pairing decision is, and the interface the service asks decisions from.

The policy (``router.pairing.policy``) produces :class:`Decision` values as pure functions; the
:class:`Decider` protocol is what the HTTP service depends on, so the service never reaches into
profiles, graphs or indexes itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from router.pairing.role import Role

if TYPE_CHECKING:
    from router.pairing.pinned import Pairings

__all__ = ["Role"]

ROLES: tuple[Role, ...] = ("assist", "audit")


@dataclass(frozen=True, slots=True)
class Evidence:
    """A measured fact a decision rests on."""

    metric: str
    """e.g. ``kappa_p``, ``error_consistency``, ``accuracy``."""
    value: float | None
    interval: tuple[float, float] | None = None
    n_probes: int = 0
    domains: tuple[str, ...] = ()
    model: str | None = None
    """The candidate this evidence is about."""

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value,
                "interval": None if self.interval is None else list(self.interval),
                "n_probes": self.n_probes, "domains": list(self.domains), "model": self.model}


@dataclass(frozen=True, slots=True)
class Decision:
    """(primary, partner, role) with the score and the reason it was chosen."""

    primary: str
    partner: str
    role: Role
    score: float | None
    reason: str
    evidence: tuple[Evidence, ...] = ()
    domains: Mapping[str, float] = field(default_factory=dict)
    """Domain weights of the task that drove the decision."""
    profile_version: str = ""
    panel: tuple[str, ...] = ()
    """For panels: all chosen partners (``partner`` is the first)."""
    effective_votes: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The decision as JSON-ready data (by hand: ``dataclasses.asdict`` deep-copies)."""
        return {
            "primary": self.primary, "partner": self.partner, "role": self.role,
            "score": self.score, "reason": self.reason,
            "evidence": [e.to_json() for e in self.evidence],
            "domains": dict(self.domains), "profile_version": self.profile_version,
            "panel": list(self.panel), "effective_votes": self.effective_votes,
        }


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """What the service knows when it needs a partner."""

    role: Role
    primary: str | None = None
    """``None`` or ``"auto"``: let the policy pick the primary too."""
    task: str = ""
    candidates: Sequence[str] | None = None
    domain: str | None = None
    """Force the task's domain instead of inferring it from the text."""
    panel: int = 1
    blocked: frozenset[str] = frozenset()
    """Models whose circuit is open now: never an ``auto`` primary or a partner."""


class LiveSource(Protocol):
    """What a decider reads from live outcomes (``router.live.drift.DriftMonitor`` is one)."""

    @property
    def epoch(self) -> int:
        """Changes whenever the live shifts may have changed (cached decisions expire)."""
        ...

    def live_shifts(self, primary: str) -> dict[str, tuple[float, int]]: ...


class Decider(Protocol):
    """Anything that turns a route request into a decision (raises ``NoPairError``)."""

    def decide(self, request: RouteRequest) -> Decision: ...

    def with_pairings(self, pairings: Pairings) -> Decider:
        """The same policy over other pinned pairings (cheap: nothing is re-read or
        re-measured, so a pin takes effect at once)."""
        ...

    def blocking(self, request: RouteRequest) -> bool:
        """Whether :meth:`decide` may take long enough to belong in a worker thread."""
        ...

    @property
    def version(self) -> str:
        """The profile/graph version decisions are made from."""
        ...

    @property
    def domains(self) -> frozenset[str]:
        """The domains a request may name (``diffroute.domain``): the profiled ones."""
        ...
