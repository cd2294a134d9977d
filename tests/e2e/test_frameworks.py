"""Agent frameworks run against the service unchanged: the OpenAI Agents SDK and LangChain
complete a tool loop through ``audit:`` with fake upstreams on loopback, and the pair's
comparison is recorded (the upstreams differ in their tool arguments, so it is flagged).

Each upstream calls ``get_weather`` first and answers in text once the tool's result is in the
conversation, as a real model would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import openai
import pytest

from router.paired.record import InMemoryLiveDiffSink
from tests.e2e.harness import Running, make_settings, remote, serve
from tests.e2e.test_agents import in_memory
from tests.e2e.test_openai_client import eventually
from tests.fakes import FakeUpstream, tool_call_message

FINAL = "It is sunny in Paris."


def weather_model(city: str) -> Any:
    """An upstream that calls get_weather(city), then answers once it has the result."""

    def answer(body: Mapping[str, Any]) -> Any:
        if any(m.get("role") == "tool" for m in body.get("messages", ())):
            return FINAL
        return tool_call_message("get_weather", f'{{"city": "{city}"}}')

    return answer


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[Running, InMemoryLiveDiffSink]]:
    sink = InMemoryLiveDiffSink()
    answers = {"up-a": weather_model("Paris"), "up-b": weather_model("Lyon")}
    async with FakeUpstream(answers=answers) as fake:
        models = [remote("remote-a", "x", fake.base_url, "up-a"),
                  remote("remote-b", "y", fake.base_url, "up-b")]
        async with serve(make_settings(tmp_path, models), sink_factory=in_memory(sink)) as run:
            yield run, sink


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


async def test_the_openai_agents_sdk_runs_a_tool_loop_through_an_audit(
        service: tuple[Running, InMemoryLiveDiffSink]) -> None:
    from agents import (
        Agent,
        OpenAIChatCompletionsModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )

    running, sink = service
    set_tracing_disabled(True)  # the SDK would export its traces to OpenAI
    called: list[str] = []

    @function_tool
    def weather(city: str) -> str:
        """The weather in a city."""
        called.append(city)
        return get_weather(city)

    weather.name = "get_weather"
    client = openai.AsyncOpenAI(base_url=running.base_url, api_key="unused", max_retries=0)
    agent = Agent(name="solver", instructions="Answer with the tool.", tools=[weather],
                  model=OpenAIChatCompletionsModel(model="audit:remote-a",
                                                   openai_client=client))
    result = await Runner.run(agent, "What is the weather in Paris?")
    assert result.final_output == FINAL
    assert called == ["Paris"]  # the primary's tool call, as the upstream sent it
    # two turns, each compared: the first (Paris vs Lyon) flagged, the second agreed
    await eventually(lambda: sink.comparisons == 2)
    assert sink.disagreements == 1 and len(sink.records) == 1
    flagged = sink.records[0]
    assert (flagged.primary, flagged.partner) == ("remote-a", "remote-b")
    assert "Paris" in flagged.primary_text and "Lyon" in flagged.partner_text


async def test_langchain_binds_tools_through_an_audit(
        service: tuple[Running, InMemoryLiveDiffSink]) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_openai import ChatOpenAI

    running, sink = service
    llm = ChatOpenAI(base_url=running.base_url, api_key="unused",  # type: ignore[arg-type]
                     model="audit:remote-a", max_retries=0).bind_tools([get_weather])
    ask = HumanMessage("What is the weather in Paris?")
    first = await llm.ainvoke([ask])
    assert [(c["name"], c["args"]) for c in first.tool_calls] == [  # type: ignore[attr-defined]
        ("get_weather", {"city": "Paris"})]
    call = first.tool_calls[0]  # type: ignore[attr-defined]
    final = await llm.ainvoke([ask, first, ToolMessage(get_weather("Paris"),
                                                        tool_call_id=call["id"])])
    assert final.content == FINAL
    assert final.response_metadata["model_name"] == "remote-a"
    await eventually(lambda: sink.comparisons == 2)
    assert sink.disagreements == 1 and len(sink.records) == 1
    flagged = sink.records[0]
    assert (flagged.primary, flagged.partner) == ("remote-a", "remote-b")
    assert "Paris" in flagged.primary_text and "Lyon" in flagged.partner_text
