"""Fixtures of the end-to-end tests: the real service on a socket, with scripted backends.

Paired calls here are decided by ``harness.FamilyDecider``, a tiny deterministic test Decider
(audit partner = first model of another family, assist partner = same family, pinned pairings
honoured). The real pairing policy is tested elsewhere (tests of ``router.pairing.decider``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from router.paired.record import InMemoryLiveDiffSink
from tests.e2e.harness import Running, make_settings, serve, standard_models


@pytest.fixture
def sink() -> InMemoryLiveDiffSink:
    return InMemoryLiveDiffSink()


@pytest.fixture
async def service(tmp_path: Path, sink: InMemoryLiveDiffSink) -> AsyncIterator[Running]:
    """The standard scripted pool (alpha, alpha-mini, beta, gamma), records into ``sink``."""
    @asynccontextmanager
    async def sink_factory(_settings: object) -> AsyncIterator[InMemoryLiveDiffSink]:
        yield sink

    async with serve(make_settings(tmp_path, standard_models()),
                     sink_factory=sink_factory) as running:
        yield running
