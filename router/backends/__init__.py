"""Backends and their registry.

Built-in backends register through :func:`register_backend`, exactly as a third-party package
would (from its own import, or from an entry point in the ``diffroute.backends`` group whose
object is a zero-argument function that calls :func:`register_backend`). Parameter models live
in :mod:`router.backends.params`, which the settings read without importing any backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.backends.base import (
    Backend,
    BackendContext,
    BackendFactory,
    BackendStatus,
    ForwardingBackend,
    StreamDelta,
)
from router.backends.params import (
    BackendParams,
    LlamaCppParams,
    OpenAIParams,
    ScriptedParams,
    known_kinds,
    load_plugins,
    params_model,
    register_params,
)

if TYPE_CHECKING:
    from router.backends.model_config import ModelConfig

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

_FACTORIES: dict[str, BackendFactory] = {}


def register_backend(kind: str, params: type[BackendParams], factory: BackendFactory) -> None:
    """Make ``kind`` usable in a pool file's ``backend.kind``."""
    register_params(kind, params)
    _FACTORIES[kind] = factory


def _register_builtin() -> None:
    """The built-in backends, registered through the same function a plugin calls."""
    from router.backends import llamacpp, openai_http, scripted

    register_backend("scripted", ScriptedParams, scripted.create)
    register_backend("openai", OpenAIParams, openai_http.create)
    register_backend("llamacpp", LlamaCppParams, llamacpp.create)


def _factory(kind: str) -> BackendFactory:
    if not _FACTORIES:
        _register_builtin()
    load_plugins()
    return _FACTORIES[kind]


def create_backend(model: ModelConfig, context: BackendContext) -> Backend:
    """Build the backend of one pool model."""
    return _factory(model.backend.kind)(model, context)
