"""Disagreement rates per pair and domain: counts, a Wilson interval, the profile's prediction.

The Wilson score interval is used instead of the normal approximation because live rates are
often near 0 with few comparisons, where ``p ± z·sqrt(p(1−p)/n)`` collapses to a point.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

Z95 = 1.959963984540054

Predictor = Callable[[str, str, str], float | None]
"""``(primary, partner, domain)`` → the profile's disagreement rate, ``None`` if unprofiled."""


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``k`` successes in ``n`` trials ((0, 1) when n = 0)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_rows(counts: Iterable[tuple[str, str, str, int, int]], predict: Predictor,
              extra: Callable[[str, str, str], dict[str, Any]] | None = None
              ) -> list[dict[str, Any]]:
    """The rows of ``GET /v1/stats/disagreements`` from ``(primary, partner, domain, n, k)``."""
    rows = []
    for primary, partner, domain, n, k in counts:
        low, high = wilson_interval(k, n)
        predicted = predict(primary, partner, domain)
        row: dict[str, Any] = {
            "primary": primary, "partner": partner, "domain": domain, "comparisons": n,
            "disagreements": k, "rate": k / n if n else None,
            "interval": [round(low, 6), round(high, 6)], "interval_level": 0.95,
            "predicted_rate": None if predicted is None else round(predicted, 6),
        }
        if extra is not None:
            row.update(extra(primary, partner, domain))
        rows.append(row)
    return rows
