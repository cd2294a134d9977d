"""Backends and their registry.

Built-in backends register through :func:`register_backend`, exactly as a third-party package
would (from its own import, or from an entry point in the ``diffroute.backends`` group whose
object is a zero-argument function that calls :func:`register_backend`).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from router.backends.base import (
    Backend,
    BackendContext,
    BackendFactory,
    BackendParams,
    BackendStatus,
    ForwardingBackend,
    StreamDelta,
)
from router.errors import ConfigError

if TYPE_CHECKING:
    from router.config import ModelConfig

__all__ = [
    "Backend",
    "BackendContext",
    "BackendFactory",
    "BackendParams",
    "BackendStatus",
    "ForwardingBackend",
    "StreamDelta",
    "create_backend",
    "known_kinds",
    "params_model",
    "register_backend",
]


@dataclass(frozen=True, slots=True)
class _Registration:
    params: type[BackendParams]
    factory: BackendFactory


_REGISTRY: dict[str, _Registration] = {}
_loaded = False


def register_backend(kind: str, params: type[BackendParams], factory: BackendFactory) -> None:
    """Make ``kind`` usable in a pool file's ``backend.kind``."""
    _REGISTRY[kind] = _Registration(params, factory)


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    from router.backends import _builtin

    _builtin.register()
    for ep in entry_points(group="diffroute.backends"):
        ep.load()()
    _loaded = True


def known_kinds() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)


def params_model(kind: str) -> type[BackendParams]:
    """The parameter model of a backend kind; raises ``ConfigError`` for unknown kinds."""
    _ensure_loaded()
    try:
        return _REGISTRY[kind].params
    except KeyError:
        raise ConfigError(
            [f"unknown backend kind '{kind}' (known: {', '.join(sorted(_REGISTRY))})"]
        ) from None


def create_backend(model: ModelConfig, context: BackendContext) -> Backend:
    """Build the backend of one pool model."""
    _ensure_loaded()
    return _REGISTRY[model.backend.kind].factory(model, context)
