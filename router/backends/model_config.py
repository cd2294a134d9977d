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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(_Strict):
    """Seconds; ``total`` bounds a whole call including retries of the body read."""

    connect: float = Field(5.0, gt=0)
    read: float = Field(60.0, gt=0)
    total: float = Field(120.0, gt=0)


class Decoding(_Strict):
    """Per-model decoding overrides; ``None`` keeps the request's value."""

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    seed: int | None = None


class ModelConfig(_Strict):
    """One pool member."""

    name: str = Field(pattern=MODEL_NAME_PATTERN, max_length=128)
    backend: SerializeAsAny[BackendParams]
    family: str | None = None
    cost_per_1k_tokens: float = Field(0.0, ge=0)
    max_concurrency: int = Field(4, ge=1, le=1024)
    timeouts: Timeouts = Timeouts()
    decoding: Decoding = Decoding()
    tags: tuple[str, ...] = ()

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
