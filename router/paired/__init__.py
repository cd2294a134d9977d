"""Paired calls: two models answer, the answers are compared, the comparison is recorded.

* :mod:`router.paired.call` — the client's options, a prepared call, its outcome;
* :mod:`router.paired.engine` — :class:`PairedEngine`: decision → calls → compare → record;
* :mod:`router.paired.stream` — the same for a streamed answer;
* :mod:`router.paired.answer` — one model's answer as compared: text and tool calls;
* :mod:`router.paired.structured` — tool calls and structured output compared as JSON, then
  text by :mod:`router.paired.compare`;
* :mod:`router.paired.compare` — how two texts are compared (noise-aware for live diffs);
* :mod:`router.paired.record` — the live-diff record and the sink protocol it goes to.
"""
