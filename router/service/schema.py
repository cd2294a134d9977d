"""Request bodies of the service, validated with pydantic, and their translation.

Chat requests follow the OpenAI schema: unknown top-level fields are accepted (clients send
many we ignore), but the ``diffroute`` options object is strict, so a typo is a 400, not a
silently ignored option. Validation errors become one :class:`BadRequestError` naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails

from profiles.protocol import Message, SampleRequest
from router.errors import BadRequestError, DiffrouteError
from router.json_depth import MAX_WRITTEN_DEPTH, too_deep_to_write
from router.paired.call import PairedOptions
from router.pairing.decision import Role
from router.service.model_names import PoolNames, parse_model
from router.service.state import SETTINGS

DEFAULT_MAX_TOKENS = 512
"""When a request gives no ``max_tokens``: bounded, so a local model never runs away."""
MAX_N = 16
HEADER_PREFIX = "x-diffroute-"
TRANSLATED_FIELDS = frozenset({
    "model", "messages", "stream", "stream_options", "temperature", "max_tokens",
    "max_completion_tokens", "stop", "seed", "n", "logprobs", "top_logprobs"})
"""The fields a translated call (a local or scripted model) carries to the backend."""
BOOKKEEPING_FIELDS = frozenset({"user", "metadata", "store", "service_tier",
                                "prompt_cache_key", "safety_identifier"})
"""Fields that say who asks or how to bill, not what to answer: a translated call may ignore
them. Any other field (``tools``, ``response_format``, ``top_p``…) is a 400 there."""
TRANSLATED_MESSAGE_FIELDS = frozenset({"role", "content", "name"})


class DiffrouteOptions(BaseModel):
    """The ``diffroute`` object of a chat request (or its ``x-diffroute-*`` headers)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    role: Role | None = None
    partner: str | None = Field(None, min_length=1)
    candidates: list[str] | None = Field(None, min_length=1)
    audit_mode: Literal["concurrent", "review"] | None = None
    shadow_rate: float | None = Field(None, ge=0, le=1)
    domain: str | None = Field(None, min_length=1)

    def to_options(self) -> PairedOptions:
        return PairedOptions(
            role=self.role, partner=self.partner,
            candidates=tuple(self.candidates) if self.candidates is not None else None,
            audit_mode=self.audit_mode, shadow_rate=self.shadow_rate, domain=self.domain)


OPTION_NAMES = tuple(DiffrouteOptions.model_fields)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    type: Literal["text"]
    text: str


class OtherPart(BaseModel):
    """A content part that is not text (``image_url``, ``input_audio``…): forwarded as it is,
    refused by a translated call."""

    model_config = ConfigDict(extra="allow", strict=True)

    type: str

    @field_validator("type")
    @classmethod
    def _not_text(cls, value: str) -> str:
        if value == "text":
            raise ValueError("a text part needs 'text', a string")
        return value


ContentPart = Annotated[TextPart | OtherPart, Field(union_mode="left_to_right")]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    """(``function``: the deprecated ``functions`` API's result message, still accepted.)"""
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content if isinstance(part, TextPart))
        return self.content or ""

    def untranslated_part(self) -> int | None:
        """The index of the first content part that is not text, if any."""
        if isinstance(self.content, list):
            return next((i for i, p in enumerate(self.content)
                         if not isinstance(p, TextPart)), None)
        return None


def task_text(messages: Sequence[ChatMessage]) -> str:
    """The text the policy infers a conversation's domains from: the last user message, else
    the last message (the chat path and ``POST /v1/route`` alike: the same messages routed
    one way on ``all``, the other on their domain)."""
    users = [m.text() for m in messages if m.role == "user"]
    return users[-1] if users else (messages[-1].text() if messages else "")


class ChatRequest(BaseModel):
    """``POST /v1/chat/completions``; the OpenAI parameters diffroute passes on."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1)
    messages: list[ChatMessage]
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    n: int = Field(1, ge=1, le=MAX_N)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    diffroute: DiffrouteOptions | None = None
    _sent: dict[str, Any] = PrivateAttr(default_factory=dict)

    @field_validator("stream", "n", mode="before")
    @classmethod
    def _null_is_default(cls, value: object, info: ValidationInfo) -> object:
        """``null`` is the default, as the OpenAI API reads it ("boolean or null", "integer or
        null"): clients that write every field send it."""
        if value is None:
            return cls.model_fields[str(info.field_name)].default
        return value

    @property
    def sent(self) -> dict[str, Any]:
        """The body as the client sent it (a pass-through forwards it, less ``diffroute``)."""
        return self._sent

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))

    def sample_request(self) -> SampleRequest:
        """What the backends get."""
        messages: tuple[Message, ...] = tuple(
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in self.messages)
        # an empty stop string would end every answer before its first token: it stops nothing
        stop = tuple(s for s in ((self.stop,) if isinstance(self.stop, str) else self.stop or ())
                     if s)
        changes: dict[str, Any] = {}
        if self.temperature is not None:
            changes["temperature"] = self.temperature
        return SampleRequest(
            messages=messages, n=self.n,
            max_tokens=self.max_completion_tokens or self.max_tokens or DEFAULT_MAX_TOKENS,
            stop=stop, seed=self.seed,
            # logprobs alone (no top_logprobs) still wants the first token's logprob: one
            # alternative is computed, none is listed (:meth:`shown_top_logprobs`)
            top_logprobs=max(1, self.top_logprobs or 0) if self.logprobs else 0, **changes)

    def shown_top_logprobs(self) -> int | None:
        """How many alternatives a translated answer lists (``None``: no ``logprobs``)."""
        return (self.top_logprobs or 0) if self.logprobs else None

    def task_text(self) -> str:
        """The text the policy infers the task's domains from (:func:`task_text`)."""
        return task_text(self.messages)

    def untranslated_field(self) -> str | None:
        """The first field of the body a translated call would lose (``tools``,
        ``messages[2].tool_calls``…), or ``None`` when translation keeps everything. A field
        that is ``null`` or an empty list says nothing, so dropping it loses nothing: clients
        that write every field send ``"top_p": null``, and an assistant message sent back as
        the SDK's ``message.model_dump()`` has ``"refusal": null, "tool_calls": null``."""
        for name, value in self._sent.items():
            if name not in TRANSLATED_FIELDS and name not in BOOKKEEPING_FIELDS and \
                    not _empty(value):
                return name
        for i, message in enumerate(self.messages):
            if message.role in ("tool", "function"):
                return f"messages[{i}].role"
            for name, value in (message.model_extra or {}).items():
                if name not in TRANSLATED_MESSAGE_FIELDS and not _empty(value):
                    return f"messages[{i}].{name}"
            part = message.untranslated_part()
            if part is not None:
                return f"messages[{i}].content[{part}]"
        return None

    def check_translatable(self, model: str, backend: str) -> None:
        """A 400 naming the field and the model when translating for ``model`` would drop
        part of the request (the silent drop an agent would never notice)."""
        field = self.untranslated_field()
        if field is not None:
            raise BadRequestError(
                f"'{field}' is not supported by model '{model}' (backend '{backend}' gets a "
                "translated request; only OpenAI-compatible models (kind: openai) are sent the "
                "body as it is): remove it or use another model", param=field,
                code="unsupported_field")


def _empty(value: object) -> bool:
    """``null`` or ``[]``: a field that asks for nothing (``"tool_calls": []`` is no call)."""
    return value is None or (isinstance(value, list) and not value)


class RouteBody(BaseModel):
    """``POST /v1/route``: a pairing decision without any model call."""

    model_config = ConfigDict(extra="forbid", strict=True)

    role: Role
    task: str | None = None
    messages: list[ChatMessage] | None = None
    primary: str | None = Field(None, min_length=1)
    candidates: list[str] | None = Field(None, min_length=1)
    domain: str | None = Field(None, min_length=1)

    def task_text(self) -> str:
        return self.task if self.task is not None else task_text(self.messages or ())

    def task_messages(self) -> tuple[dict[str, Any], ...]:
        """The task as messages: those given, else the ``task`` text as one user message."""
        if self.messages:
            return tuple(m.model_dump(exclude_none=True) for m in self.messages)
        return ({"role": "user", "content": self.task or ""},)


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    name: str
    arguments: str


class ToolCallItem(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class CustomCall(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    name: str
    input: str


class CustomToolCallItem(BaseModel):
    """A call of a ``custom`` tool (free-form input instead of JSON arguments)."""

    model_config = ConfigDict(extra="allow", strict=True)

    id: str | None = None
    type: Literal["custom"]
    custom: CustomCall


def _tool_call_kind(value: object) -> str:
    kind = value.get("type", "function") if isinstance(value, dict) \
        else getattr(value, "type", "function")  # (a model, when it is dumped)
    # tags with "[" in them, which bad_request leaves out of the field it names
    return f"type[{kind}]" if kind in ("function", "custom") else "type[?]"


AnyToolCall = Annotated[
    Annotated[ToolCallItem, Tag("type[function]")]
    | Annotated[CustomToolCallItem, Tag("type[custom]")],
    Discriminator(_tool_call_kind, custom_error_type="invalid_tool_call_type",
                  custom_error_message="a tool call's type is 'function' or 'custom'")]


class AssistantMessage(BaseModel):
    """An OpenAI assistant message as a framework got it (``message.model_dump()``)."""

    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["assistant"] = "assistant"
    content: str | list[TextPart] | None = None
    tool_calls: list[AnyToolCall] | None = None


class ReportedAnswer(BaseModel):
    """One model's answer in a report: the assistant message, and the model that gave it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = Field(None, min_length=1)
    """The pool name the framework called; when given it must be the decision's."""
    message: AssistantMessage


class ReportBody(BaseModel):
    """``POST /v1/diffs``: the answers of a routed pair that the framework called itself."""

    model_config = ConfigDict(extra="forbid", strict=True)

    decision_id: str = Field(min_length=1)
    """The ``decision_id`` of a ``POST /v1/route`` answer."""
    primary: ReportedAnswer
    partner: ReportedAnswer
    messages: list[ChatMessage] | None = Field(None, min_length=1)
    """The conversation both answered (stored with a live diff); default: the routed task."""


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


_UNION_BRANCHES = frozenset({"str", "int", "float", "bool", "bytes", "list", "dict", "tuple",
                             "set", "none", "literal", "is-instance", "json-or-python",
                             "TextPart", "OtherPart"})


def _field(err: ErrorDetails) -> tuple[int | str, ...]:
    # pydantic names the branch of a union it tried ("str", "list[…]", "function-after[…]",
    # a content part's model): not a field the client sent
    return tuple(p for p in err["loc"] if not (isinstance(p, str) and (
        "[" in p or p in _UNION_BRANCHES)))


def bad_request(exc: ValidationError, prefix: str = "") -> BadRequestError:
    """The first validation problem as a 400 naming the field: of the union's branches that
    failed on it, the one that got furthest into the value (``content: [{"type": "text"}]``
    said "content: Input should be a valid string", not that the part lacks its text)."""
    errors = exc.errors()
    first = _field(errors[0])
    err = max((e for e in errors if _field(e)[:len(first)] == first),
              key=lambda e: len(_field(e)))  # the first of the deepest
    loc = _field(err)
    where = prefix + _where(loc)
    if err["type"] == "extra_forbidden" and where.startswith("diffroute."):
        return BadRequestError(
            f"unknown diffroute option '{where.removeprefix('diffroute.')}' "
            f"(known: {', '.join(OPTION_NAMES)})", param=where, code="unknown_option")
    if err["type"] == "extra_forbidden":
        return BadRequestError(f"unknown field '{where}'", param=where)
    return BadRequestError(f"{where}: {err['msg']}", param=where)


M = TypeVar("M", bound=BaseModel)


def _validated(model: type[M], body: object) -> M:
    """A JSON object validated into ``model``; any problem is one 400 naming the field."""
    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise bad_request(exc) from None


def parse_chat(body: object) -> ChatRequest:
    """Validate a chat body; the common mistakes get their own message."""
    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object")
    chat = _validated(ChatRequest, body)
    if not chat.messages:
        raise BadRequestError("messages must contain at least one message", param="messages")
    body.pop("diffroute", None)
    chat._sent = body
    return chat


@dataclass(frozen=True, slots=True)
class PlainCall:
    """A chat request for one pool model (``domain``: ``diffroute.domain``, if given; a plain
    call has no pair to route, but a domain that does not exist is still a 400)."""

    model: str
    domain: str | None = None


@dataclass(frozen=True, slots=True)
class PairedRequest:
    """A chat request for a pair: its role, its primary (``None``: auto) and its options."""

    role: Role
    primary: str | None
    options: PairedOptions


NO_OPTIONS = PairedOptions()


def plan_call(chat: ChatRequest, headers: Mapping[str, str],
              pool: PoolNames) -> PlainCall | PairedRequest:
    """Whom a chat request is for: ``model`` and the options (headers, then the body's)."""
    options = merge_options(headers, chat.diffroute)
    target = parse_model(chat.model, pool)
    role = target.role or options.role
    if target.role is not None and options.role not in (None, target.role):
        where = _option_param("role", chat.diffroute)
        raise BadRequestError(
            f"{where} '{options.role}' contradicts model '{target.role}:…'", param=where)
    if role is not None:
        return PairedRequest(role, target.primary, options)
    if target.primary is None:  # parse_model gives a primary to every plain name
        raise BadRequestError("a paired call needs a role", param="diffroute.role")
    _reject_paired_options(options, chat.diffroute)
    return PlainCall(target.primary, options.domain)


def _option_param(key: str, body: DiffrouteOptions | None) -> str:
    """Where an option was given: ``diffroute.<key>`` in the body (which wins), else its
    ``x-diffroute-<key>`` header — the name the client wrote, as a header's own errors say."""
    if body is not None and getattr(body, key) is not None:
        return f"diffroute.{key}"
    return HEADER_PREFIX + key.replace("_", "-")


def named_as_sent(exc: DiffrouteError, body: DiffrouteOptions | None) -> DiffrouteError:
    """``exc`` with its ``param`` as the client wrote the option: an error about
    ``diffroute.<key>`` (an unknown partner or candidate, a domain) names the
    ``x-diffroute-<key>`` header when the option came from it, not from the body."""
    param = exc.param or ""
    key = param.removeprefix("diffroute.")
    if param.startswith("diffroute.") and key in OPTION_NAMES:
        exc.param = _option_param(key, body)
    return exc


def _reject_paired_options(options: PairedOptions, body: DiffrouteOptions | None) -> None:
    if options == NO_OPTIONS:
        return
    paired_only = {"partner": options.partner, "candidates": options.candidates,
                   "audit_mode": options.audit_mode, "shadow_rate": options.shadow_rate}
    given = [k for k, v in paired_only.items() if v is not None]
    if given:
        where = _option_param(given[0], body)
        raise BadRequestError(
            f"option {where} needs a paired call: use model 'audit:<name>' or "
            "'assist:<name>', or set diffroute.role", param=where)


def parse_route(body: object) -> RouteBody:
    route = _validated(RouteBody, body)
    if route.task is None and not route.messages:
        raise BadRequestError("give 'task' (text) or 'messages'",
                              param="messages" if route.messages is not None else "task")
    return route


def parse_report(body: object) -> ReportBody:
    return _validated(ReportBody, body)


def has_option_headers(headers: Mapping[str, str]) -> bool:
    """Whether any ``x-diffroute-*`` header is present (cheap: most requests have none)."""
    return any(name[:12].lower() == HEADER_PREFIX for name in headers)


def header_options(headers: Mapping[str, str]) -> dict[str, Any]:
    """``x-diffroute-*`` request headers as a raw options mapping (unknown ones rejected)."""
    raw: dict[str, Any] = {}
    if not has_option_headers(headers):
        return raw
    for name, value in headers.items():
        lowered = name.lower()
        if not lowered.startswith(HEADER_PREFIX):
            continue
        key = lowered.removeprefix(HEADER_PREFIX).replace("-", "_")
        if key not in OPTION_NAMES:
            raise BadRequestError(
                f"unknown header '{name}' (known: "
                f"{', '.join(HEADER_PREFIX + k.replace('_', '-') for k in OPTION_NAMES)})",
                param=name, code="unknown_option")
        raw[key] = [c.strip() for c in value.split(",") if c.strip()] if key == "candidates" \
            else value.strip()
    return raw


def merge_options(headers: Mapping[str, str], body: DiffrouteOptions | None) -> PairedOptions:
    """Headers first, the body's ``diffroute`` object on top."""
    raw = header_options(headers)
    if not raw:
        return body.to_options() if body is not None else PairedOptions()
    try:
        # header values are text: let pydantic convert "0.5" to a float here
        from_headers = DiffrouteOptions.model_validate(raw, strict=False)
    except ValidationError as exc:
        err = bad_request(exc)
        name = HEADER_PREFIX + (err.param or "").replace("_", "-")
        raise BadRequestError(f"header {name}: {exc.errors()[0]['msg']}", param=name) from None
    merged = from_headers.model_dump(exclude_none=True)
    if body is not None:
        merged |= body.model_dump(exclude_none=True)
    return DiffrouteOptions.model_validate(merged).to_options()


async def read_json(request: web.Request) -> object:
    """The request's JSON body: 413 above the size limit, 400 when empty or malformed."""
    limit = request.app[SETTINGS].server.max_body_bytes
    length = request.content_length  # parsed from the header on every access
    if length is not None and length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=length)
    try:
        raw = await _body(request, limit)
    except RequestPayloadError as exc:  # e.g. a Content-Encoding the bytes are not in
        message = " ".join(str(exc).replace("400, message:", "").split())
        raise BadRequestError(f"the request body cannot be read: {message}",
                              code="invalid_body") from None
    if not raw or raw.isspace():
        raise BadRequestError("the request body is empty; expected a JSON object")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        strict = exc  # orjson also refuses what json accepts: lone surrogates, depth, infinity
    else:
        if too_deep_to_write(raw, value):  # read, but it could be neither sent nor stored
            raise BadRequestError(
                "unacceptable JSON in the request body: nesting depth past "
                f"{MAX_WRITTEN_DEPTH} levels", code="invalid_json")
        return value
    try:
        json.loads(raw)
    except UnicodeDecodeError:
        raise BadRequestError("the request body is not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:  # a syntax error, in the words clients know
        raise BadRequestError(
            f"malformed JSON in the request body: {exc.msg} (line {exc.lineno}, "
            f"column {exc.colno})", code="invalid_json") from None
    except RecursionError:
        pass
    raise BadRequestError(f"unacceptable JSON in the request body: {strict}",
                          code="invalid_json") from None


async def _body(request: web.Request, limit: int) -> bytes:
    """The request's body (decoded, if it was compressed), at most ``limit`` bytes.

    A small body has usually arrived whole before its handler runs: then one ``read_nowait``
    takes it, where ``request.read()`` awaits ``readany`` twice and copies through a
    bytearray. The limit is checked as ``request.read()`` checks it (``client_max_size``).
    """
    stream = request.content
    if not stream.is_eof():
        return await request.read()
    raw = stream.read_nowait()
    if len(raw) > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(raw))
    return raw
