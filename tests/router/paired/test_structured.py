"""The comparer of agents' answers: tool calls, structured output, then text."""

from __future__ import annotations

import json

import pytest

from router.paired.answer import (
    MAX_ANSWER_CHARS,
    MAX_KEPT_CHARS,
    MAX_TOOL_CALLS,
    Answer,
    AnswerBuilder,
    ToolCall,
)
from router.paired.compare import compare
from router.paired.structured import MAX_JSON_DEPTH, AnswerComparer, parse_json

compare_answers = AnswerComparer(compare)


def calls(*pairs: tuple[str, str]) -> Answer:
    return Answer("", tuple(ToolCall(name, args) for name, args in pairs))


def test_tool_arguments_are_compared_as_json_values() -> None:
    same = compare_answers(calls(("get_weather", '{"city": "Paris", "days": 2}')),
                           calls(("get_weather", '{ "days": 2.0,\n"city":"Paris"}')), ())
    assert not same.flagged and same.agreement == 1.0 and same.method == "tool_calls"
    differs = compare_answers(calls(("get_weather", '{"city": "Paris", "days": 2}')),
                              calls(("get_weather", '{"city": "Lyon", "days": 2}')), ())
    assert differs.flagged and differs.agreement == pytest.approx(0.5)
    assert differs.unified_diff.splitlines()[0] == '# get_weather: city: "Paris" → "Lyon"'
    assert "-get_weather(" in differs.unified_diff and "+get_weather(" in differs.unified_diff


def test_booleans_are_not_numbers_and_missing_arguments_are_named() -> None:
    c = compare_answers(calls(("f", '{"a": true, "b": {"c": [1, 2]}}')),
                        calls(("f", '{"a": 1, "b": {"c": [1]}}')), ())
    lines = c.unified_diff.splitlines()
    assert lines[:2] == ["# f: a: true → 1", "# f: b.c[1]: 2 → (missing)"]


def test_parallel_calls_in_another_order_agree() -> None:
    a = calls(("get_weather", '{"city": "Paris"}'), ("get_time", '{"tz": "CET"}'))
    b = calls(("get_time", '{"tz":"CET"}'), ("get_weather", '{"city":"Paris"}'))
    assert not compare_answers(a, b, ()).flagged
    extra = calls(("get_time", '{"tz":"CET"}'))
    c = compare_answers(a, extra, ())
    assert c.flagged and c.agreement == pytest.approx(0.5)
    assert c.unified_diff.startswith('# only the primary calls get_weather({"city": "Paris"})')


def test_a_tool_call_against_a_text_answer_is_a_disagreement() -> None:
    c = compare_answers(calls(("get_weather", '{"city": "Paris"}')), Answer("It is sunny."), ())
    assert c.flagged and c.agreement == 0.0
    assert c.unified_diff.startswith(
        "# the primary calls get_weather; the partner answers in text")


def test_free_text_arguments_are_compared_by_the_text_comparer() -> None:
    a = calls(("search", '{"query": "weather in Paris tomorrow morning"}'))
    b = calls(("search", '{"query": "tomorrow morning weather in Paris"}'))  # same words
    assert not compare_answers(a, b, ()).flagged
    short = compare_answers(calls(("f", '{"id": "a b"}')), calls(("f", '{"id": "b a"}')), ())
    assert short.flagged  # short strings are values: exactly equal or not


def test_invalid_json_arguments_are_compared_as_written() -> None:
    assert not compare_answers(calls(("f", "{oops")), calls(("f", "{oops")), ()).flagged
    assert compare_answers(calls(("f", "{oops")), calls(("f", "{oops!")), ()).flagged


def test_structured_output_is_compared_field_by_field() -> None:
    a = Answer('{"answer": "B", "confidence": 0.9}')
    b = Answer('```json\n{"confidence": 0.9, "answer": "C"}\n```')
    c = compare_answers(a, b, ())
    assert c.method == "json" and c.flagged and c.agreement == pytest.approx(0.5)
    assert c.unified_diff.splitlines()[0] == '# answer: "B" → "C"'
    same = compare_answers(a, Answer('{"confidence":0.9,"answer":"B"}'), ())
    assert not same.flagged and same.method == "json"
    assert parse_json(" [1] ") == [1]


def test_text_answers_go_to_the_text_comparer() -> None:
    c = compare_answers(Answer("Paris is the capital."), Answer("Lyon."), ())
    assert c.method == "jaccard" and c.flagged


def test_a_streamed_answer_is_put_back_together() -> None:
    builder = AnswerBuilder()

    def chunk(delta: dict[str, object]) -> dict[str, object]:
        return {"choices": [{"index": 0, "delta": delta}]}

    builder.add_chunk(chunk({"role": "assistant", "content": "Let me check. "}))
    builder.add_chunk(chunk({"tool_calls": [{"index": 0, "id": "c0", "function": {
        "name": "get_weather", "arguments": '{"city": '}}]}))
    builder.add_chunk(chunk({"tool_calls": [{"index": 1, "id": "c1", "function": {
        "name": "get_time", "arguments": "{}"}}]}))
    builder.add_chunk(chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}))
    builder.add_chunk({"choices": [], "usage": {"prompt_tokens": 1}})
    answer = builder.answer()
    assert answer.text == "Let me check. "
    assert answer.tool_calls == (ToolCall("get_weather", '{"city": "Paris"}', "c0"),
                                 ToolCall("get_time", "{}", "c1"))
    assert answer.render() == ('Let me check. \n[tool call] get_weather({"city": "Paris"})\n'
                               "[tool call] get_time({})")


def test_a_message_object_is_read_with_its_tool_calls() -> None:
    answer = Answer.of_message({"role": "assistant", "content": [{"type": "text", "text": "a"}],
                                "tool_calls": [{"id": "x", "type": "function", "function": {
                                    "name": "f", "arguments": "{}"}}]})
    assert answer == Answer("a", (ToolCall("f", "{}", "x"),))
    assert Answer.of_completion({"choices": [{"message": {"content": None}}]}) == Answer("")


def test_a_refusal_is_the_answer_read_not_an_empty_one() -> None:
    """The SDK's ``message.model_dump()`` of a refusal has ``content: None`` and the text in
    ``refusal``: it was read as "", stored as an empty answer, and agreed with any empty one."""
    refusal = {"role": "assistant", "content": None, "refusal": "I can't help with that.",
               "tool_calls": None}
    assert Answer.of_message(refusal).text == "I can't help with that."
    assert Answer.of_message({**refusal, "content": "Here it is."}).text == "Here it is."
    empty = Answer.of_message({"role": "assistant", "content": ""})
    assert compare_answers(Answer.of_message(refusal), empty, ()).agreement < 1.0
    builder = AnswerBuilder()
    for piece in ("I can't ", "help with that."):
        builder.add_chunk({"choices": [{"index": 0, "delta": {"refusal": piece}}]})
    assert builder.answer().text == "I can't help with that."


def test_json_nested_past_the_limit_is_compared_as_text() -> None:
    deep = "[" * 5000 + "]" * 5000  # past the parser's own recursion limit
    just = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert isinstance(parse_json(just), list)
    assert not isinstance(parse_json("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)),
                          list)
    c = compare_answers(Answer(deep), Answer("[[1]]"), ())
    assert c.method != "json" and c.flagged
    assert not compare_answers(Answer(deep), Answer(deep), ()).flagged
    args = compare_answers(calls(("f", deep)), calls(("f", deep + " ")), ())
    assert args.method == "tool_calls" and args.flagged  # compared as written
    assert not compare_answers(calls(("f", deep)), calls(("f", deep)), ()).flagged


def test_numbers_inside_free_text_arguments_must_be_the_same() -> None:
    """A longer string is compared by meaning, but an id or an amount in it is a value."""
    for left, right in [("DELETE FROM users WHERE id = 5", "DELETE FROM users WHERE id = 6"),
                        ("transfer 100 dollars to savings now", "transfer 900 dollars to "
                                                                 "savings now")]:
        c = compare_answers(calls(("run", json.dumps({"q": left}))),
                            calls(("run", json.dumps({"q": right}))), ())
        assert c.flagged, (left, right)
    same = compare_answers(calls(("run", '{"q": "weather in Paris on day 3 please"}')),
                           calls(("run", '{"q": "please weather in Paris on day 3"}')), ())
    assert not same.flagged


def test_a_long_answer_is_cut_to_what_is_compared_and_stored() -> None:
    long = Answer("x" * (MAX_ANSWER_CHARS + 5000), tuple(
        ToolCall("f", '{"a": "' + "y" * (MAX_ANSWER_CHARS + 10) + '"}') for _ in range(600)))
    cut = long.bounded()
    assert cut.text.startswith("x" * MAX_ANSWER_CHARS)
    assert cut.text.endswith("[… 5000 characters more]\n[… 536 tool calls more]")
    assert len(cut.tool_calls) == MAX_TOOL_CALLS
    assert all(c.arguments.endswith("characters more]") for c in cut.tool_calls)
    short = Answer("fine", (ToolCall("f", "{}"),))
    assert short.bounded() is short


def test_a_streamed_answer_keeps_a_bounded_part_of_what_streams() -> None:
    """A 100 MB stream took 2 GB to put back together: the builder keeps what it may use."""
    builder = AnswerBuilder()
    piece = "z" * 100_000
    for _ in range(1000):  # 100 M characters
        builder.add_text(piece)
    text = builder.answer().text
    assert len(text) < MAX_KEPT_CHARS + 2 * len(piece)
    assert text.endswith("characters more]")
    assert len(builder.answer().bounded().text) < MAX_ANSWER_CHARS + 100


@pytest.mark.parametrize(("left", "right"), [
    ("weather in Paris today", "weather in Lyon today"),  # a name
    ("SELECT * FROM users WHERE id = 5", "DELETE FROM users WHERE id = 5"),  # a code word
    ("rm -rf /tmp/build/cache", "rm -rf / tmp/build/cache"),  # a path
    ("Please do not wire the money", "Please do wire the money"),  # a negation
    ("Please don't wire the money", "Please do wire the money"),
])
def test_free_text_arguments_must_keep_names_code_words_paths_and_negations(
        left: str, right: str) -> None:
    """An embedder scores a one-word change of a four-word string as the same meaning: an
    auditor deleting where the primary selects was full agreement."""
    c = compare_answers(calls(("run", json.dumps({"q": left}))),
                        calls(("run", json.dumps({"q": right}))), ())
    assert c.flagged and c.agreement == 0.0, (left, right)


def test_salient_words_may_move_and_change_case() -> None:
    same = compare_answers(calls(("s", '{"q": "Paris weather for tomorrow morning"}')),
                           calls(("s", '{"q": "tomorrow morning weather for paris"}')), ())
    assert not same.flagged
    negated = compare_answers(calls(("s", '{"q": "do not wire the money today"}')),
                              calls(("s", '{"q": "today do not wire the money"}')), ())
    assert not negated.flagged


def test_custom_tool_calls_are_read_and_compared_by_name_and_input() -> None:
    def custom(name: str, given: str) -> dict[str, object]:
        return {"id": "c", "type": "custom", "custom": {"name": name, "input": given}}

    python = Answer.of_message({"tool_calls": [custom("python", "print(1)")]})
    shell = Answer.of_message({"tool_calls": [custom("shell", "rm -rf /")]})
    assert python.tool_calls == (ToolCall("python", "print(1)", "c"),)
    c = compare_answers(python, shell, ())
    assert c.flagged and c.agreement == 0.0
    builder = AnswerBuilder()
    for piece in ({"index": 0, "id": "c", "type": "custom", "custom": {"name": "python"}},
                  {"index": 0, "custom": {"input": "print("}},
                  {"index": 0, "custom": {"input": "1)"}}):
        builder.add_chunk({"choices": [{"index": 0, "delta": {"tool_calls": [piece]}}]})
    assert builder.answer() == python


def test_a_streamed_legacy_function_call_is_put_back_together() -> None:
    """The deprecated `functions` API streams one `function_call`: ignored, two equal calls
    were a disagreement ("the partner calls get_weather; the primary answers in text")."""
    builder = AnswerBuilder()
    for delta in ({"role": "assistant", "function_call": {"name": "get_weather",
                                                          "arguments": ""}},
                  {"function_call": {"arguments": '{"city": '}},
                  {"function_call": {"arguments": '"Paris"}'}}):
        builder.add_chunk({"choices": [{"index": 0, "delta": delta}]})
    streamed = builder.answer()
    assert streamed.tool_calls[0].name == "get_weather"
    whole = Answer.of_message({"function_call": {"name": "get_weather",
                                                 "arguments": '{"city":"Paris"}'}})
    assert not compare_answers(whole, streamed, ()).flagged


def test_long_arguments_equal_as_json_agree_once_cut() -> None:
    """Cut as written, 115 KB of arguments in another key order were invalid JSON compared as
    text: a disagreement."""
    items = {f"k{i}": "v" * 20 for i in range(5000)}
    a = json.dumps(items)
    b = json.dumps(dict(reversed(items.items())), indent=1)
    assert len(a) > MAX_ANSWER_CHARS
    c = compare_answers(calls(("f", a)).bounded(), calls(("f", b)).bounded(), ())
    assert not c.flagged
    other = json.dumps({**items, "k7": "w"})
    assert compare_answers(calls(("f", a)).bounded(), calls(("f", other)).bounded(),
                           ()).flagged
