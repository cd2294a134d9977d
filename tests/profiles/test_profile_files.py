"""A profile's file: written whole or not at all, and a damaged one named, not misread."""

from __future__ import annotations

import dataclasses
import gzip
import os
from pathlib import Path

import pytest

from profiles.collect import Decoding
from profiles.extract import EXTRACTOR_VERSION
from profiles.profile import ProbeRecord, Profile
from profiles.suite import load_suite
from router.profiling.sources import shipped_profile, shipped_profiles_dir


def shipped(name: str) -> Path:
    return Path(str(shipped_profiles_dir().joinpath(f"{name}.json.gz")))


def test_an_interrupted_save_leaves_the_previous_profile_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`profile build --export` wrote over the file in place: interrupted, it left half a
    profile where the previous one was."""
    profile = Profile.load(shipped("smollm2-terse"))
    path = tmp_path / "smollm2-terse.json.gz"
    profile.save(path)
    before = path.read_bytes()
    assert before == shipped("smollm2-terse").read_bytes()  # the same bytes as ever

    def interrupted(self: gzip.GzipFile, data: bytes) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(gzip.GzipFile, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        profile.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


@pytest.mark.parametrize("damage", ["truncated", "not gzip", "not a profile"])
def test_a_damaged_profile_is_an_error_naming_the_file(tmp_path: Path, damage: str) -> None:
    """A truncated gzip raised EOFError, which the command line's library reads as end of
    input: `diffroute: error: aborted`, exit 130, as if Ctrl-C had been pressed."""
    path = tmp_path / "gemma3.json.gz"
    whole = shipped("gemma3").read_bytes()
    path.write_bytes({"truncated": whole[:5000], "not gzip": b"{}",
                      "not a profile": gzip.compress(b'{"model": 1}')}[damage])
    with pytest.raises(ValueError, match=r"gemma3\.json\.gz is damaged") as caught:
        Profile.load(path)
    assert not isinstance(caught.value, EOFError)


def test_a_saved_profile_is_readable_as_any_new_file_is(tmp_path: Path) -> None:
    """`--export` wrote its profiles 0600 (``mkstemp``'s mode, kept by the rename): profiles
    exported to share, or to rebuild `router/data/profiles` as the README says, were readable
    by their owner alone. A new file takes the umask; a replaced one keeps its mode."""
    profile = Profile.load(shipped("smollm2-terse"))
    umask = os.umask(0o022)
    try:
        fresh = tmp_path / "fresh.json.gz"
        profile.save(fresh)
        assert fresh.stat().st_mode & 0o777 == 0o644
        kept = tmp_path / "kept.json.gz"
        kept.write_bytes(b"")
        kept.chmod(0o640)
        profile.save(kept)
        assert kept.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(umask)


def test_a_profile_saved_by_an_older_extractor_is_read_as_a_fresh_build_reads_it(
        tmp_path: Path) -> None:
    """Profiles keep texts and the values extracted from them: a file written before the
    extractor learnt to skip "km2" (extractor 1) said 2; loaded with its suite it says what a
    fresh build of the same texts says, for the diff and the policy alike."""
    suite = load_suite("default")
    probe = next(p for p in suite.probes if p.type == "numeric")
    texts = ("It covers 120,000,000 km2", "7,5", "42")
    old_values = ("2", "5", "42")  # what extractor 1 read
    record = ProbeRecord(probe.id, probe.content_hash(), texts, old_values)
    profile = Profile("m", "key", suite.manifest.name, suite.version, Decoding(samples=3),
                      {probe.id: record}, {probe.id: record}, extractor=1)
    data = profile.to_json()
    data.pop("extractor")  # as files before extractor versions were written
    path = tmp_path / "m.json.gz"
    Profile.from_json(data).save(path)
    loaded = Profile.load(path)
    assert loaded.extractor == 1 and loaded.records[probe.id].values == old_values
    fresh = loaded.current(suite)
    wanted = ("120000000", "7.5", "42")
    assert fresh.records[probe.id].values == fresh.confirm_records[probe.id].values == wanted
    assert fresh.extractor == EXTRACTOR_VERSION and fresh.current(suite) is fresh
    # the service reads shipped files through the same door
    found = shipped_profile("m", "key", suite, tmp_path)
    assert found is not None and found.records[probe.id].values == wanted


def test_every_shipped_profile_holds_what_the_current_extractor_reads() -> None:
    """A change to the extractor must come with the shipped files extracted anew (and
    ``EXTRACTOR_VERSION`` bumped), or a fresh build and the shipped profile disagree."""
    suite = load_suite("default")
    for name in ("smollm2", "smollm2-terse", "gemma3", "gemma3-cool"):
        profile = Profile.load(shipped(name))
        assert profile.extractor == EXTRACTOR_VERSION, name
        again = dataclasses.replace(profile, extractor=0).current(suite)
        assert again.records == profile.records, name
        assert again.confirm_records == profile.confirm_records, name
