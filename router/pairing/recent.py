"""Recent routing decisions, so that a framework that ran a pair's calls itself can report them.

``POST /v1/route`` gives each decision an id (``dec_`` and 128 random bits) and keeps it here;
``POST /v1/diffs`` claims it with the two answers. The map is bounded and in memory, on
purpose: a decision is kept for ``ttl_s`` seconds (``paired.decision_ttl_s``, default an hour)
and at most ``max_entries`` (``paired.max_decisions``) are kept, the oldest going first. A
restarted instance forgets them, and behind a load balancer the report must reach the instance
that routed — an id is a ticket, not a signature. A claimed decision is gone: each is reported
once, so a retried report cannot count one pair of calls twice.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from profiles.protocol import Message
from router.pairing.decision import Decision

DECISION_PREFIX = "dec_"


@dataclass(frozen=True, slots=True)
class Routed:
    """One routed decision and what it was asked for."""

    id: str
    decision: Decision
    messages: tuple[Message, ...]
    """The task as messages (a ``task`` text is one user message)."""
    at: float


class RecentDecisions:
    """The decisions of the last ``ttl_s`` seconds (at most ``max_entries``), by id."""

    def __init__(self, ttl_s: float = 3600.0, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, Routed] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, decision: Decision, messages: Sequence[Message]) -> Routed:
        """Keep ``decision`` under a new id; expired and surplus entries are dropped first."""
        now = self._clock()
        self._expire(now)
        while len(self._entries) >= self.max_entries:
            self._entries.popitem(last=False)
        routed = Routed(DECISION_PREFIX + os.urandom(16).hex(), decision, tuple(messages), now)
        self._entries[routed.id] = routed
        return routed

    def get(self, decision_id: str) -> Routed | None:
        """The decision, or ``None`` when the id is unknown, expired or claimed."""
        now = self._clock()
        self._expire(now)
        return self._fresh(self._entries.get(decision_id), now)

    def claim(self, decision_id: str) -> Routed | None:
        """Take the decision out (it can be reported once)."""
        now = self._clock()
        self._expire(now)
        return self._fresh(self._entries.pop(decision_id, None), now)

    def restore(self, routed: Routed) -> None:
        """Put back a claimed decision whose report failed before anything was recorded, so
        that it can be reported again (until it expires, as before)."""
        self._entries[routed.id] = routed

    def _fresh(self, routed: Routed | None, now: float) -> Routed | None:
        # a restored entry sits behind newer ones, where _expire does not look
        return routed if routed is not None and now - routed.at < self.ttl_s else None

    def _expire(self, now: float) -> None:
        # insertion order is time order: the expired ones are at the front
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if now - oldest.at < self.ttl_s:
                return
            self._entries.popitem(last=False)
