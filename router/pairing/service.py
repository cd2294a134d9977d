"""The pairing side of the running service: the current decider and how it is asked.

:class:`PairingService` owns the decider built from the pinned pairings, rebuilds it when they
change (``PUT /v1/pairings`` here, or on another instance sharing the store) or profiles are
rebuilt into a shared store (``diffroute profile build``: :meth:`follow`), and is the one way
the service asks for a decision — the chat path and ``POST /v1/route`` alike. A decision that
needs a model embedder on a task not seen before runs in a worker thread, so no embedder ever
blocks the event loop; a cached task or the hash embedder is answered inline, cheaper than a
thread hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog

from router.errors import ConfigError, DiffrouteError, StartupError, StorageError
from router.logging import FailureRun
from router.pairing.decision import Decider, Decision, RouteRequest
from router.pairing.pinned import Pairings, PairingsStorage, pairings_document, read_pairings

DeciderBuilder = Callable[[Pairings], Decider]
"""Builds the policy over given pairings (blocking: it reads profiles and indexes a suite)."""
POLL_S = 1.0
"""Stored pairings are read at least this often, change notification or not."""
REBUILD_RETRY_S = 10.0
"""A rebuild that failed unexpectedly (the profiles could not be read: an embedder or the
observation store away) is tried again this long after, not at every poll."""
_log = structlog.get_logger("diffroute.pairing")


class PairingService:
    """The current decider, its pinned pairings, and decisions off the event loop."""

    def __init__(self, build: DeciderBuilder, pairings: Pairings, decider: Decider,
                 store: PairingsStorage | None = None) -> None:
        self._build = build
        self._store = store
        self._pairings = pairings
        self._decider = decider
        self._document = pairings_document(pairings)
        """The stored document the current decider was built from."""
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._profiles_changed = False
        self._retry_at = 0.0
        """When a failed rebuild may be tried again (``time.monotonic()``)."""

    @classmethod
    async def open(cls, build: DeciderBuilder, store: PairingsStorage) -> PairingService:
        """Load the persisted pairings and build the first decider in a worker thread."""
        try:
            pairings = read_pairings(await store.load_pairings())
        except StorageError as exc:  # a directory, unreadable, not UTF-8
            raise StartupError(str(exc)) from None
        except ValueError as exc:  # pydantic's ValidationError and JSON errors: one line
            raise ConfigError([f"invalid pairings document: {' '.join(str(exc).split())}"],
                              store.pairings_source()) from None
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
        """The policy over new pairings (:meth:`Decider.with_pairings`: nothing rebuilt), once
        they are persisted; the old stays if they cannot be."""
        async with self._lock:
            decider = self._decider.with_pairings(pairings)
            document = pairings_document(pairings)
            if self._store is not None:
                await self._store.save_pairings(document)
            self._pairings, self._decider, self._document = pairings, decider, document

    async def refresh(self) -> bool:
        """Rebuild the policy if the stored pairings changed (another instance saved them) or
        profiles were rebuilt (:meth:`changed`); whether it did. A stored document that does
        not validate is logged and ignored."""
        if self._store is None:
            return False
        async with self._lock:
            document = await self._store.load_pairings()  # (a failure keeps the flag)
            profiles = self._profiles_changed and time.monotonic() >= self._retry_at
            self._profiles_changed = self._profiles_changed and not profiles
            if (document is None or document == self._document) and not profiles:
                return False
            try:
                pairings = self._pairings if document is None else read_pairings(document)
                # new pairings alone re-pin the policy; rebuilt profiles rebuild it
                decider = await asyncio.to_thread(self._build, pairings) if profiles \
                    else self._decider.with_pairings(pairings)
            except (ValueError, DiffrouteError) as exc:  # broken, or pins it cannot honour
                _log.error("pairing.stored_pairings_refused", error=str(exc))
                self._document = document or self._document
                return False
            except Exception:
                # the profiles could not be read now (an embedder or the observation store
                # away): the old policy stays, and the rebuild is tried again later
                if profiles:
                    self._profiles_changed = True
                    self._retry_at = time.monotonic() + REBUILD_RETRY_S
                raise
            self._pairings, self._decider = pairings, decider
            self._document = document or self._document
        _log.info("pairing.policy_reloaded", version=decider.version,
                  profiles_rebuilt=profiles)
        return True

    def changed(self, channel: str) -> None:
        """The store's change callback: wake :meth:`follow` when pairings were saved or
        profiles rebuilt (then the policy is rebuilt from them even if pairings are the same)."""
        if channel == "profiles":
            self._profiles_changed = True
        if channel in ("pairings", "profiles"):
            self._wake.set()

    async def follow(self, poll_s: float = POLL_S) -> None:
        """Refresh whenever the store says pairings changed, and every ``poll_s``."""
        run = FailureRun("pairing.refresh_failed", logger="diffroute.pairing")
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), poll_s)
            self._wake.clear()
            try:
                await self.refresh()
            except Exception as exc:  # a follower that dies follows nothing
                run.failed(exc)
            else:
                if not self._profiles_changed:  # (a failed rebuild still waiting: not yet)
                    run.succeeded()
