"""Comparing what agents produce: tool calls, structured output, then text.

:class:`AnswerComparer` is what the engine compares two :class:`~router.paired.answer.Answer`
values with. It wraps a text :class:`~router.paired.compare.Comparer` (the noise-aware one in
the service) and decides, in this order:

1. **Tool calls** — when either answer calls a tool. Calls are matched by function name,
   ignoring the order of parallel calls; the arguments are read as JSON and compared as values
   (``{"city": "Paris"}`` and ``{ "city":"Paris" }`` agree; ``1`` and ``1.0`` agree; ``true``
   and ``1`` do not). One answer calling a tool while the other answers in text, a call only one
   side makes, or any differing argument is a disagreement.
2. **Structured output** — when both texts are JSON objects or arrays (``response_format``,
   optionally in a code fence): compared field by field the same way.
3. **Text** — otherwise the wrapped comparer (noise floors, typed extraction).

Within JSON, a string of :data:`FREE_TEXT_WORDS` words or more (a search query, a summary) is
free text: two different ones count as equal unless the wrapped comparer flags them, so a
paraphrased query is not flagged as a different argument — provided both keep the same
numbers and *salient* words (names, code words such as ``SELECT``, paths and flags, a
negation: "weather in Paris today" and "weather in Lyon today" differ whatever an embedder
makes of them); shorter strings (names, ids, cities) and numbers must be equal. Agreement
is the share of calls (or fields) that agree, and the live diff starts with one line per
difference — ``get_weather: city: "Paris" → "Lyon"`` (primary → partner) — followed by a
unified diff of the two answers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from router.paired.answer import Answer, ToolCall
from router.paired.compare import Comparer, Comparison, unified_diff

FREE_TEXT_WORDS = 4
"""Strings with at least this many words are compared by meaning, not character by character."""
STRUCTURAL_THRESHOLD = 0.0
"""Any structural difference beyond noise is flagged: the divergence must be exactly zero."""
MAX_JSON_DEPTH = 64
"""JSON nested deeper than this is compared as text: a structural diff walks it recursively,
and no tool argument or structured answer needs more levels."""
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
_MISSING = object()
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")

TextSame = Callable[[str, str], bool]
"""Whether two free-text strings say the same (the wrapped comparer does not flag them)."""


@dataclass(frozen=True, slots=True)
class _Diff:
    """The differences between two JSON values, and how many leaves they had."""

    changes: tuple[str, ...]
    leaves: int

    @property
    def share_equal(self) -> float:
        return 1.0 - len(self.changes) / self.leaves if self.leaves else 1.0


def _show(value: object) -> str:
    if value is _MISSING:
        return "(missing)"
    shown = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _same_scalar(a: object, b: object, text_same: TextSame) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, str) and isinstance(b, str):
        if a == b:
            return True
        free = max(len(a.split()), len(b.split())) >= FREE_TEXT_WORDS
        # by meaning, but what it names or does must be there on both sides: the numbers (an
        # id, an amount), names, code words, paths and a negation
        return free and sorted(_NUMBER.findall(a)) == sorted(_NUMBER.findall(b)) and \
            _keeps_salient(a, b) and text_same(a, b)
    return a == b


_NEGATIONS = frozenset({"not", "no", "never", "none", "nothing", "nobody", "nowhere",
                        "neither", "nor", "without", "cannot"})
_PUNCTUATION = ".,;:!?\"'()[]{}«»“”‘’"


def _words(text: str) -> list[str]:
    """The words of a text without the punctuation around them (a negation as ``not``)."""
    words = []
    for word in text.split():
        core = word.strip(_PUNCTUATION)
        if core:
            folded = core.casefold()
            words.append("not" if folded in _NEGATIONS or folded.endswith("n't") else core)
    return words


def _salient(words: list[str]) -> set[str]:
    """The words a paraphrase keeps: names (capitalised, after the first word), code words
    (all capitals: SQL, acronyms), paths, flags, addresses (symbols inside a word) and a
    negation; case-folded."""
    return {w.casefold() for i, w in enumerate(words)
            if w == "not" or (len(w) > 1 and w.isupper()) or (i > 0 and w[0].isupper())
            or not w.replace("'", "").replace("’", "").isalnum()}


def _keeps_salient(a: str, b: str) -> bool:
    """Whether each side's salient words (:func:`_salient`) appear on the other side:
    "weather in Paris" is not "weather in Lyon", ``SELECT`` is not ``DELETE``, ``rm -rf
    /tmp/x`` is not ``rm -rf / tmp/x`` and "do not wire" is not "do wire" — whatever an
    embedder makes of them."""
    left, right = _words(a), _words(b)
    return _salient(left) <= {w.casefold() for w in right} and \
        _salient(right) <= {w.casefold() for w in left}


def json_diff(a: object, b: object, text_same: TextSame, path: str = "") -> _Diff:
    """Leaf-by-leaf differences of two JSON values (objects by key, arrays by position)."""
    if isinstance(a, dict) and isinstance(b, dict):
        changes: list[str] = []
        leaves = 0
        for key in sorted(a.keys() | b.keys()):
            sub = json_diff(a.get(key, _MISSING), b.get(key, _MISSING), text_same,
                            f"{path}.{key}" if path else str(key))
            changes += sub.changes
            leaves += sub.leaves
        return _Diff(tuple(changes), leaves)
    if isinstance(a, list) and isinstance(b, list):
        changes, leaves = [], 0
        for i in range(max(len(a), len(b))):
            sub = json_diff(a[i] if i < len(a) else _MISSING, b[i] if i < len(b) else _MISSING,
                            text_same, f"{path}[{i}]")
            changes += sub.changes
            leaves += sub.leaves
        return _Diff(tuple(changes), leaves)
    if a is not _MISSING and b is not _MISSING and _same_scalar(a, b, text_same):
        return _Diff((), 1)
    return _Diff((f"{path or '(value)'}: {_show(a)} → {_show(b)}",), 1)


def parse_json(text: str) -> object:
    """The JSON object or array a text holds (a code fence around it is allowed), else
    :data:`_MISSING`."""
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    if fenced:
        stripped = fenced.group(1)
    if not stripped or stripped[0] not in "{[":
        return _MISSING
    return _loads(stripped)


def _loads(text: str) -> object:
    """``json.loads``, or :data:`_MISSING` when the text is not JSON or nests deeper than
    :data:`MAX_JSON_DEPTH` (the parser's own limit raises ``RecursionError``)."""
    try:
        value: object = json.loads(text)
    except (ValueError, RecursionError):
        return _MISSING
    return value if _depth_within(value, MAX_JSON_DEPTH) else _MISSING


def _depth_within(value: object, limit: int) -> bool:
    """Whether ``value``'s containers nest at most ``limit`` deep (iteratively)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Sequence[object] = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth >= limit:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True


def _arguments(call: ToolCall) -> object:
    """A call's arguments as JSON, or the raw text when they are not valid JSON (or nest
    deeper than :data:`MAX_JSON_DEPTH`)."""
    if not call.arguments.strip():
        return {}
    value = _loads(call.arguments)
    return call.arguments if value is _MISSING else value


def _calls_diff(primary: Sequence[ToolCall], partner: Sequence[ToolCall],
                text_same: TextSame) -> tuple[float, list[str]]:
    """(the share of calls that agree, one line per difference); order is ignored."""
    # each call's arguments parsed once (matching is quadratic in the calls, parsing was too)
    left = [(c, _arguments(c)) for c in primary]
    right = [(c, _arguments(c)) for c in partner]
    changes: list[str] = []
    agreeing = 0.0
    # equal calls first, so that two parallel calls in another order pair up with their twins
    for entry in list(left):
        call, args = entry
        twin = next((r for r in right if r[0].name == call.name
                     and not json_diff(args, r[1], text_same).changes), None)
        if twin is not None:
            left.remove(entry)
            right.remove(twin)
            agreeing += 1
    for entry in list(left):
        call, args = entry
        twin = next((r for r in right if r[0].name == call.name), None)
        if twin is None:
            continue
        left.remove(entry)
        right.remove(twin)
        diff = json_diff(args, twin[1], text_same)
        agreeing += diff.share_equal
        changes += [f"{call.name}: {change}" for change in diff.changes]
    changes += [f"only the primary calls {c.render()}" for c, _ in left]
    changes += [f"only the partner calls {c.render()}" for c, _ in right]
    total = max(len(primary), len(partner))
    return (agreeing / total if total else 1.0), changes


class AnswerComparer:
    """Compares two answers: tool calls, structured output, then text (module docstring)."""

    def __init__(self, text: Comparer) -> None:
        self.text = text

    def __call__(self, primary: Answer, partner: Answer, domains: Sequence[str], *,
                 pair: tuple[str, str] | None = None) -> Comparison:
        def text_same(a: str, b: str) -> bool:
            return not self.text(a, b, domains, pair=pair).flagged

        if primary.tool_calls or partner.tool_calls:
            return self._tool_calls(primary, partner, text_same)
        a, b = parse_json(primary.text), parse_json(partner.text)
        if a is not _MISSING and b is not _MISSING:
            diff = json_diff(a, b, text_same)
            return _structural(diff.share_equal, list(diff.changes), primary, partner, "json")
        return self.text(primary.text, partner.text, domains, pair=pair)

    def _tool_calls(self, primary: Answer, partner: Answer, text_same: TextSame) -> Comparison:
        if not primary.tool_calls or not partner.tool_calls:
            caller, texter = ("primary", "partner") if primary.tool_calls else ("partner",
                                                                                 "primary")
            calls = primary.tool_calls or partner.tool_calls
            change = (f"the {caller} calls {', '.join(c.name for c in calls)}; the {texter} "
                      "answers in text")
            return _structural(0.0, [change], primary, partner, "tool_calls")
        share, changes = _calls_diff(primary.tool_calls, partner.tool_calls, text_same)
        return _structural(share, changes, primary, partner, "tool_calls")


def _structural(agreement: float, changes: list[str], primary: Answer, partner: Answer,
                method: str) -> Comparison:
    flagged = bool(changes)
    agreement = min(agreement, 1.0 - 1e-9) if flagged else 1.0
    diff = ""
    if flagged:
        body = unified_diff(_canonical(primary), _canonical(partner))
        diff = "".join(f"# {c}\n" for c in changes) + body
    return Comparison(agreement, flagged, 1.0 - agreement, STRUCTURAL_THRESHOLD, diff,
                      method=method)


def _canonical(answer: Answer) -> str:
    """The answer with its tool calls sorted and their arguments as canonical JSON, so the
    unified diff shows values, not spacing or call order."""
    calls = sorted((c.name, _dump(_arguments(c))) for c in answer.tool_calls)
    lines = [f"{name}({args})" for name, args in calls]
    value = parse_json(answer.text)
    text = answer.text if value is _MISSING else _dump(value, indent=2)
    return "\n".join(([text] if text else []) + lines) + "\n"


def _dump(value: object, indent: int | None = None) -> str:
    if isinstance(value, str) and indent is None:
        return value  # arguments that were not JSON: as written
    return json.dumps(value, ensure_ascii=False, sort_keys=True, indent=indent)
