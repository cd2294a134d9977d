"""The live-diff stream: a slow subscriber never slows the others; resume is complete."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from router.live.broadcast import Broadcaster
from router.paired.compare import NoiseAwareComparer
from router.service.state import STATE
from router.store import DiffQuery
from tests.e2e.harness import make_settings, scripted, serve
from tests.e2e.test_live_api import read_events
from tests.router.live.test_live_store import record


def diff(seq: int, primary: str = "alpha") -> dict[str, object]:
    return {"seq": seq, "primary": primary, "partner": "beta", "role": "audit",
            "domains": ["general"], "id": f"ld_{seq}"}


def test_a_subscriber_that_falls_behind_is_told_and_the_others_get_everything() -> None:
    broadcaster = Broadcaster(buffer_size=5)
    slow, quick = broadcaster.subscribe(DiffQuery()), broadcaster.subscribe(DiffQuery())
    received: list[int] = []
    for seq in range(1, 21):
        broadcaster.publish(diff(seq))
        received += [s for s, _ in quick.drain()]
    assert received == list(range(1, 21))
    assert slow.overflowed and [s for s, _ in slow.drain()] == [1, 2, 3, 4, 5]


def test_a_subscriber_that_stopped_reading_holds_a_bounded_number_of_bytes() -> None:
    """A live diff carries the prompt and both answers (tens of KB, up to MBs): 10,000 of them
    held for a client that stopped reading were gigabytes (90 KB diffs: 24 MB per 268)."""
    broadcaster = Broadcaster(buffer_bytes=10_000)
    stalled, quick = broadcaster.subscribe(DiffQuery()), broadcaster.subscribe(DiffQuery())
    received: list[int] = []
    for seq in range(1, 21):
        broadcaster.publish({**diff(seq), "primary_text": "x" * 3_000})
        received += [s for s, _ in quick.drain()]
    assert received == list(range(1, 21))
    held = stalled.drain()
    assert stalled.overflowed and [s for s, _ in held] == [1, 2, 3]
    assert sum(len(event) for _, event in held) <= 10_000
    big = broadcaster.subscribe(DiffQuery())  # one event bigger than the bound still goes
    broadcaster.publish({**diff(21), "primary_text": "x" * 20_000})
    assert not big.overflowed and [s for s, _ in big.drain()] == [21]


def test_subscribers_are_matched_once_per_filter_and_get_one_encoding() -> None:
    broadcaster = Broadcaster()
    same = [broadcaster.subscribe(DiffQuery(primary="gamma")) for _ in range(1000)]
    wanted = broadcaster.subscribe(DiffQuery(primary="alpha"))
    broadcaster.publish(diff(1))
    assert all(not sub.events for sub in same)
    (seq, event), = wanted.drain()
    assert seq == 1 and event.startswith(b"id: 1\nevent: live_diff\ndata: {")
    broadcaster.publish(diff(2, primary="gamma"))
    encodings = {id(sub.events[0][1]) for sub in same}
    assert len(encodings) == 1  # encoded once for a thousand streams


async def test_resume_pages_through_the_store_however_far_back(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, [scripted("alpha", "a", "Paris."),
                                        scripted("beta", "b", "Lyon.")])
    comparer = NoiseAwareComparer()
    async with serve(settings) as running:
        sink = running.app[STATE].live
        assert sink is not None
        for _ in range(2_600):
            await sink.store.add_diff(sink.diff_values(record(
                "Paris.", "Lyon.", comparer("Paris.", "Lyon.", ["geography"]))))
        async with aiohttp.ClientSession() as http, http.get(
                running.base_url + "/diffs/stream?heartbeat=0.05",
                headers={"Last-Event-ID": "100"}) as stream:
            events = await asyncio.wait_for(read_events(stream, 2_500), 30)
    assert [e["seq"] for e in events] == list(range(101, 2_601))
