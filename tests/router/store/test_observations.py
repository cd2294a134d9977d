"""Observations (what profiles are built from) in each engine's store, and a profile build on
a shared database reaching a running instance without a restart."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from profiles.protocol import Sample, TokenLogprob
from router.config import Settings
from router.pairing.decider import build_decider
from router.profiling.build import build_profiles
from router.service.state import STATE
from router.store import open_observations
from tests.e2e.harness import serve
from tests.router.pairing.test_decider import make_settings
from tests.stores import ENGINES, fresh_database, on_postgres

CHOICE = Sample("B", "stop", (TokenLogprob("B", -0.1), TokenLogprob("A", -2.5)))


def test_observations_round_trip(engine_settings: Settings) -> None:
    with open_observations(engine_settings) as store:
        store.remember_model("k1", "alpha", {"kind": "scripted", "seed": 1})
        store.put("k1", "d1", "alpha", "p-1", "h1", [(0, CHOICE), (1, Sample("A", "stop"))],
                  12, 1, 0.25)
        store.put("k1", "d1", "alpha", "p-2", "h2", [(0, Sample("free text", "length"))],
                  8, 3, 0.5)
        store.put("k1", "d2", "alpha", "p-1", "h1", [(0, Sample("other decoding", "stop"))],
                  8, 3, 0.5)
    with open_observations(engine_settings) as store:  # reopened: all of it is there
        assert store.present("k1", "d1") == {("h1", 0), ("h1", 1), ("h2", 0)}
        samples = store.samples("k1", "d1", ["h1"])
        assert [(s.probe_id, s.index) for s in samples] == [("p-1", 0), ("p-1", 1)]
        assert samples[0].sample == CHOICE and samples[0].latency_s == 0.25
        assert len(store.samples("k1", "d1")) == 3
        assert (store.last_observed("k1", "d1") or 0) > 0
        assert store.last_observed("k1", "nothing") is None


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_profile_build_reaches_a_running_instance(tmp_path: Path, engine: str) -> None:
    """On SQLite too: a `serve` on the data dir never saw a build made beside it (only
    PostgreSQL announced one), so its policy stayed without profiles until a restart."""
    async with contextlib.AsyncExitStack() as stack:
        settings = make_settings(tmp_path)
        if engine == "postgres":
            settings = on_postgres(settings, await stack.enter_async_context(fresh_database()))
        live = settings.live.model_copy(update={"suite": settings.policy.suite,
                                                "profile_samples": settings.policy.samples})
        settings = settings.model_copy(update={"live": live})
        async with serve(settings, decider_factory=build_decider) as running:
            pairing, sink = running.app[STATE].pairing, running.app[STATE].live
            assert sink is not None and not sink.baseline.agreement  # nothing built yet
            before = pairing.version
            await build_profiles(settings, settings.policy.suite, ["a1", "a2", "b1", "b2"],
                                 settings.policy.samples, 0.7, 4)
            async with asyncio.timeout(10):  # no restart: the build's NOTIFY / mark reaches it
                while pairing.version == before:  # noqa: ASYNC110  # the follower's effect
                    await asyncio.sleep(0.05)
                while not sink.baseline.agreement:  # noqa: ASYNC110  # the follower's effect
                    await asyncio.sleep(0.05)
            assert set(pairing.decider.sources.values()) >= {"built"}
            assert sink.baseline.predicted_disagreement("a1", "b1", "math") is not None
