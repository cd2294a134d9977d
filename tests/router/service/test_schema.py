"""The request bodies the service reads (``router.service.schema``)."""

from __future__ import annotations

from typing import Any

import pytest

from router.service.schema import parse_chat, parse_route


@pytest.mark.parametrize("messages", [
    [{"role": "user", "content": "What is 17 * 23?"}],
    [{"role": "system", "content": "You are a calculator."},
     {"role": "assistant", "content": "What is 17 * 23?"}],
    [{"role": "system", "content": "Compute 17 * 23."}],
    [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
])
def test_route_and_chat_read_the_same_task_from_the_same_messages(
        messages: list[dict[str, Any]]) -> None:
    """``POST /v1/route`` read a conversation without a user turn as no task (domain ``all``)
    where the paired call on the same messages inferred its domain from the last message."""
    routed = parse_route({"role": "audit", "messages": messages}).task_text()
    chat = parse_chat({"model": "audit:a", "messages": messages}).task_text()
    assert routed == chat
