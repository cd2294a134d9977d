"""The pairing service: one way to ask for a decision, off the event loop when it may block."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

import pytest

from router.config import Settings
from router.errors import ConfigError, NoPairError, StartupError
from router.pairing.decision import Decision, LiveSource, RouteRequest
from router.pairing.pinned import Pairings, pairings_document, read_pairings
from router.pairing.service import PairingService
from router.store import Store, open_store
from router.store.sqlite import SqliteStore
from tests.e2e.harness import call, make_settings, serve, standard_models


class RecordingDecider:
    """Decides alpha → beta and notes the thread each decision ran on."""

    version = "rec-1"
    domains = frozenset({"general", "geography", "arithmetic"})

    def __init__(self, blocks: bool = True, pairings: Pairings | None = None) -> None:
        self.blocks = blocks
        self.pairings = pairings or Pairings()
        self.threads: list[int] = []

    def with_pairings(self, pairings: Pairings) -> RecordingDecider:
        return RecordingDecider(self.blocks, pairings)

    def blocking(self, request: RouteRequest) -> bool:
        return self.blocks

    def decide(self, request: RouteRequest) -> Decision:
        self.threads.append(threading.get_ident())
        partner = self.pairings.pinned_partner(request.primary or "alpha", request.role)
        return Decision(request.primary or "alpha", partner or "beta", request.role, 0.5,
                        "recorded", domains={"general": 1.0}, profile_version=self.version)


async def test_a_blocking_decision_runs_in_a_worker_thread() -> None:
    decider = RecordingDecider(blocks=True)
    service = PairingService(lambda p: decider, Pairings(), decider)
    decision = await service.decide(RouteRequest(role="audit", primary="alpha", task="x"))
    assert decision.partner == "beta"
    assert decider.threads and decider.threads[0] != threading.get_ident()


async def test_a_cheap_decision_is_answered_inline() -> None:
    decider = RecordingDecider(blocks=False)
    service = PairingService(lambda p: decider, Pairings(), decider)
    await service.decide(RouteRequest(role="audit", primary="alpha"))
    assert decider.threads == [threading.get_ident()]


async def test_replacing_pairings_re_pins_the_policy_without_a_rebuild_and_persists(
        store: Store) -> None:
    """New pairings need no rebuild of the policy (it took 1.5–2.3 s on the embedded pool):
    the current decider is re-pinned; profiles rebuilt elsewhere rebuild it, and a build
    that fails keeps the old one."""
    builds: list[Pairings] = []

    def build(pairings: Pairings) -> RecordingDecider:
        builds.append(pairings)
        if "ghost" in pairings.pinned:
            raise NoPairError("ghost", "audit", "cannot build")
        return RecordingDecider(pairings=pairings)

    service = await PairingService.open(build, store)
    pinned = Pairings(pinned={"alpha": {"audit": "gamma"}})
    await service.replace(pinned)
    assert read_pairings(await store.load_pairings()) == pinned and service.pairings == pinned
    assert (await service.decide(RouteRequest(role="audit", primary="alpha"))).partner == "gamma"
    assert len(builds) == 1  # the first one only
    ghost = Pairings(pinned={"ghost": {"audit": "alpha"}})
    await store.save_pairings(pairings_document(ghost))
    service.changed("profiles")
    assert not await service.refresh()  # the rebuild failed: the old policy stays
    assert service.pairings == pinned and len(builds) == 2


async def test_a_broken_pairings_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "pairings.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid pairings document") as caught:
        await PairingService.open(lambda p: RecordingDecider(), SqliteStore(tmp_path))
    assert caught.value.source == str(tmp_path / "pairings.json")  # not live.sqlite3
    assert "\n" not in str(caught.value)  # one line, not pydantic's three


async def test_a_pairings_file_that_cannot_be_read_is_a_startup_error(tmp_path: Path) -> None:
    (tmp_path / "pairings.json").mkdir()
    with pytest.raises(StartupError, match=r"pairings\.json"):
        await PairingService.open(lambda p: RecordingDecider(), SqliteStore(tmp_path))


async def test_a_pairings_file_damaged_while_serving_does_not_stop_the_follower(
        tmp_path: Path) -> None:
    """Bytes that are not UTF-8 raised an exception the follower did not expect: it died
    without a word, and no pin was read again until a restart."""
    store = SqliteStore(tmp_path)
    service = await PairingService.open(lambda p: RecordingDecider(pairings=p), store)
    follower = asyncio.create_task(service.follow(poll_s=0.02))
    try:
        (tmp_path / "pairings.json").write_bytes(b"\xff\xfe{")
        service.changed("pairings")
        await asyncio.sleep(0.1)
        assert not follower.done()
        await _a_pin_is_followed(service, store, notify=True)
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower


async def test_chat_and_route_ask_the_decider_off_the_event_loop(tmp_path: Path) -> None:
    """Whatever the embedder, a decision that may block never runs on the loop's thread —
    on the chat path as on /v1/route (both ask the pairing service)."""
    deciders: list[RecordingDecider] = []

    def factory(settings: object, pool: object, pairings: Pairings,
                live: LiveSource | None) -> RecordingDecider:
        deciders.append(RecordingDecider(blocks=True, pairings=pairings))
        return deciders[-1]

    loop_thread = threading.get_ident()
    async with serve(make_settings(tmp_path, standard_models()),
                     decider_factory=factory) as running:
        status, body = await call(running, "POST", "/v1/chat/completions", {
            "model": "audit:alpha", "messages": [{"role": "user", "content": "Capital?"}]})
        assert status == 200 and body["diffroute"]["partner"] == "beta"
        status, body = await call(running, "POST", "/v1/route",
                                  {"role": "audit", "primary": "alpha", "task": "Capital?"})
        assert status == 200 and body["partner"] == "beta"
    threads = deciders[-1].threads
    assert len(threads) == 2 and loop_thread not in threads


async def test_pairings_saved_by_another_instance_reach_this_one(
        engine_settings: Settings) -> None:
    async with open_store(engine_settings) as here, open_store(engine_settings) as there:
        ours = await PairingService.open(lambda p: RecordingDecider(pairings=p), here)
        theirs = await PairingService.open(lambda p: RecordingDecider(pairings=p), there)
        here.watch(ours.changed)
        follower = asyncio.create_task(ours.follow(poll_s=0.05))
        try:
            pinned = Pairings(pinned={"alpha": {"audit": "gamma"}})
            await theirs.replace(pinned)
            async with asyncio.timeout(1):  # within a second
                while ours.pairings != pinned:  # noqa: ASYNC110  # the follower's effect
                    await asyncio.sleep(0.01)
            decision = await ours.decide(RouteRequest(role="audit", primary="alpha"))
            assert decision.partner == "gamma"
            assert not await ours.refresh()  # nothing new: nothing rebuilt
            await there.save_pairings('{"pinned": {"alpha": {"audit": "alpha"}}}')
            assert not await ours.refresh() and ours.pairings == pinned  # refused, kept
        finally:
            follower.cancel()


async def test_a_rebuild_that_fails_unexpectedly_does_not_stop_the_follower(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rebuild after a profile build that could not read the profiles (the `openai`
    embedder answering 503: an ``EmbeddingError``) killed the follower without a word: no
    later build, and no pin saved by another instance, reached the policy until a restart.
    It is logged, the old policy stays, and the rebuild is tried again a while later."""
    from profiles.embed import EmbeddingError

    monkeypatch.setattr("router.pairing.service.REBUILD_RETRY_S", 0.05)
    down = [True]
    builds: list[Pairings] = []

    def build(pairings: Pairings) -> RecordingDecider:
        builds.append(pairings)
        if len(builds) > 1 and down[0]:
            raise EmbeddingError("http://127.0.0.1:9/v1/embeddings answered 503")
        return RecordingDecider(pairings=pairings)

    store = SqliteStore(tmp_path)
    service = await PairingService.open(build, store)
    first = service.decider
    follower = asyncio.create_task(service.follow(poll_s=0.02))
    try:
        service.changed("profiles")
        async with asyncio.timeout(5):
            while len(builds) < 3:  # noqa: ASYNC110  # tried, then tried again
                await asyncio.sleep(0.01)
        assert not follower.done() and service.decider is first  # the old policy stays
        down[0] = False
        async with asyncio.timeout(5):
            while service.decider is first:  # noqa: ASYNC110  # rebuilt once it can be
                await asyncio.sleep(0.01)
        await _a_pin_is_followed(service, store, notify=False)  # as another instance would
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower


async def _a_pin_is_followed(service: PairingService, store: SqliteStore,
                              notify: bool) -> None:
    """Save a pin to the store (and say so, or let the follower's poll find it) and wait, 5 s
    at most, for the service's follower to take it."""
    pinned = Pairings(pinned={"alpha": {"audit": "gamma"}})
    await store.save_pairings(pairings_document(pinned))
    if notify:
        service.changed("pairings")
    async with asyncio.timeout(5):
        while service.pairings != pinned:  # noqa: ASYNC110  # the follower's effect
            await asyncio.sleep(0.01)
