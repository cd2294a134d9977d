"""A profile's file: written whole or not at all, and a damaged one named, not misread."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from profiles.profile import Profile
from router.profiling.sources import shipped_profiles_dir


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
