"""Fanning committed live diffs out to SSE subscribers, without letting one slow the others.

Each diff is encoded once (``id:``, ``event: live_diff``, ``data:``) whatever the number of
subscribers. Subscribers are grouped by their filter, so a thousand streams with one filter
cost one match per diff. Each subscription has a bounded buffer — in events and in bytes (a
live diff holds the prompt and both answers: 10,000 of them can be gigabytes, held for one
client that stopped reading) —: a subscriber that falls that far behind is dropped from the
fan-out and told (``overflowed``) — its stream ends with the id to resume from, and the store,
the source of truth, serves the resume.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson

from router.store import DiffQuery

BUFFER_EVENTS = 10_000
"""Events a subscription may have waiting for its stream…"""
BUFFER_BYTES = 32 * 2**20
"""…and bytes (at least one event, whatever its size)."""

FilterKey = tuple[str | None, str | None, str | None, str | None, float | None, float | None]
"""(primary, partner, role, domain, since, until) of a subscription; ``None`` matches
anything. The times bound ``created_at`` as ``GET /v1/diffs`` does (``since`` ≤ it <
``until``), for the live part of a stream as for its backlog."""


def filter_key(query: DiffQuery) -> FilterKey:
    return (query.primary, query.partner, query.role, query.domain, query.since, query.until)


def matches(diff: dict[str, Any], key: FilterKey) -> bool:
    primary, partner, role, domain, since, until = key
    return ((primary is None or diff["primary"] == primary)
            and (partner is None or diff["partner"] == partner)
            and (role is None or diff["role"] == role)
            and (domain is None or domain in diff["domains"])
            and (since is None or diff["created_at"] >= since)
            and (until is None or diff["created_at"] < until))


def encode_event(diff: dict[str, Any]) -> bytes:
    """One ``live_diff`` server-sent event (its id is the diff's sequence number)."""
    data = orjson.dumps(diff, option=orjson.OPT_NON_STR_KEYS)
    return b"id: %d\nevent: live_diff\ndata: %s\n\n" % (diff["seq"], data)


@dataclass(eq=False)
class Subscription:
    """One stream's bounded buffer of encoded events."""

    key: FilterKey
    limit: int
    events: deque[tuple[int, bytes]]
    wake: asyncio.Event
    overflowed: bool = False
    closed: bool = False
    max_bytes: int = BUFFER_BYTES
    buffered: int = 0
    """Bytes of the events waiting."""

    def full(self, size: int) -> bool:
        """Whether one more event of ``size`` bytes would put it too far behind."""
        return len(self.events) >= self.limit or (
            bool(self.events) and self.buffered + size > self.max_bytes)

    def drain(self) -> list[tuple[int, bytes]]:
        """Everything buffered, oldest first; the buffer is empty afterwards."""
        out = list(self.events)
        self.events.clear()
        self.buffered = 0
        self.wake.clear()
        return out


class Broadcaster:
    """Fans committed live diffs out to subscriptions, in commit order."""

    def __init__(self, buffer_size: int = BUFFER_EVENTS,
                 buffer_bytes: int = BUFFER_BYTES) -> None:
        self._groups: dict[FilterKey, set[Subscription]] = {}
        self._buffer_size = buffer_size
        self._buffer_bytes = buffer_bytes

    @property
    def listening(self) -> bool:
        """Whether any stream is subscribed (else a diff need not be turned into JSON)."""
        return bool(self._groups)

    def subscribe(self, query: DiffQuery) -> Subscription:
        sub = Subscription(filter_key(query), self._buffer_size, deque(), asyncio.Event(),
                           max_bytes=self._buffer_bytes)
        self._groups.setdefault(sub.key, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        group = self._groups.get(sub.key)
        if group is not None:
            group.discard(sub)
            if not group:
                del self._groups[sub.key]

    def publish(self, diff: dict[str, Any]) -> None:
        event: tuple[int, bytes] | None = None
        for key, group in list(self._groups.items()):
            if not matches(diff, key):
                continue
            if event is None:
                event = (int(diff["seq"]), encode_event(diff))
            for sub in list(group):
                if sub.full(len(event[1])):  # too far behind: it resumes from the store
                    sub.overflowed = True
                    sub.wake.set()
                    self.unsubscribe(sub)
                    continue
                sub.events.append(event)
                sub.buffered += len(event[1])
                sub.wake.set()

    def close(self) -> None:
        """End every stream (at shutdown)."""
        for group in list(self._groups.values()):
            for sub in group:
                sub.closed = True
                sub.wake.set()
        self._groups.clear()
