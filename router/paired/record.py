"""The live-diff record: what one comparison of a paired call leaves behind, and where it goes.

The engine builds a :class:`LiveDiffRecord` for every comparison (agreements too: rates need
every comparison) and hands it to a :class:`LiveDiffSink`. The service's durable sink lives in
:mod:`router.live.sink`; :class:`InMemoryLiveDiffSink` serves tests and embedding.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from profiles.protocol import Message
from router.paired.compare import Comparison
from router.pairing.decision import Role


@dataclass(frozen=True, slots=True)
class LiveDiffRecord:
    """One comparison of a paired call (agreements too: rates need every comparison)."""

    id: str
    created_at: float
    request_id: str
    primary: str
    partner: str
    role: Role
    answered_by: str
    mode: str
    """``concurrent`` / ``review`` for audits, ``shadow`` for assists."""
    domains: tuple[str, ...]
    prompt_digest: str
    messages: tuple[Message, ...]
    primary_text: str
    partner_text: str
    comparison: Comparison
    reason: str

    @property
    def flagged(self) -> bool:
        return self.comparison.flagged


class LiveDiffSink(Protocol):
    """Where comparisons go. Returns the stored live diff's id, or ``None`` if not kept.

    The in-memory sink keeps flagged comparisons only; the durable sink (``router.live``)
    counts every comparison and stores the flagged ones under ``record.id``.
    """

    async def record(self, record: LiveDiffRecord) -> str | None: ...


class InMemoryLiveDiffSink:
    """The last ``limit`` flagged records, and counts of everything."""

    def __init__(self, limit: int = 10_000) -> None:
        self.records: deque[LiveDiffRecord] = deque(maxlen=limit)
        self.comparisons = 0
        self.disagreements = 0

    async def record(self, record: LiveDiffRecord) -> str | None:
        self.comparisons += 1
        if not record.flagged:
            return None
        self.disagreements += 1
        self.records.append(record)
        return record.id

    def get(self, live_diff_id: str) -> LiveDiffRecord | None:
        return next((r for r in self.records if r.id == live_diff_id), None)


def new_live_diff_id() -> str:
    """128 random bits, as uuid4 has, at a fraction of its cost."""
    return "ld_" + os.urandom(16).hex()


_CANONICAL = json.JSONEncoder(sort_keys=True, ensure_ascii=False)
"""``json.dumps(…, sort_keys=True, ensure_ascii=False)``, built once (``dumps`` with options
builds an encoder per call: a third of the digest's cost)."""


def prompt_digest(messages: Sequence[Message]) -> str:
    """A stable digest of a conversation (records stay joinable when prompts are redacted)."""
    canonical = _CANONICAL.encode([dict(m) for m in messages])
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
