"""An upstream's error text may echo the prompt: it is logged only with log_prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.e2e.harness import call, make_settings, remote, serve
from tests.fakes import FakeUpstream, Reply

SECRET_PROMPT = "my card number is 4111-1111-1111-1111"


@pytest.mark.parametrize("log_prompts", [False, True])
async def test_a_failing_partner_does_not_leak_the_prompt_into_logs(
        tmp_path: Path, log_prompts: bool) -> None:
    async with FakeUpstream(answer="fine") as good, FakeUpstream(answer="fine") as bad:
        bad.enqueue(Reply.error(400, f"cannot process '{SECRET_PROMPT}'"))
        settings = make_settings(tmp_path, [remote("a", "x", good.base_url, "up-a"),
                                            remote("b", "y", bad.base_url, "up-b")],
                                 log_prompts=log_prompts)
        with capture_logs() as logs:
            async with serve(settings) as running:
                status, body = await call(running, "POST", "/v1/chat/completions", {
                    "model": "audit:a", "messages": [{"role": "user", "content": SECRET_PROMPT}],
                    "diffroute": {"partner": "b"}})
    assert status == 200 and body["diffroute"]["partner_error"]
    failed = [e for e in logs if e["event"] == "paired.partner_failed"]
    assert len(failed) == 1
    logged = json.dumps(failed, default=str)
    assert ("4111-1111" in logged) == log_prompts
    if not log_prompts:
        assert failed[0]["http.response.status_code"] == 400
