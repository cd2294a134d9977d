"""`diffroute profile build` on the embedded pool (real llama.cpp models) with part of the smoke
suite, every answer type. Since #13 a build makes one request per sample and a confirm round:
on the whole smoke suite (640 samples) this test took 342 s on the shared machine, too close to
the 600 s timeout; 16 probes (256 samples) test the same completion and resume."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from profiles.suite import Suite, load_suite
from router.embedded import default_settings

SAMPLES = 2
PROBES = 16


def small_suite(directory: Path) -> Suite:
    """The first ``PROBES`` smoke probes, taken round-robin over answer types, as a suite dir."""
    smoke = load_suite("smoke")
    by_type: dict[str, list[str]] = {}
    for probe in smoke.probes:
        by_type.setdefault(probe.type, []).append(probe.model_dump_json(exclude_none=True))
    lines: list[str] = []
    while len(lines) < PROBES and any(by_type.values()):
        for queue in by_type.values():
            if queue and len(lines) < PROBES:
                lines.append(queue.pop(0))
    directory.mkdir()
    (directory / "probes.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (directory / "manifest.json").write_text(json.dumps(
        {"name": "smoke-part", "version": smoke.manifest.version}), encoding="utf-8")
    return load_suite(directory)


def build(data_dir: Path, suite: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router", "profile", "build", "--suite", str(suite),
         "--samples", str(SAMPLES), "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=1200, check=False)


def test_profile_build_on_the_embedded_pool_completes_and_resumes(tmp_path: Path) -> None:
    names = [m.name for m in default_settings(tmp_path).models]
    # the profile, then its confirm collection (k more samples per probe, fresh seeds)
    suite_dir = tmp_path / "suite"
    suite = small_suite(suite_dir)
    assert {p.type for p in suite.probes} == {p.type for p in load_suite("smoke").probes}
    planned = len(suite.probes) * SAMPLES * len(names) * 2
    first = build(tmp_path, suite_dir)
    assert first.returncode == 0, first.stderr[-2000:]
    assert f"collected {planned} samples" in first.stderr
    rows = {line.split()[0]: line.split() for line in first.stdout.splitlines()[1:]}
    assert set(rows) == set(names)
    assert all(row[1] == "1.000" for row in rows.values())  # full coverage for every model
    second = build(tmp_path, suite_dir)
    assert second.returncode == 0, second.stderr[-2000:]
    match = re.search(r"collected (\d+) samples in (\d+) calls", second.stderr)
    assert match is not None and match.groups() == ("0", "0")
    assert f"{planned} of {planned} were cached" in second.stderr
    assert second.stdout == first.stdout  # same profiles, read back from the store
