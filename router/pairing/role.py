"""The two roles a partner plays: ``assist`` (shared priors) and ``audit`` (divergent ones)."""

from __future__ import annotations

from typing import Literal

Role = Literal["assist", "audit"]
