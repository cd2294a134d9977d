"""What ``diffroute serve`` does to its process once the app has started."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from router.service import app as service_app
from router.service.app import GC_THRESHOLD, run_server, settle_heap
from tests.e2e.harness import make_settings, scripted, serve


def test_run_server_settles_the_heap_after_start_up(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    served: list[web.Application] = []

    def fake_run_app(app: web.Application, **_: Any) -> None:
        served.append(app)

    monkeypatch.setattr(service_app.web, "run_app", fake_run_app)
    run_server(make_settings(tmp_path, [scripted("alpha", "a", "B")]))
    assert served and settle_heap in served[0].on_startup


async def test_started_app_freezes_start_up_objects_and_collects_less_often(
        tmp_path: Path) -> None:
    before = gc.get_threshold()
    try:
        settings = make_settings(tmp_path, [scripted("alpha", "a", "B")])
        async with serve(settings) as running:
            assert gc.get_freeze_count() == 0
            await settle_heap(running.app)
            assert gc.get_freeze_count() > 1000 and gc.get_threshold() == GC_THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
