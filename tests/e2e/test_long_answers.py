"""A long answer in a paired call: the client gets all of it; what is compared and stored is
bounded, and the comparison runs off the event loop (a 2 MB answer held every other request
for 2.8 s, a 20 MB one for half a minute)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from router.paired.answer import MAX_ANSWER_CHARS
from router.paired.compare import Comparison, compare
from tests.e2e.harness import call, make_settings, remote, scripted, serve
from tests.fakes import FakeUpstream

ASK = [{"role": "user", "content": "Write a lot."}]


class ThreadRecordingComparer:
    """The default text comparison, noting the thread each comparison ran in."""

    def __init__(self) -> None:
        self.threads: list[str] = []

    def __call__(self, primary_text: str, partner_text: str, domains: Sequence[str] = (), *,
                 pair: tuple[str, str] | None = None) -> Comparison:
        self.threads.append(threading.current_thread().name)
        return compare(primary_text, partner_text, domains, pair=pair)


async def test_a_long_audited_answer_is_whole_for_the_client_and_bounded_elsewhere(
        tmp_path: Path) -> None:
    long = "word " * 400_000  # 2 MB
    comparer = ThreadRecordingComparer()
    async with FakeUpstream(answer=long) as up, serve(make_settings(tmp_path, [
            remote("m", "a", up.base_url, "up-m"), scripted("aud", "b", "short"),
            scripted("aud2", "c", "short too")]),
            comparer=comparer) as running:
        body = {"model": "audit:m", "messages": ASK, "max_tokens": 4096,
                "diffroute": {"partner": "aud"}}
        status, answer = await call(running, "POST", "/v1/chat/completions", body)
        assert status == 200 and answer["choices"][0]["message"]["content"] == long
        assert answer["diffroute"]["flagged"]
        # streamed: the client gets every byte too
        async with aiohttp.ClientSession() as http, http.post(
                running.base_url + "/chat/completions", json={**body, "stream": True}) as resp:
            streamed = await resp.text()
        assert resp.status == 200 and streamed.count("word") >= 400_000
        # a short pair is compared on the loop, as before
        status, _ = await call(running, "POST", "/v1/chat/completions", {
            "model": "audit:aud", "messages": ASK, "diffroute": {"partner": "aud2"}})
        assert status == 200
        _, diffs = await call(running, "GET", "/v1/diffs?order=asc")
    main = threading.main_thread().name
    assert comparer.threads[:2] != [main, main] and comparer.threads[-1] == main, \
        comparer.threads  # the long ones in a worker thread, the short one inline
    stored = [d for d in diffs["data"] if d["primary"] == "m"]
    assert len(stored) == 2
    for diff in stored:
        assert len(diff["primary_text"]) < MAX_ANSWER_CHARS + 100
        assert diff["primary_text"].endswith("characters more]")
