"""`diffroute profile build` on the embedded pool (real llama.cpp models) with the smoke suite."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from profiles.suite import load_suite
from router.embedded import default_settings

SAMPLES = 2


def build(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router", "profile", "build", "--suite", "smoke",
         "--samples", str(SAMPLES), "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=1200, check=False)


def test_profile_build_on_the_embedded_pool_completes_and_resumes(tmp_path: Path) -> None:
    names = [m.name for m in default_settings(tmp_path).models]
    # the profile, then its confirm collection (k more samples per probe, fresh seeds)
    planned = len(load_suite("smoke").probes) * SAMPLES * len(names) * 2
    first = build(tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert f"collected {planned} samples" in first.stderr
    rows = {line.split()[0]: line.split() for line in first.stdout.splitlines()[1:]}
    assert set(rows) == set(names)
    assert all(row[1] == "1.000" for row in rows.values())  # full coverage for every model
    second = build(tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    match = re.search(r"collected (\d+) samples in (\d+) calls", second.stderr)
    assert match is not None and match.groups() == ("0", "0")
    assert f"{planned} of {planned} were cached" in second.stderr
    assert second.stdout == first.stdout  # same profiles, read back from the store
