"""Settings: one pydantic model, loaded from a YAML pool file, validated once, frozen.

Secrets are never written in the file: a value ``env:VAR`` is a reference resolved from the
environment when it is used (:class:`SecretRef`), and its value is never logged or dumped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from router.backends import params_model
from router.backends.base import BackendParams
from router.errors import ConfigError

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]*$"


class SecretRef:
    """A secret given literally or as ``env:VAR``; ``str()`` and ``repr()`` never show it."""

    __slots__ = ("_raw",)

    def __init__(self, raw: str) -> None:
        self._raw = raw

    @property
    def env_var(self) -> str | None:
        return self._raw[4:] if self._raw.startswith("env:") else None

    def value(self) -> str | None:
        """The secret, or ``None`` when its environment variable is unset or empty."""
        var = self.env_var
        if var is None:
            return self._raw
        return os.environ.get(var) or None

    def describe(self) -> str:
        var = self.env_var
        return f"env:{var}" if var else "<literal>"

    def __repr__(self) -> str:
        return f"SecretRef({self.describe()})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretRef) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)


def _to_secret(value: object) -> SecretRef:
    if isinstance(value, SecretRef):
        return value
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string (a literal or env:VAR)")
    if value.startswith("env:") and not value[4:]:
        raise ValueError("env: must name a variable, e.g. env:OPENAI_API_KEY")
    return SecretRef(value)


Secret = Annotated[
    SecretRef,
    PlainValidator(_to_secret),
    PlainSerializer(lambda s: s.describe(), return_type=str),
]


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


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    api_keys: tuple[Secret, ...] = ()
    admin_key: Secret | None = None
    max_body_bytes: int = Field(1_048_576, ge=1024)
    log_prompts: bool = False
    log_format: Literal["json", "console"] = "json"
    shutdown_timeout: float = Field(30.0, ge=0)


class EmbedderConfig(_Strict):
    """How responses and task texts are embedded (see ``profiles.embed``)."""

    kind: Literal["hash", "minilm", "openai"] = "hash"
    dim: int = Field(256, ge=8)
    base_url: str | None = None
    model: str | None = None
    api_key: Secret | None = None

    @model_validator(mode="after")
    def _openai_needs_url(self) -> EmbedderConfig:
        if self.kind == "openai" and not self.base_url:
            raise ValueError("embedder.kind 'openai' needs base_url")
        return self


def _default_data_dir() -> Path:
    env = os.environ.get("DIFFROUTE_DATA_DIR")
    if env:
        return Path(env)
    return Path.home() / ".local" / "share" / "diffroute"


class Settings(_Strict):
    """Everything diffroute is configured with."""

    models: tuple[ModelConfig, ...]
    data_dir: Path = Field(default_factory=_default_data_dir)
    server: ServerConfig = ServerConfig()
    embedder: EmbedderConfig = EmbedderConfig()
    extensions: dict[str, Any] = Field(default_factory=dict)
    """Free-form settings for later subsystems (policy, live diffs) until they get a model."""
    _source_dir: Path | None = PrivateAttr(None)

    @property
    def source_dir(self) -> Path | None:
        """Directory of the pool file these settings came from (relative paths resolve there)."""
        return self._source_dir

    @field_validator("models")
    @classmethod
    def _not_empty(cls, models: tuple[ModelConfig, ...]) -> tuple[ModelConfig, ...]:
        # a field validator, not min_length: it stays silent when an item already failed
        if not models:
            raise ValueError("the pool needs at least one model")
        return models

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        seen: set[str] = set()
        for model in self.models:
            if model.name in seen:
                raise ValueError(f"duplicate model name '{model.name}'")
            seen.add(model.name)
        return self

    def model(self, name: str) -> ModelConfig:
        for model in self.models:
            if model.name == name:
                return model
        from router.errors import UnknownModelError

        raise UnknownModelError(name, [m.name for m in self.models])


def yaml_path(loc: tuple[int | str, ...]) -> str:
    """``('models', 2, 'backend', 'base_url')`` → ``models[2].backend.base_url``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _problems(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{yaml_path(loc)}: {msg}")
    return lines


def settings_from_mapping(data: object, source: str | None = None) -> Settings:
    """Validate an already-parsed mapping; raises :class:`ConfigError` listing every problem."""
    if not isinstance(data, Mapping):
        raise ConfigError(["(top level): must be a mapping with a 'models' list"], source)
    try:
        return Settings.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(_problems(exc), source) from None


def load_settings(path: str | Path) -> Settings:
    """Read and validate a YAML pool file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read config: {exc.strerror or exc}"], str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}invalid YAML: {problem}"], str(path)) from None
    settings = settings_from_mapping(data, str(path))
    if "data_dir" in data and not settings.data_dir.is_absolute():
        # a relative data dir is relative to the config file, not to the working directory
        settings = settings.model_copy(update={"data_dir": path.parent / settings.data_dir})
    settings._source_dir = path.parent.resolve()
    return settings
