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

import orjson

from profiles.protocol import Usage

MAX_ANSWER_CHARS = 64_000
"""What of an answer is compared and stored: its text and each call's arguments up to this
many characters (the client always gets the whole answer). Comparing costs about a
microsecond a character: a 20 MB answer held the service for half a minute."""
MAX_TOOL_CALLS = 64
"""…and its first this many tool calls (matching calls is quadratic in their number)."""


MAX_KEPT_CHARS = 16 * MAX_ANSWER_CHARS
"""What an :class:`AnswerBuilder` keeps of a stream (a streamed 100 MB answer took 2 GB)."""


def _canonical_json(arguments: str) -> str:
    """Long arguments that are JSON, written one way (keys sorted, no spaces) before they are
    cut: two calls with the same value written otherwise must still compare equal once cut."""
    if len(arguments) <= MAX_ANSWER_CHARS:
        return arguments
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return arguments
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _cut(text: str) -> str:
    if len(text) <= MAX_ANSWER_CHARS:
        return text
    return f"{text[:MAX_ANSWER_CHARS]}\n[… {len(text) - MAX_ANSWER_CHARS} characters more]"


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

    def size(self) -> int:
        """Characters to compare: the text and every call's name and arguments."""
        return len(self.text) + sum(len(c.name) + len(c.arguments) for c in self.tool_calls)

    def bounded(self) -> Answer:
        """The answer as compared and stored: within :data:`MAX_ANSWER_CHARS` (text, and each
        call's arguments, with a note of what was cut) and :data:`MAX_TOOL_CALLS`."""
        calls = self.tool_calls
        if len(self.text) <= MAX_ANSWER_CHARS and len(calls) <= MAX_TOOL_CALLS and all(
                len(c.arguments) <= MAX_ANSWER_CHARS for c in calls):
            return self
        kept = tuple(ToolCall(c.name, _cut(_canonical_json(c.arguments)), c.id)
                     for c in calls[:MAX_TOOL_CALLS])
        more = len(calls) - len(kept)
        text = _cut(self.text) + (f"\n[… {more} tool calls more]" if more else "")
        return Answer(text, kept)

    @classmethod
    def of_message(cls, message: Mapping[str, Any]) -> Answer:
        """An OpenAI assistant message (``content`` text or parts, ``tool_calls``, and the
        legacy ``function_call``); what is not a string is read as empty. A refusal
        (``refusal``, with ``content`` null) is the answer's text: it was read as an empty
        answer, lost from the live diff and "agreeing" with any other empty answer."""
        calls = [_tool_call(c) for c in message.get("tool_calls") or () if isinstance(c, dict)]
        legacy = message.get("function_call")
        if isinstance(legacy, dict):
            calls.append(_tool_call({"function": legacy}))
        refusal = message.get("refusal")
        text = _content_text(message.get("content"))
        if not text and isinstance(refusal, str):
            text = refusal
        return cls(text, tuple(calls))

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
    """A ``function`` call (name, arguments) or a ``custom`` tool's call (name, input)."""
    custom = call.get("custom")
    if call.get("type") == "custom" and isinstance(custom, dict):
        return ToolCall(str(custom.get("name") or ""), str(custom.get("input") or ""),
                        str(call.get("id") or ""))
    function = call.get("function")
    function = function if isinstance(function, dict) else {}
    return ToolCall(str(function.get("name") or ""), str(function.get("arguments") or ""),
                    str(call.get("id") or ""))


_LEGACY = -1
"""Where :class:`AnswerBuilder` keeps a legacy ``function_call`` (before any tool call)."""


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
        self._kept = 0  # characters kept: past a bound, the rest is counted, not kept
        self._dropped = 0

    def add_text(self, text: str) -> None:
        self._keep(self._text, text)

    def _keep(self, into: list[str], piece: str) -> None:
        """Keep ``piece`` while the answer is within :data:`MAX_KEPT_CHARS` (memory stays
        bounded however long the stream; :meth:`Answer.bounded` cuts it further)."""
        if self._kept > MAX_KEPT_CHARS:
            self._dropped += len(piece)
            return
        self._kept += len(piece)
        into.append(piece)

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
            self._keep(self._text, content)
        refusal = delta.get("refusal")  # a refusal streams instead of content
        if isinstance(refusal, str):
            self._keep(self._text, refusal)
        legacy = delta.get("function_call")  # the deprecated ``functions`` API's one call
        if isinstance(legacy, dict):
            self._add_piece(self._calls.setdefault(_LEGACY, _PartialCall()), legacy,
                            "arguments")
        for piece in delta.get("tool_calls") or ():
            if not isinstance(piece, dict):
                continue
            index = piece.get("index")
            partial = self._calls.setdefault(index if isinstance(index, int)
                                             else len(self._calls), _PartialCall())
            partial.id = str(piece.get("id") or partial.id)
            for kind, text in (("function", "arguments"), ("custom", "input")):
                if isinstance(piece.get(kind), dict):
                    self._add_piece(partial, piece[kind], text)

    def _add_piece(self, partial: _PartialCall, function: Mapping[str, Any], text: str) -> None:
        partial.name = str(function.get("name") or partial.name)
        if isinstance(function.get(text), str):
            self._keep(partial.arguments, function[text])

    @property
    def text(self) -> str:
        dropped = f"\n[… {self._dropped} characters more]" if self._dropped else ""
        return "".join(self._text) + dropped

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
