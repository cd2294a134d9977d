"""One model's answer as the comparer sees it: the message's text and its tool calls.

A translated backend gives text (:meth:`Answer.of_text`); a forwarded upstream gives an OpenAI
``chat.completion`` (:meth:`Answer.of_completion`) or a stream of chunks, whose tool-call deltas
:class:`AnswerBuilder` puts back together; a framework reporting what it ran gives OpenAI
message objects (:meth:`Answer.of_message`). Tool-call arguments stay as the model wrote them;
the comparer reads them as JSON (``router.paired.structured``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from profiles.protocol import Usage


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call of an assistant message."""

    name: str
    arguments: str
    """The arguments as the model wrote them (JSON text, not necessarily valid)."""
    id: str = ""

    def render(self) -> str:
        return f"{self.name}({self.arguments})"


@dataclass(frozen=True, slots=True)
class Answer:
    """The content and the tool calls of one assistant message."""

    text: str
    tool_calls: tuple[ToolCall, ...] = ()

    @classmethod
    def of_text(cls, text: str) -> Answer:
        return cls(text)

    @classmethod
    def of_message(cls, message: Mapping[str, Any]) -> Answer:
        """An OpenAI assistant message (``content`` text or parts, ``tool_calls``, and the
        legacy ``function_call``); what is not a string is read as empty."""
        calls = [_tool_call(c) for c in message.get("tool_calls") or () if isinstance(c, dict)]
        legacy = message.get("function_call")
        if isinstance(legacy, dict):
            calls.append(_tool_call({"function": legacy}))
        return cls(_content_text(message.get("content")), tuple(calls))

    @classmethod
    def of_completion(cls, completion: Mapping[str, Any]) -> Answer:
        """The first choice's message of a ``chat.completion`` object."""
        choices = completion.get("choices") or [{}]
        first = choices[0] if isinstance(choices[0], dict) else {}
        message = first.get("message")
        return cls.of_message(message if isinstance(message, dict) else {})

    def render(self) -> str:
        """The answer as text (stored with a live diff, shown to a reviewer): the content, then
        one line per tool call."""
        lines = [self.text] if self.text or not self.tool_calls else []
        lines += [f"[tool call] {c.render()}" for c in self.tool_calls]
        return "\n".join(lines)


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text") or "") for p in content
                       if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _tool_call(call: Mapping[str, Any]) -> ToolCall:
    function = call.get("function")
    function = function if isinstance(function, dict) else {}
    return ToolCall(str(function.get("name") or ""), str(function.get("arguments") or ""),
                    str(call.get("id") or ""))


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class AnswerBuilder:
    """An answer put back together from a stream: text pieces, and the tool-call deltas of
    ``chat.completion.chunk`` objects (``tool_calls[i]`` pieces joined by their ``index``)."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._calls: dict[int, _PartialCall] = {}

    def add_text(self, text: str) -> None:
        self._text.append(text)

    def add_chunk(self, chunk: Mapping[str, Any]) -> None:
        """The first choice's delta of one upstream chunk (other choices are not compared)."""
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                delta = choice.get("delta")
                if isinstance(delta, dict):
                    self._add_delta(delta)

    def _add_delta(self, delta: Mapping[str, Any]) -> None:
        content = delta.get("content")
        if isinstance(content, str):
            self._text.append(content)
        for piece in delta.get("tool_calls") or ():
            if not isinstance(piece, dict):
                continue
            index = piece.get("index")
            partial = self._calls.setdefault(index if isinstance(index, int)
                                             else len(self._calls), _PartialCall())
            partial.id = str(piece.get("id") or partial.id)
            function = piece.get("function")
            if isinstance(function, dict):
                partial.name = str(function.get("name") or partial.name)
                if isinstance(function.get("arguments"), str):
                    partial.arguments.append(function["arguments"])

    @property
    def text(self) -> str:
        return "".join(self._text)

    def answer(self) -> Answer:
        calls = tuple(ToolCall(p.name, "".join(p.arguments), p.id)
                      for _, p in sorted(self._calls.items()))
        return Answer(self.text, calls)


def upstream_usage(value: object) -> Usage | None:
    """An upstream's ``usage`` object, if it has the counts (it is the upstream's business)."""
    if not isinstance(value, dict):
        return None
    prompt, completion = value.get("prompt_tokens"), value.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt, completion)
