"""What goes in and out of a store: plain records and queries, the same for every engine."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from router.config import LiveSettings
from router.errors import BadRequestError

DIFF_COLUMNS = (
    "id", "created_at", "request_id", "primary_model", "partner", "role", "answered_by", "mode",
    "domains", "prompt_digest", "prompt", "primary_text", "partner_text", "agreement",
    "divergence", "threshold", "method", "unified_diff", "reason", "redacted")
"""The stored columns of a live diff, in the order engines insert them."""

Counts = list[tuple[str, str, str, int, int]]
"""``(primary, partner, domain, comparisons, disagreements)`` rows, ordered by the key."""
BucketedCounts = list[tuple[str, str, str, int, int, int]]
"""``(primary, partner, domain, bucket, comparisons, disagreements)`` rows."""


@dataclass(frozen=True, slots=True)
class ComparisonRow:
    """One comparison as counted in the rates."""

    at: float
    primary: str
    partner: str
    role: str
    domain: str
    flagged: bool


@dataclass(frozen=True, slots=True)
class DriftRow:
    """A drift alarm as stored (``GET /v1/drift``, ``diffroute drift``)."""

    at: float
    primary: str
    partner: str
    domain: str
    direction: str
    expected: float
    observed: float
    comparisons: int
    statistic: float


@dataclass(frozen=True, slots=True)
class Retention:
    """Live diffs older than ``max_age_s`` or beyond the newest ``max_records`` are deleted.

    Comparison rows follow the same age limit and keep at most ``max_comparisons``.
    """

    max_age_s: float | None = 30 * 86_400.0
    max_records: int | None = 100_000
    max_comparisons: int | None = 2_000_000

    @classmethod
    def of(cls, config: LiveSettings) -> Retention:
        """The retention the ``live`` settings ask for."""
        return cls(config.max_age_s, config.max_records, config.max_comparisons)


@dataclass(frozen=True, slots=True)
class DiffQuery:
    """Filters and a page of ``GET /v1/diffs`` (``after``: the cursor, a ``seq``)."""

    primary: str | None = None
    partner: str | None = None
    role: str | None = None
    domain: str | None = None
    since: float | None = None
    until: float | None = None
    after: int = 0
    """Oldest first: the page starts after this ``seq``; newest first: before it (0: the end)."""
    limit: int = 50
    newest_first: bool = False


def parse_time(value: str, param: str) -> float:
    """Epoch seconds or ISO 8601 (a naive time is UTC); a finite time."""
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise BadRequestError(f"{param} must be a finite time (epoch seconds or ISO 8601), "
                                  f"got '{value}'", param=param)
        return seconds
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequestError(f"{param} must be epoch seconds or ISO 8601, got '{value}'",
                              param=param) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def diff_json(row: dict[str, Any], domains: list[str], messages: Any) -> dict[str, Any]:
    """A stored live diff as the API shows it (``domains`` and ``messages`` decoded)."""
    return {
        "id": row["id"], "seq": int(row["seq"]), "created_at": row["created_at"],
        "request_id": row["request_id"], "primary": row["primary_model"],
        "partner": row["partner"], "role": row["role"], "answered_by": row["answered_by"],
        "mode": row["mode"], "domains": domains,
        "prompt_digest": row["prompt_digest"], "messages": messages,
        "primary_text": row["primary_text"], "partner_text": row["partner_text"],
        "agreement": row["agreement"], "divergence": row["divergence"],
        "threshold": row["threshold"], "method": row["method"],
        "unified_diff": row["unified_diff"], "reason": row["reason"],
        "redacted": bool(row["redacted"]),
    }
