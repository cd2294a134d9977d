"""Helpers of the service tests: pool configs, a deterministic test Decider, a real server.

The Decider here is a stand-in: the real pairing policy (``router.pairing.decider``) is tested
in its own tests; these tests need a decision that is obvious from the config alone.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from router.config import Settings, settings_from_mapping
from router.errors import NoPairError
from router.pairing.decision import Decision, LiveSource, RouteRequest
from router.pairing.pinned import Pairings
from router.pool import Pool
from router.service import create_app
from router.service.runner import ServiceRunner


class FamilyDecider:
    """audit → the first other model of a different family; assist → of the same family.

    Honours pinned partners and exclusions; ``auto`` primary = the first candidate.
    """

    version = "test-v1"
    domains = frozenset({"general", "geography", "arithmetic"})

    def __init__(self, settings: Settings, pool: Pool, pairings: Pairings,
                 live: LiveSource | None = None) -> None:
        self.family = {m.name: m.family_name for m in settings.models}
        self.pairings = pairings

    def with_pairings(self, pairings: Pairings) -> FamilyDecider:
        decider = copy.copy(self)
        decider.pairings = pairings
        return decider

    def blocking(self, request: RouteRequest) -> bool:
        return False

    def decide(self, request: RouteRequest) -> Decision:
        names = list(request.candidates or self.family)
        primary = request.primary or names[0]
        pinned = self.pairings.pinned_partner(primary, request.role)
        if pinned is not None:
            return Decision(primary, pinned, request.role, 1.0, "pinned",
                            profile_version=self.version)
        same = request.role == "assist"
        for name in names:
            if name == primary or self.pairings.is_excluded(primary, name):
                continue
            if (self.family[name] == self.family[primary]) == same:
                domains = {request.domain or "general": 1.0}
                return Decision(primary, name, request.role, 0.5,
                                f"test policy: {'same' if same else 'other'} family",
                                domains=domains, profile_version=self.version)
        raise NoPairError(primary, request.role, "no candidate of the right family")


def scripted(name: str, family: str, answer: str, **backend: Any) -> dict[str, Any]:
    """A scripted pool model that always answers ``answer`` (unless its rules say otherwise)."""
    return {"name": name, "family": family,
            "backend": {"kind": "scripted", "answers": {answer: 1.0}, **backend}}


def remote(name: str, family: str, base_url: str, upstream: str, **extra: Any) -> dict[str, Any]:
    """A ``kind: openai`` pool model behind a fake upstream."""
    return {"name": name, "family": family,
            "backend": {"kind": "openai", "base_url": base_url, "model": upstream},
            **extra}


def make_settings(tmp_path: Path, models: Sequence[dict[str, Any]],
                  **server: Any) -> Settings:
    return settings_from_mapping({"models": list(models), "data_dir": str(tmp_path / "data"),
                                  "server": {"shutdown_timeout": 5, **server}})


@dataclass
class Running:
    """A service listening on 127.0.0.1."""

    app: web.Application
    runner: web.AppRunner
    url: str

    @property
    def base_url(self) -> str:
        """What an OpenAI client's ``base_url`` is set to."""
        return self.url + "/v1"


@asynccontextmanager
async def serve(settings: Settings, **options: Any) -> AsyncIterator[Running]:
    """The real app on a real socket (port 0), stopped gracefully on exit."""
    options.setdefault("decider_factory", FamilyDecider)
    app = create_app(settings, **options)
    runner = ServiceRunner(app, shutdown_timeout=settings.server.shutdown_timeout,
                           access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Running(app, runner, f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()


CAPITAL = "What is the capital of France?"
PARIS = "Paris is the capital."


def standard_models() -> list[dict[str, Any]]:
    """alpha and alpha-mini agree (family a); beta (family b) disagrees; gamma (c) agrees.

    gamma approves any review; beta rejects it.
    """
    return [
        scripted("alpha", "a", PARIS),
        scripted("alpha-mini", "a", PARIS),
        scripted("beta", "b", "Lyon.",
                 rules=[{"contains": "Answer to review", "answers": {"DISAGREE\nLyon.": 1.0}}]),
        scripted("gamma", "c", PARIS,
                 rules=[{"contains": "Answer to review", "answers": {"AGREE": 1.0}}]),
    ]


async def call(running: Running, method: str, path: str, body: Any = None,
               headers: dict[str, str] | None = None, *, raw: bytes | None = None
               ) -> tuple[int, Any]:
    """One request to the running service: ``body`` as JSON (or ``raw`` bytes as they are);
    the status and the JSON answer (or its text, when it is not JSON)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    async with aiohttp.ClientSession() as http, http.request(
            method, running.url + path, data=data,
            headers={"Content-Type": "application/json", **(headers or {})}) as response:
        text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text
