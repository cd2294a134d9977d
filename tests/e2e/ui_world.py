"""The dashboard tests' world: a scripted pool with real profiles, keys, the real policy.

Test modules import the fixtures ``profiled_fixture`` and ``running_fixture`` (named
``profiled`` and ``running`` for the tests).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, async_playwright

from router.config import Settings
from router.pairing.decider import build_decider
from router.profiling.build import build_profiles
from tests.e2e.harness import Running, call, make_settings, serve

CLIENT_KEY, ADMIN_KEY = "client-key-1", "admin-key-1"
QUESTION = "Which city is the capital of France?"
MODEL_NAMES = ["alpha", "alpha-mini", "beta", "gamma"]


def _model(name: str, family: str, prior: str, seed: int, answer: str) -> dict[str, Any]:
    """A scripted model with a prior (its profile) that answers QUESTION with ``answer``."""
    return {"name": name, "family": family,
            "backend": {"kind": "scripted", "prior": prior, "seed": seed,
                        "rules": [{"contains": QUESTION, "answers": {answer: 1.0}}]}}


PARIS, LYON = "Paris is the capital.", "Lyon, I believe, is the capital."
MODELS = [_model("alpha", "a", "A", 1, PARIS), _model("alpha-mini", "a", "A", 2, PARIS),
          _model("beta", "b", "B", 3, LYON), _model("gamma", "c", "C", 4, PARIS)]


def ui_settings(root: Path) -> Settings:
    settings = make_settings(root, MODELS, api_keys=[CLIENT_KEY], admin_key=ADMIN_KEY)
    policy = settings.policy.model_copy(update={"suite": "smoke", "bootstrap": 50})
    return settings.model_copy(update={"policy": policy})


@pytest.fixture(scope="module", name="profiled")
def profiled_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir holding the four models' profiles on the smoke suite (built once)."""
    root = tmp_path_factory.mktemp("ui-profiles")
    asyncio.run(build_profiles(ui_settings(root), "smoke", MODEL_NAMES, 5, 0.7, 8))
    return root


@pytest.fixture(name="running")
async def running_fixture(profiled: Path, tmp_path: Path) -> AsyncIterator[Running]:
    shutil.copytree(profiled / "data", tmp_path / "data")
    async with serve(ui_settings(tmp_path), decider_factory=build_decider) as service:
        yield service




async def api(running: Running, method: str, path: str, body: Any = None,
              key: str = CLIENT_KEY) -> Any:
    """A call that must succeed; its JSON."""
    status, answer = await call(running, method, path, body,
                                headers={"Authorization": f"Bearer {key}"})
    assert status == 200, answer
    return answer


async def audit(running: Running, partner: str, question: str = QUESTION) -> dict[str, Any]:
    """An audit of alpha by ``partner``; the ``diffroute`` object of the answer."""
    body = {"model": "audit:alpha", "messages": [{"role": "user", "content": question}],
            "diffroute": {"partner": partner}}
    answer = await api(running, "POST", "/v1/chat/completions", body)
    result: dict[str, Any] = answer["diffroute"]
    return result


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
"""Debian's Chromium (``apt-get install chromium``; Playwright's own download is not used)."""
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic", "--disable-dev-shm-usage"]


@pytest.fixture(name="browser")
async def browser_fixture() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()
