"""The pairing side of the running service: the current decider and how it is asked.

:class:`PairingService` owns the decider built from the pinned pairings, rebuilds it when they
change (``PUT /v1/pairings``) and is the one way the service asks for a decision — the chat
path and ``POST /v1/route`` alike. A decision that needs a model embedder on a task not seen
before runs in a worker thread, so no embedder ever blocks the event loop; a cached task or
the hash embedder is answered inline, cheaper than a thread hop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from router.errors import ConfigError
from router.pairing.decision import Decider, Decision, RouteRequest
from router.pairing.pinned import Pairings, PairingsStorage, pairings_document, read_pairings

DeciderBuilder = Callable[[Pairings], Decider]
"""Builds the policy over given pairings (blocking: it reads profiles and indexes a suite)."""


class PairingService:
    """The current decider, its pinned pairings, and decisions off the event loop."""

    def __init__(self, build: DeciderBuilder, pairings: Pairings, decider: Decider,
                 store: PairingsStorage | None = None) -> None:
        self._build = build
        self._store = store
        self._pairings = pairings
        self._decider = decider

    @classmethod
    async def open(cls, build: DeciderBuilder, store: PairingsStorage) -> PairingService:
        """Load the persisted pairings and build the first decider in a worker thread."""
        try:
            pairings = read_pairings(await store.load_pairings())
        except ValueError as exc:  # pydantic's ValidationError and JSON errors
            raise ConfigError([f"invalid pairings file: {exc}"], store.describe()) from None
        decider = await asyncio.to_thread(build, pairings)
        return cls(build, pairings, decider, store)

    @property
    def pairings(self) -> Pairings:
        return self._pairings

    @property
    def decider(self) -> Decider:
        return self._decider

    @property
    def version(self) -> str:
        return self._decider.version

    @property
    def domains(self) -> frozenset[str]:
        return self._decider.domains

    async def decide(self, request: RouteRequest) -> Decision:
        """The decision for ``request`` (raises ``NoPairError`` when no partner qualifies)."""
        decider = self._decider
        if decider.blocking(request):
            return await asyncio.to_thread(decider.decide, request)
        return decider.decide(request)

    async def replace(self, pairings: Pairings) -> None:
        """Rebuild the policy over new pairings, then persist them; the old stays on error."""
        decider = await asyncio.to_thread(self._build, pairings)
        if self._store is not None:
            await self._store.save_pairings(pairings_document(pairings))
        self._pairings, self._decider = pairings, decider
