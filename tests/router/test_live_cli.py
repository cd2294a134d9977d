"""``diffroute diffs`` and ``diffroute drift`` on a data dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.cli import main
from router.live.drift import DriftEvent
from router.live.sink import DurableLiveDiffSink
from router.live.store import LiveStore
from router.paired.compare import Comparison
from tests.router.live.test_live_store import record


async def fill(data_dir: Path) -> str:
    store = LiveStore.in_data_dir(data_dir).open()
    sink = DurableLiveDiffSink(store)
    stored = await sink.record(record("Paris.", "Lyon.", Comparison(0, True, 0.9, 0.35, "-P\n")))
    sink._drift(DriftEvent("alpha", "beta", "general", "up", 0.01, 0.4, 30, 10.5, 1.0))
    store.close()
    assert stored is not None
    return stored


async def test_diffs_and_drift_read_the_data_dir(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    stored = await fill(tmp_path)
    main(["diffs", "--data-dir", str(tmp_path), "--pair", "alpha,beta", "--since", "1h"])
    out = capsys.readouterr().out
    assert stored in out and "divergence 0.900 > 0.350" in out
    assert "alpha vs beta (audit, concurrent)" in out  # a report would say "reported"
    main(["diffs", "--data-dir", str(tmp_path), "--pair", "beta,alpha"])
    assert stored not in capsys.readouterr().out
    main(["drift", "--data-dir", str(tmp_path)])
    assert "DRIFT up   alpha vs beta in general: disagreement 0.400 (expected 0.010)" in (
        capsys.readouterr().out)
