"""A pool member's configuration: its name, backend parameters (by kind), limits, decoding.

Part of the settings (``models[]`` of a pool file, re-exported by :mod:`router.config`), kept
beside the backends that are built from it so that the settings depend on the backends'
parameter models and never the other way round.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, field_validator

from router.backends.params import BackendParams, params_model
from router.errors import ConfigError

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]*$"
RESERVED_NAME = "auto"
"""``audit:auto``/``assist:auto`` (``router.service.model_names.AUTO``): a pool model of that
name could never be paired by name."""


class _Strict(BaseModel):
    # `.inf`/`.nan` are YAML floats: refused, they would reach JSON answers as `Infinity`
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Timeouts(_Strict):
    """Seconds. ``total`` bounds a whole call through the pool: the wait for a slot, every
    attempt and the backoff between them (and a stream's body)."""

    connect: float = Field(5.0, gt=0)
    read: float = Field(60.0, gt=0)
    total: float = Field(120.0, gt=0)


class Decoding(_Strict):
    """Per-model decoding overrides; ``None`` keeps the request's value."""

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    seed: int | None = None


class Circuit(_Strict):
    """The model's circuit breaker: after ``failures`` failed calls in a row, all within
    ``window_s``, calls fail fast for ``open_s``; then one probe call is let through
    (half-open) and its outcome closes or reopens the circuit."""

    failures: int = Field(5, ge=1, le=10_000)
    window_s: float = Field(60.0, gt=0)
    open_s: float = Field(30.0, gt=0)


class ModelConfig(_Strict):
    """One pool member."""

    name: str = Field(pattern=MODEL_NAME_PATTERN, max_length=128)
    backend: SerializeAsAny[BackendParams]
    family: str | None = None
    cost_per_1k_tokens: float = Field(0.0, ge=0)
    max_concurrency: int = Field(4, ge=1, le=1024)
    max_queue: int = Field(256, ge=0, le=1_000_000)
    """Calls that may wait for a slot; more are shed at once (429, ``Retry-After``)."""
    circuit: Circuit | None = Circuit()
    """``null`` turns the breaker off."""
    fallbacks: tuple[str, ...] = ()
    """Pool models that answer a plain call this model failed, in order (not followed
    transitively: a fallback's own fallbacks are not tried)."""
    timeouts: Timeouts = Timeouts()
    decoding: Decoding = Decoding()
    tags: tuple[str, ...] = ()

    @field_validator("name")
    @classmethod
    def _name_is_no_path(cls, value: str) -> str:
        # names become file names (`profile build --export`): `org/model` is fine, `a/../b` not
        if any(part in ("", ".", "..") for part in value.split("/")):
            raise ValueError("a model name's '/'-separated parts may not be empty, '.' or '..'")
        if value == RESERVED_NAME:
            raise ValueError(f"'{RESERVED_NAME}' is reserved: audit:{RESERVED_NAME} and "
                             f"assist:{RESERVED_NAME} let the policy pick the primary")
        return value

    @field_validator("backend", mode="before")
    @classmethod
    def _backend_by_kind(cls, value: object) -> object:
        if isinstance(value, BackendParams):
            return value
        if not isinstance(value, Mapping):
            raise ValueError("must be a mapping with a 'kind'")
        kind = value.get("kind")
        if not isinstance(kind, str):
            raise ValueError("needs 'kind' (a backend name, e.g. openai, llamacpp, scripted)")
        try:
            model = params_model(kind)
        except ConfigError as exc:
            raise ValueError(exc.problems[0]) from None
        return model.model_validate(dict(value))

    @property
    def family_name(self) -> str:
        return self.family or self.name
