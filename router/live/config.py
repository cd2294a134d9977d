"""``extensions.live`` of the settings: redaction, retention, durability, drift.

Example (pool YAML)::

    extensions:
      live:
        redact: true          # store only the prompt digest, not the prompt or the answers
        max_age_s: 604800     # retention by age (default 30 days)
        max_records: 50000    # retention by count (default 100,000 live diffs)
        synchronous: FULL     # or NORMAL: survives kill -9 but not power loss
        reprofile_on_drift: true
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from router.config import Settings
from router.errors import ConfigError
from router.live.drift import BURN_IN, CUSUM_H, PRIOR_WEIGHT
from router.live.store import Retention


class LiveConfig(BaseModel):
    """The live-diff settings; unknown keys are rejected like the rest of the settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    redact: bool = False
    max_age_s: float | None = Field(30 * 86_400.0, gt=0)
    max_records: int | None = Field(100_000, ge=1)
    max_comparisons: int | None = Field(2_000_000, ge=1)
    retention_interval_s: float = Field(300.0, gt=0)
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    prior_weight: float = Field(PRIOR_WEIGHT, ge=0)
    burn_in: int = Field(BURN_IN, ge=1)
    cusum_h: float = Field(CUSUM_H, gt=0)
    reprofile_on_drift: bool = False
    """Write a ``reprofile_requested`` row for the partner when its pair drifts."""
    profiles: bool = True
    """Load profiles at startup for noise floors and predicted rates (off: defaults only)."""
    suite: str = "default"
    profile_samples: int = Field(5, ge=2)
    profile_temperature: float = Field(0.7, ge=0, le=2)

    @property
    def retention(self) -> Retention:
        return Retention(self.max_age_s, self.max_records, self.max_comparisons)


def live_config(settings: Settings) -> LiveConfig:
    """Validate ``settings.extensions['live']`` (absent: every default)."""
    raw = settings.extensions.get("live", {})
    try:
        return LiveConfig.model_validate(raw or {})
    except ValidationError as exc:
        problems = [f"extensions.live.{'.'.join(map(str, e['loc']))}: {e['msg']}"
                    for e in exc.errors()]
        raise ConfigError(problems) from None
