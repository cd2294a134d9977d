"""``diffroute diffs`` and ``diffroute drift`` on the configured store (both engines)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from router.cli import main
from router.config import Settings
from router.live.drift import DriftEvent
from router.live.sink import DurableLiveDiffSink
from router.paired.compare import Comparison
from router.store import open_store
from tests.router.live.test_live_store import record


async def fill(settings: Settings) -> str:
    async with open_store(settings) as store:
        sink = DurableLiveDiffSink(store)
        stored = await sink.record(record("Paris.", "Lyon.",
                                          Comparison(0, True, 0.9, 0.35, "-P\n")))
        await sink._drift(DriftEvent("alpha", "beta", "general", "up", 0.01, 0.4, 30, 10.5, 1.0))
    assert stored is not None
    return stored


def config_file(settings: Settings, root: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The CLI arguments that name ``settings``' store (its DSN through the environment)."""
    lines = ["models: [{name: alpha, family: a, backend: {kind: scripted, answers: {x: 1}}}]"]
    if settings.store.dsn is not None:
        monkeypatch.setenv("TEST_STORE_DSN", settings.store.dsn.value() or "")
        lines.append("store: {kind: postgres, dsn: env:TEST_STORE_DSN}")
    path = root / "pool.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return ["--config", str(path), "--data-dir", str(settings.data_dir)]


async def test_diffs_and_drift_read_the_store(engine_settings: Settings, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    stored = await fill(engine_settings)
    where = config_file(engine_settings, tmp_path, monkeypatch)
    # the CLI runs its own event loop: in a thread, as from a shell
    await asyncio.to_thread(main, ["diffs", *where, "--pair", "alpha,beta", "--since", "1h"])
    out = capsys.readouterr().out
    assert stored in out and "divergence 0.900 > 0.350" in out
    assert "alpha vs beta (audit, concurrent)" in out  # a report would say "reported"
    await asyncio.to_thread(main, ["diffs", *where, "--pair", "beta,alpha"])
    assert stored not in capsys.readouterr().out
    await asyncio.to_thread(main, ["drift", *where])
    assert "DRIFT up   alpha vs beta in general: disagreement 0.400 (expected 0.010)" in (
        capsys.readouterr().out)
