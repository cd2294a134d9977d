"""Online agreement estimates and a sequential drift test, per (primary, partner, domain).

Blend. Each pair's live agreement is a Beta posterior whose prior is the profile's agreement
``a0`` worth :data:`PRIOR_WEIGHT` pseudo-observations: ``blended = (W·a0 + agreements) /
(W + comparisons)``. With W = 50 a profile keeps half the say until 50 live comparisons are in,
and fades after that; an unprofiled pair starts from Beta(1, 1) (mean 0.5, weight 2).

Drift. A two-sided Bernoulli CUSUM on the disagreement indicator: against ``p0`` (the profile's
predicted disagreement rate, or — for an unprofiled pair — the rate of its first
:data:`BURN_IN` comparisons, whose 95 % Wilson interval ends serve as the in-control rates of
the upward and the downward test, so that estimation error is not read as drift), it
accumulates the log-likelihood ratio of ``p1 = 2·p0``
(at least ``p0 + 0.05``) and of ``p0 / 2`` (at least :data:`P_FLOOR`: a baseline at the floor —
a pair that always agrees — cannot drift down, as one at the ceiling cannot drift up); a sum
beyond ``h`` (:data:`CUSUM_H`) is drift. The
threshold h = 10 keeps the in-control run length far above a day of traffic for a single pair
(the stable-pair test feeds 5,000 comparisons and reports the false alarms). After an alarm the
pair is marked ``drifted`` and re-learns its baseline from the next :data:`BURN_IN` comparisons.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Literal

from router.config import BURN_IN, CUSUM_H, PRIOR_WEIGHT
from router.live.rates import wilson_interval

EPOCH_COMPARISONS = 50
"""Comparisons between two refreshes of the live shifts the policy reads."""
MIN_SHIFT = 0.05
P_FLOOR = 0.005
"""Baselines are clipped to [P_FLOOR, 1 − P_FLOOR]: a rate of exactly 0 would make one
disagreement infinite evidence."""

PairKey = tuple[str, str, str]
"""(primary, partner, domain)."""
DriftState = Literal["learning", "ok", "drifted"]
Direction = Literal["up", "down"]


@dataclass(frozen=True, slots=True)
class DriftEvent:
    """A pair's live disagreement departed from its expectation."""

    primary: str
    partner: str
    domain: str
    direction: Direction
    expected: float
    observed: float
    """The disagreement rate since the baseline was set."""
    comparisons: int
    """Comparisons since the baseline was set (how long detection took)."""
    statistic: float
    at: float


def _llr(flagged: bool, p0: float, p1: float) -> float:
    return math.log(p1 / p0) if flagged else math.log((1 - p1) / (1 - p0))


def _clip(p: float) -> float:
    return min(max(p, P_FLOOR), 1 - P_FLOOR)


@dataclass
class BernoulliCusum:
    """Two-sided CUSUM of Bernoulli observations against a baseline rate ``p0``.

    ``high``/``low`` (default ``p0``) are the in-control rates the upward and downward tests
    start from: an estimated baseline uses its interval's ends, so estimation error does not
    read as drift.
    """

    p0: float
    h: float = CUSUM_H
    high: float | None = None
    low: float | None = None
    upper: float = 0.0
    lower: float = 0.0

    def __post_init__(self) -> None:
        self.p0 = _clip(self.p0)
        self.high = _clip(self.p0 if self.high is None else self.high)
        self.low = _clip(self.p0 if self.low is None else self.low)
        self.p_up = min(1 - P_FLOOR, max(2 * self.high, self.high + MIN_SHIFT))
        # mirrors p_up's ceiling: below the floor the baselines are clipped, so a pair whose
        # rate is 0 (and stays 0) would otherwise raise a "down" alarm every ~4,000 comparisons
        self.p_down = min(self.low, max(P_FLOOR, self.low / 2))
        self.alarm_statistic = 0.0

    def update(self, flagged: bool) -> Direction | None:
        """Add one observation; the direction of an alarm (both sums reset), else ``None``."""
        assert self.high is not None and self.low is not None
        self.upper = max(0.0, self.upper + _llr(flagged, self.high, self.p_up))
        self.lower = max(0.0, self.lower + _llr(flagged, self.low, self.p_down))
        direction: Direction | None = None
        if self.upper > self.h:
            direction = "up"
        elif self.lower > self.h:
            direction = "down"
        if direction is not None:
            self.alarm_statistic = max(self.upper, self.lower)
            self.upper = self.lower = 0.0
        return direction

    @property
    def statistic(self) -> float:
        return max(self.upper, self.lower)


@dataclass
class PairMonitor:
    """Blend and drift test of one (primary, partner, domain)."""

    predicted: float | None
    """The profile's disagreement rate, ``None`` when unprofiled."""
    prior_weight: float = PRIOR_WEIGHT
    burn_in: int = BURN_IN
    h: float = CUSUM_H
    comparisons: int = 0
    disagreements: int = 0
    state: DriftState = "learning"
    cusum: BernoulliCusum | None = None
    since_baseline: int = 0
    flagged_since_baseline: int = 0
    _burn: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.predicted is not None:
            self.cusum = BernoulliCusum(self.predicted, self.h)
            self.state = "ok"

    def blended_agreement(self) -> float:
        """Posterior mean agreement: the profile prior blended with the live outcomes."""
        if self.predicted is None:
            a0, weight = 0.5, 2.0
        else:
            a0, weight = 1.0 - self.predicted, self.prior_weight
        agreements = self.comparisons - self.disagreements
        return (weight * a0 + agreements) / (weight + self.comparisons)

    def observe(self, flagged: bool) -> Direction | None:
        """Count one comparison; an alarm's direction when it completes a drift."""
        self.comparisons += 1
        self.disagreements += flagged
        self.since_baseline += 1
        self.flagged_since_baseline += flagged
        if self.cusum is None:
            self._learn(flagged)
            return None
        return self.cusum.update(flagged)

    def _learn(self, flagged: bool) -> None:
        self._burn.append(flagged)
        if len(self._burn) >= self.burn_in:
            # the (k + 1)/(n + 2) estimate: never exactly 0 or 1 from a finite burn-in; the
            # tests start from the ends of its 95 % Wilson interval
            k, n = sum(self._burn), len(self._burn)
            low, high = wilson_interval(k, n)
            self.cusum = BernoulliCusum((k + 1) / (n + 2), self.h, high, low)
            self._burn = []
            # the baseline is set now: an alarm's observed rate and comparisons count from here
            # (they counted the burn-in too, diluting the rate with the old normal)
            self.since_baseline = self.flagged_since_baseline = 0
            self.state = "ok" if self.state == "learning" else self.state

    def rebaseline(self) -> None:
        """After an alarm: learn the new normal from the next ``burn_in`` comparisons."""
        self.cusum = None
        self.state = "drifted"
        self.since_baseline = self.flagged_since_baseline = 0


class DriftMonitor:
    """All pairs' monitors; :meth:`observe` returns a :class:`DriftEvent` on an alarm."""

    def __init__(self, prior_weight: float = PRIOR_WEIGHT, burn_in: int = BURN_IN,
                 h: float = CUSUM_H) -> None:
        self.prior_weight, self.burn_in, self.h = prior_weight, burn_in, h
        self.pairs: dict[PairKey, PairMonitor] = {}

    def monitor(self, key: PairKey, predicted: float | None) -> PairMonitor:
        found = self.pairs.get(key)
        if found is None:
            found = self.pairs[key] = PairMonitor(predicted, self.prior_weight, self.burn_in,
                                                  self.h)
        return found

    def observe(self, key: PairKey, flagged: bool, predicted: float | None = None,
                now: float | None = None) -> DriftEvent | None:
        """Count one comparison of ``key`` (``predicted`` is read on first sight only)."""
        pair = self.monitor(key, predicted)
        cusum = pair.cusum
        direction = pair.observe(flagged)
        if direction is None or cusum is None:
            return None
        event = DriftEvent(key[0], key[1], key[2], direction, cusum.p0,
                           pair.flagged_since_baseline / max(1, pair.since_baseline),
                           pair.since_baseline, cusum.alarm_statistic,
                           time.time() if now is None else now)
        pair.rebaseline()
        return event

    def live_shifts(self, primary: str) -> dict[str, tuple[float, int]]:
        """Per partner of ``primary``: how far live outcomes moved the blended agreement away
        from the profile's prediction (comparison-weighted over domains), and the comparisons.

        Only profiled pairs count (an unprofiled pair has no prediction to move from). This is
        what the pairing policy adds to the pair's profiled similarity.
        """
        sums: dict[str, list[float]] = {}
        for (p, partner, _), mon in self.pairs.items():
            if p != primary or mon.predicted is None or not mon.comparisons:
                continue
            acc = sums.setdefault(partner, [0.0, 0.0])
            shift = mon.blended_agreement() - (1.0 - mon.predicted)
            acc[0] += shift * mon.comparisons
            acc[1] += mon.comparisons
        return {k: (v[0] / v[1], int(v[1])) for k, v in sums.items()}

    @property
    def epoch(self) -> int:
        """Changes every :data:`EPOCH_COMPARISONS` comparisons: cached decisions expire with it."""
        return sum(m.comparisons for m in self.pairs.values()) // EPOCH_COMPARISONS

    def blended_agreement(self, pair: tuple[str, str], domain: str) -> float | None:
        """The policy's view of a pair's agreement in a domain; ``None`` if never compared."""
        found = self.pairs.get((pair[0], pair[1], domain))
        return None if found is None else found.blended_agreement()
