"""`diffroute profile build` against a misbehaving remote (`kind: openai`) model: a rate limit
or a blip is waited out, not turned into failed probes by the serving circuit breaker; an
upstream that stays down is given up on after a few probes, not asked for every one."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from profiles.store import ObservationStore
from router.config import Settings, settings_from_mapping
from router.profiling.build import GIVE_UP_AFTER, build_profiles
from tests.fakes import CHAT, FakeUpstream, Reply
from tests.stores import ENGINES, fresh_database, on_postgres

PROBES = 12
SAMPLES = 2


def suite_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "suite"
    directory.mkdir()
    lines = [json.dumps({
        "id": f"q-{i:02d}", "domains": ["geography"], "type": "choice",
        "messages": [{"role": "user",
                      "content": f"Question {i}?\nA. x\nB. y\nAnswer with the letter only."}],
        "options": ["x", "y"], "gold": "A"}) for i in range(PROBES)]
    (directory / "probes.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (directory / "manifest.json").write_text(json.dumps({"name": "tiny", "version": "1"}),
                                             encoding="utf-8")
    return directory


def settings(tmp_path: Path, base_url: str) -> Settings:
    # the default circuit breaker (5 failures in a row), as a pool file without `circuit:`
    return settings_from_mapping({"data_dir": str(tmp_path / "data"), "models": [
        {"name": "remote", "family": "f",
         "backend": {"kind": "openai", "base_url": base_url, "model": "up"}}]})


def rate_limited() -> Reply:
    envelope = {"error": {"message": "slow down", "type": "rate_limit", "param": None,
                          "code": None}}
    return Reply(status=429, headers={"retry-after-ms": "1"}, json=envelope)


def stored(tmp_path: Path) -> int:
    with ObservationStore.in_data_dir(tmp_path / "data") as store:
        return store.count()


async def test_a_burst_of_429s_is_waited_out_not_failed_by_the_circuit(tmp_path: Path) -> None:
    async with FakeUpstream(answer="A") as fake:
        fake.enqueue(*[rate_limited() for _ in range(8)])  # past the breaker's 5 in a row
        _, report = await build_profiles(settings(tmp_path, fake.base_url),
                                         str(suite_dir(tmp_path)), ["remote"], SAMPLES, 0.7, 4)
    assert report.failures == []
    assert stored(tmp_path) == 2 * PROBES * SAMPLES  # the profile and its confirm collection
    assert fake.count(CHAT) == 2 * PROBES * SAMPLES + 8


async def test_an_upstream_that_stays_down_is_given_up_after_a_few_probes(
        tmp_path: Path) -> None:
    async with FakeUpstream(answer="A") as fake:
        fake.enqueue(*[rate_limited() for _ in range(2000)])
        _, report = await build_profiles(settings(tmp_path, fake.base_url),
                                         str(suite_dir(tmp_path)), ["remote"], SAMPLES, 0.7, 4)
        requests = fake.count(CHAT)
    assert report.given_up == ["remote"]
    assert len(report.failures) == PROBES  # every probe of the profile, none stored
    assert any(f"{GIVE_UP_AFTER} probes in a row failed" in error
               for _, _, error in report.failures)
    assert stored(tmp_path) == 0
    # the probes that failed (and those in flight with them), 4 attempts per request; the
    # rest and the confirm collection were not requested
    assert requests <= (GIVE_UP_AFTER + 4) * SAMPLES * 4 < 2 * PROBES * SAMPLES * 4


@pytest.mark.parametrize("engine", ENGINES)
async def test_show_says_when_stored_samples_are_of_an_earlier_configuration(
        tmp_path: Path, engine: str) -> None:
    """`profile show` printed coverage 0.000 for a model whose base_url (or upstream model,
    system prompt…) changed since its build, with nothing saying its samples were still there
    under the old configuration, or that the next build re-collects them all."""
    async with contextlib.AsyncExitStack() as stack:
        dsn = await stack.enter_async_context(fresh_database()) if engine == "postgres" \
            else None
        await _show_names_the_earlier_configuration(tmp_path, dsn)


async def _show_names_the_earlier_configuration(tmp_path: Path, dsn: str | None) -> None:
    from router.profiling.build import summarize_profiles

    def on(s: Settings) -> Settings:
        return s if dsn is None else on_postgres(s, dsn)

    suite = str(suite_dir(tmp_path))
    async with FakeUpstream(answer="A") as fake:
        await build_profiles(on(settings(tmp_path, fake.base_url)), suite, ["remote"], SAMPLES,
                             0.7, 4)
        moved = on(settings(tmp_path, fake.base_url.replace("127.0.0.1", "localhost")))
    [same] = summarize_profiles(on(settings(tmp_path, fake.base_url)), suite, ["remote"],
                                SAMPLES, 0.7)
    assert same["coverage"] == 1.0 and same["notes"] == []
    [summary] = summarize_profiles(moved, suite, ["remote"], SAMPLES, 0.7)
    assert summary["coverage"] == 0.0
    [note] = summary["notes"]
    assert f"{PROBES * SAMPLES} stored samples are of an earlier configuration" in note
    assert f"backend.base_url was '{fake.base_url}'" in note


async def test_a_second_build_into_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    """Two builds of one pool into one data dir each collected everything: the data stayed
    whole, every request was paid twice. The second is refused, naming the first's process."""
    import os

    from router.errors import StartupError
    from router.profiling.build import one_build

    async with FakeUpstream(answer="A") as fake:
        config = settings(tmp_path, fake.base_url)
        with one_build(config):  # the first build, as far as the lock is concerned
            with pytest.raises(StartupError, match=f"process {os.getpid()}"):
                await build_profiles(config, str(suite_dir(tmp_path)), ["remote"], SAMPLES,
                                     0.7, 4)
            assert fake.count(CHAT) == 0
        _, report = await build_profiles(config, str(tmp_path / "suite"), ["remote"], SAMPLES,
                                         0.7, 4)  # the first ended: the lock went with it
    assert report.stored_samples == 2 * PROBES * SAMPLES  # the profile and its confirmation
