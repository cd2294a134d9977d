"""The HTTP service: OpenAI-compatible paired completions and the routing API.

Public names: :func:`create_app` (the app factory), :func:`run_server`, and the app keys under
which route modules find the shared state (:data:`STATE`, :data:`SETTINGS`).
"""

from router.service.app import create_app, run_server
from router.service.state import (
    SETTINGS,
    STATE,
    DeciderFactory,
    DiffProvider,
    RouteModule,
    ServiceState,
    SinkFactory,
)

__all__ = [
    "SETTINGS",
    "STATE",
    "DeciderFactory",
    "DiffProvider",
    "RouteModule",
    "ServiceState",
    "SinkFactory",
    "create_app",
    "run_server",
]
