"""What ``diffroute serve`` does to its process once the app has started."""

from __future__ import annotations

import gc
from pathlib import Path

from router.service.app import GC_THRESHOLD, serving_app, settle_heap
from tests.e2e.harness import make_settings, scripted, serve


def test_the_served_app_settles_the_heap_after_start_up(tmp_path: Path) -> None:
    app = serving_app(make_settings(tmp_path, [scripted("alpha", "a", "B")]))
    assert settle_heap in app.on_startup


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
