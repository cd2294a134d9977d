"""``diffroute diff``: end to end over a scripted pool whose observations were really collected.

The pool: ``alpha`` and ``beta`` share a prior except in ``law`` (a planted difference); ``gamma``
has no observations. The subprocess runs (``python -m router diff ...``) start together, since
each spends most of its time importing; the other cases go in process through the same
``main()``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import pty
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from profiles.suite import load_suite
from router.cli import main
from router.config import load_settings
from router.profiling.build import build_profiles
from router.profiling.sources import (
    NoProfileError,
    ProfileQuery,
    _provenance,
    diff_models,
    find_profiles,
    pool_similarity,
    unfinished,
)
from router.testing.simulate import simulated_suite

ROOT = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;]*m")
SAMPLES = 6
MODELS: list[dict[str, Any]] = [
    {"name": "alpha", "family": "p1", "backend": {"kind": "scripted", "prior": "p1", "seed": 1}},
    {"name": "beta", "family": "p1",
     "backend": {"kind": "scripted", "prior": "p1", "seed": 2,
                 "domains": {"law": {"prior": "other"}}}},
    {"name": "gamma", "family": "p2", "backend": {"kind": "scripted", "prior": "p2", "seed": 3}},
]


@dataclass
class World:
    config: Path
    suite: Path
    shipped: Path

    def args(self, *extra: str) -> list[str]:
        return ["diff", *extra, "--config", str(self.config), "--suite", str(self.suite),
                "--samples", str(SAMPLES)]


def write_world(root: Path, data_dir: str = "data") -> World:
    suite = simulated_suite(["history", "law", "math"], 16)
    suite_file = root / "sim.jsonl"
    suite_file.write_text("".join(p.model_dump_json(exclude_none=True) + "\n"
                                  for p in suite.probes), encoding="utf-8")
    config = root / "pool.yaml"
    config.write_text(yaml.safe_dump({"data_dir": data_dir, "models": MODELS}), encoding="utf-8")
    return World(config, suite_file, root / "shipped")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """alpha and beta profiled in the store; gamma profiled elsewhere and exported as shipped."""
    w = write_world(tmp_path_factory.mktemp("world"))
    settings = load_settings(w.config)
    asyncio.run(build_profiles(settings, str(w.suite), ["alpha", "beta"], SAMPLES, 0.7, 4))
    elsewhere = settings.model_copy(update={"data_dir": w.config.parent / "elsewhere"})
    asyncio.run(build_profiles(elsewhere, str(w.suite), ["gamma"], SAMPLES, 0.7, 4, w.shipped))
    return w


@dataclass
class Run:
    code: int
    out: str
    err: str


def _env(**changes: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "DIFFROUTE_CONFIG")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    for key, value in changes.items():
        if value is not None:
            env[key] = value
    return env


def _start(argv: list[str], tty: bool, **env: str | None) -> tuple[subprocess.Popen[bytes],
                                                                   threading.Thread | None,
                                                                   list[bytes]]:
    """Start ``python -m router``; with ``tty`` its stdout is a pseudo-terminal."""
    cmd = [sys.executable, "-m", "router", *argv]
    chunks: list[bytes] = []
    if not tty:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(**env), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        return proc, None, chunks
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(**env), stdout=slave,
                            stderr=subprocess.PIPE)
    os.close(slave)

    def drain() -> None:  # a pty buffer is small: read while the child writes
        try:
            while chunk := os.read(master, 65536):
                chunks.append(chunk)
        except OSError:  # EIO once the child has closed its end
            pass
        finally:
            os.close(master)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    return proc, reader, chunks


@pytest.fixture(scope="module")
def runs(world: World) -> Iterator[dict[str, Run]]:
    """The subprocess scenarios, run concurrently."""
    scenarios = {
        "piped": (world.args("alpha", "beta"), False, {}),
        "tty": (world.args("alpha", "beta"), True, {}),
        "tty_no_color": (world.args("alpha", "beta"), True, {"NO_COLOR": "1"}),
    }
    started = {name: _start(argv, tty, **env) for name, (argv, tty, env) in scenarios.items()}
    results = {}
    for name, (proc, reader, chunks) in started.items():
        out, err = proc.communicate(timeout=120)
        if reader is not None:
            reader.join(timeout=10)
            out = b"".join(chunks)
        results[name] = Run(proc.returncode, out.decode().replace("\r\n", "\n"), err.decode())
    yield results


def test_piped_diff_is_plain_and_shows_the_planted_domain(runs: dict[str, Run]) -> None:
    run = runs["piped"]
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0] == "diff --behavior a/alpha b/beta"
    stats = [line for line in lines if " | κp " in line]
    assert stats[0].split()[:2] == ["!✓", "law"]  # flagged, replicated on the confirm round
    assert all("!" not in line.split(" | ")[0] for line in stats[1:])
    assert any(line.startswith("@@ law-") for line in lines)
    assert any(line.startswith("-") for line in lines)
    assert any(line.startswith("+") for line in lines)
    assert not ANSI.search(run.out)


def test_terminal_gets_colour_unless_no_color(runs: dict[str, Run]) -> None:
    coloured, plain = runs["tty"], runs["tty_no_color"]
    assert coloured.code == 0 and plain.code == 0
    assert "\x1b[36m@@ law-" in coloured.out and "\x1b[31m-" in coloured.out
    assert "\x1b[32m+" in coloured.out
    assert not ANSI.search(plain.out)
    assert ANSI.sub("", coloured.out) == plain.out == runs["piped"].out


# --- in process, through the same entry point ------------------------------------------------


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Run:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def test_model_without_any_profile_is_one_line_and_exit_1(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    run = cli(world.args("alpha", "gamma"), capsys)  # gamma is only in the shipped dir
    assert run.code == 1 and run.out == ""
    assert run.err == ("diffroute: error: no profile for model gamma: run "
                       f"`diffroute profile build --models gamma --suite {world.suite} "
                       f"--samples {SAMPLES} --temperature 0.7` (with the same --config and "
                       "--data-dir)\n")  # what was asked: the bare command built another k


def test_json_format_is_the_diff_object(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    run = cli(world.args("alpha", "beta", "--format", "json"), capsys)
    assert run.code == 0, run.err
    data = json.loads(run.out)
    assert data["schema"] == "diffroute.diff/2"
    assert (data["a"], data["b"]) == ("alpha", "beta")
    assert data["flagged_domains"] == ["law"] and data["settings"]["samples"] == SAMPLES


def test_html_goes_to_the_out_file(world: World, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "diff.html"
    run = cli(world.args("alpha", "beta", "--format", "html", "--domain", "law",
                         "--out", str(out)), capsys)
    assert run.code == 0 and run.out == ""
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and "<svg" in page and "law-" in page
    assert "history" not in page  # --domain law: the other domains are left out


def test_unknown_model_and_domain_are_one_line_errors(world: World,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    run = cli(world.args("alpha", "nobody"), capsys)
    assert run.code == 2 and run.out == ""
    assert run.err == ("diffroute: error: model 'nobody' is not in the pool "
                       "(known: alpha, beta, gamma)\n")
    run = cli(world.args("alpha", "beta", "--domain", "cooking"), capsys)
    assert run.code == 2
    assert run.err == ("diffroute: error: unknown domain 'cooking' in suite 'sim' "
                       "(domains: history, law, math)\n")


def test_usage_errors_exit_2(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (world.args("alpha"), world.args("--all", "alpha", "beta"),
                 world.args("--all", "--format", "html")):
        run = cli(argv, capsys)
        assert run.code == 2 and len(run.err.splitlines()) == 1, (argv, run.err)
        assert run.err.startswith("diffroute: error: ")


def test_all_prints_the_pool_matrix_and_names_who_is_left_out(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    run = cli(world.args("--all"), capsys)
    assert run.code == 0, run.err
    assert run.out.startswith("pool matrix · domain all · 2 models")
    assert "κp (agreement beyond chance)" in run.out
    assert run.err == "diffroute: warning: no profile for model gamma, left out\n"
    run = cli(world.args("--all", "--format", "json", "--domain", "law"), capsys)
    data = json.loads(run.out)
    assert data["models"] == ["alpha", "beta"] and list(data["domains"]) == ["law"]


def test_shipped_profile_is_the_fallback_for_its_own_model(world: World) -> None:
    settings = load_settings(world.config)
    query = ProfileQuery(str(world.suite), SAMPLES)
    diff = diff_models(settings, "alpha", "gamma", query, shipped=world.shipped)
    assert (diff.a, diff.b) == ("alpha", "gamma") and diff.n_probes_tested == 48
    assert any(note.startswith("gamma: shipped profile") for note in diff.notes)
    matrix, missing = pool_similarity(settings, query, shipped=world.shipped)
    assert matrix.models == ("alpha", "beta", "gamma") and missing == []


def test_shipped_profile_of_another_model_or_suite_is_not_used(world: World,
                                                              tmp_path: Path) -> None:
    settings = load_settings(world.config)
    # gamma's name, another seed: its cache key differs from the shipped gamma profile's
    changed = [m if m["name"] != "gamma" else {**m, "backend": {**m["backend"], "seed": 9}}
               for m in MODELS]
    other = settings.model_copy(update={"models": load_settings(
        _config(tmp_path, changed)).models})
    with pytest.raises(NoProfileError, match="no profile for model gamma"):
        diff_models(other, "alpha", "gamma", ProfileQuery(str(world.suite), SAMPLES),
                    shipped=world.shipped)
    copy = tmp_path / "other.jsonl"  # same probes, another suite name
    copy.write_text(world.suite.read_text(encoding="utf-8"), encoding="utf-8")
    assert load_suite(copy).name != load_suite(world.suite).name
    with pytest.raises(NoProfileError):
        diff_models(settings, "alpha", "gamma", ProfileQuery(str(copy), SAMPLES),
                    shipped=world.shipped)


def _config(root: Path, models: list[dict[str, Any]]) -> Path:
    path = root / "changed.yaml"
    path.write_text(yaml.safe_dump({"data_dir": "data", "models": models}), encoding="utf-8")
    return path


def test_the_cli_default_k_is_the_engines() -> None:
    from profiles.collect import DEFAULT_SAMPLES
    from router.config import PROFILE_SAMPLES

    assert PROFILE_SAMPLES == DEFAULT_SAMPLES


def test_a_partial_build_is_completed_by_the_shipped_profile(world: World,
                                                              tmp_path: Path) -> None:
    """gamma is shipped for the whole suite; a quick build here covers only its history
    probes. The profile read is both: this build's history probes, the shipped ones for the
    rest (the partial build used to hide them), and the diff's notes say so."""
    suite = load_suite(str(world.suite))
    history = [p for p in suite.probes if "history" in p.domains]
    part = tmp_path / "history.jsonl"
    part.write_text("".join(p.model_dump_json(exclude_none=True) + "\n" for p in history),
                    encoding="utf-8")
    settings = load_settings(world.config).model_copy(update={"data_dir": tmp_path / "data"})
    asyncio.run(build_profiles(settings, str(part), ["gamma"], SAMPLES, 0.7, 4))
    query = ProfileQuery(str(world.suite), SAMPLES)
    found = find_profiles(settings, ["gamma"], suite, query, world.shipped)["gamma"]
    shipped = find_profiles(settings.model_copy(update={"data_dir": tmp_path / "none"}),
                            ["gamma"], suite, query, world.shipped)["gamma"]
    assert found is not None and shipped is not None and shipped.shipped
    assert not found.shipped and found.completed == len(suite.probes) - len(history)
    assert set(found.profile.records) == {p.id for p in suite.probes}
    for probe in suite.probes:  # this build's samples where it has them, the shipped elsewhere
        record = found.profile.records[probe.id]
        if "history" not in probe.domains:
            assert record == shipped.profile.records[probe.id]
    assert unfinished(found.profile, suite, SAMPLES) is None
    stopped = dataclasses.replace(found.profile, confirm_records=dict(
        list(found.profile.confirm_records.items())[:5]))  # stopped in its confirm pass
    assert unfinished(stopped, suite, SAMPLES) == (
        f"have a confirm collection covering 5 of {len(suite.probes)} probes with {SAMPLES} "
        f"samples each (asked {SAMPLES})")
    notes = _provenance([found], suite, query)
    assert any("completed by the shipped profile on 32 probe(s)" in n for n in notes), notes


def test_stored_observations_short_of_the_ask_are_warned_about(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """The store holds SAMPLES per probe; a diff asking for more uses them all the same (they
    take precedence over any shipped profile), and says so."""
    asked = [a if a != str(SAMPLES) else str(SAMPLES + 4) for a in world.args("alpha", "beta")]
    run = cli(asked, capsys)
    assert run.code == 0, run.err
    warned = [line for line in run.out.splitlines() if "WARNING stored observations" in line]
    assert len(warned) == 2, run.out  # alpha and beta
    assert f"with {SAMPLES} samples each (asked {SAMPLES + 4})" in warned[0]
    assert "profile build" in warned[0]
    plain = cli(world.args("alpha", "beta"), capsys)
    assert "WARNING" not in plain.out  # the whole suite at the k asked: nothing to say


def test_a_damaged_observation_store_is_one_line_naming_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Pages damaged behind a sound header: `database disk image is malformed
    (DatabaseError; …)`, naming no file."""
    w = write_world(tmp_path)
    settings = load_settings(w.config)
    asyncio.run(build_profiles(settings, str(w.suite), ["alpha", "beta"], 2, 0.7, 4))
    store = w.config.parent / "data" / "observations.sqlite3"
    raw = bytearray(store.read_bytes())
    raw[4096:] = b"\xa5" * (len(raw) - 4096)  # every page after the first
    store.write_bytes(bytes(raw))
    for wal in store.parent.glob("observations.sqlite3-*"):
        wal.unlink()
    capsys.readouterr()  # the build's progress
    run = cli(w.args("alpha", "beta"), capsys)
    assert run.code == 2 and run.out == "" and len(run.err.splitlines()) == 1, run.err
    assert run.err.startswith(f"diffroute: error: the observation store {store}: ")


def test_a_report_that_cannot_be_written_whole_leaves_the_previous_one(tmp_path: Path) -> None:
    """``--out`` wrote in place: a full disk (here a file-size limit, under the ~220 kB JSON
    diff of two shipped profiles) left half a report where the previous one was."""
    import resource
    import signal

    out = tmp_path / "diff.json"
    out.write_text('{"previous": true}\n', encoding="utf-8")
    limit = 100_000  # above the empty store's files, below the report

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit: EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(
        [sys.executable, "-m", "router", "diff", "smollm2", "gemma3", "--format", "json",
         "--data-dir", str(tmp_path / "data"), "--out", str(out)],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120,
        preexec_fn=small_files)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == f"diffroute: error: cannot write {out}: File too large\n"
    assert out.read_text(encoding="utf-8") == '{"previous": true}\n'  # was: 100 kB of it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "diff.json"]  # no temp file
