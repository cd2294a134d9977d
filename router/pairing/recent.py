"""Recent routing decisions, so that a framework that ran a pair's calls itself can report them.

``POST /v1/route`` gives each decision an id (``dec_`` and 128 random bits) and keeps it here;
``POST /v1/diffs`` claims it with the two answers. The map is bounded and in memory, on
purpose: a decision is kept for ``ttl_s`` seconds (``paired.decision_ttl_s``, default an hour)
and at most ``max_entries`` (``paired.max_decisions``) are kept, the oldest going first. A
restarted instance forgets them, and behind a load balancer the report must reach the instance
that routed — an id is a ticket, not a signature. A claimed decision is gone: each is reported
once, so a retried report cannot count one pair of calls twice. The routed messages kept with
the decisions are bounded too (:data:`MAX_KEPT_BYTES`): 10,000 routed tasks of a MiB each held
10 GB for an hour.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson

from profiles.protocol import Message
from router.pairing.decision import Decision

DECISION_PREFIX = "dec_"
MAX_KEPT_BYTES = 64 * 2**20
"""The routed messages kept with the decisions, at most (as JSON): past it the oldest go."""


@dataclass(frozen=True, slots=True)
class Routed:
    """One routed decision and what it was asked for."""

    id: str
    decision: Decision
    messages: tuple[Message, ...]
    """The task as messages (a ``task`` text is one user message)."""
    at: float
    size: int = 0
    """The messages' size as JSON, in bytes."""


class RecentDecisions:
    """The decisions of the last ``ttl_s`` seconds (at most ``max_entries``), by id."""

    def __init__(self, ttl_s: float = 3600.0, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic,
                 max_bytes: int = MAX_KEPT_BYTES) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, Routed] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, decision: Decision, messages: Sequence[Message]) -> Routed:
        """Keep ``decision`` under a new id; expired and surplus entries are dropped first."""
        now = self._clock()
        self._expire(now)
        size = len(orjson.dumps(tuple(messages), default=str))
        while self._entries and (len(self._entries) >= self.max_entries
                                 or self._bytes + size > self.max_bytes):
            self._pop_oldest()
        routed = Routed(DECISION_PREFIX + os.urandom(16).hex(), decision, tuple(messages), now,
                        size)
        self._entries[routed.id] = routed
        self._bytes += size
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
        routed = self._entries.pop(decision_id, None)
        if routed is not None:
            self._bytes -= routed.size
        return self._fresh(routed, now)

    def restore(self, routed: Routed) -> None:
        """Put back a claimed decision whose report failed before anything was recorded, so
        that it can be reported again (until it expires, as before)."""
        if routed.id not in self._entries:
            self._entries[routed.id] = routed
            self._bytes += routed.size

    def _fresh(self, routed: Routed | None, now: float) -> Routed | None:
        # a restored entry sits behind newer ones, where _expire does not look
        return routed if routed is not None and now - routed.at < self.ttl_s else None

    def _expire(self, now: float) -> None:
        # insertion order is time order: the expired ones are at the front
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if now - oldest.at < self.ttl_s:
                return
            self._pop_oldest()

    def _pop_oldest(self) -> None:
        _, routed = self._entries.popitem(last=False)
        self._bytes -= routed.size
