"""The durable :class:`~router.paired.record.LiveDiffSink`: count, store, follow, broadcast.

``record`` counts every comparison (a comparison row, fire and forget, plus metrics) and, for
a flagged one, waits until its live diff is committed before returning its id — so an id a
client sees is durable. Agreements return ``None`` at once: nothing is acknowledged for them,
so they never wait for the disk.

The drift monitor and the live-diff stream are fed from the *store*, not from ``record``:
:meth:`DurableLiveDiffSink.follow` reads what was committed since it last looked — woken by the
store's change notifications, and every :data:`POLL_S` in any case — so with several instances
on one database each one's monitor sees every instance's comparisons, in one order, and each
one's stream every instance's live diffs. A drift alarm is stored once for all instances
(:meth:`~router.store.Store.add_drift_event` refuses a twin within :data:`ALARM_TWIN_S`), and
only the instance whose alarm was stored logs it, counts it and asks for a re-profile.

:func:`open_live_sink` opens it for the service over the store it is given, with the profile
baseline (noise floors, predicted rates), recent comparisons replayed into the drift monitor,
retention enforced at start and every ``live.retention_interval_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import structlog

from router.config import LiveSettings, Settings
from router.errors import ConfigError, StorageError
from router.live.baseline import ProfileBaseline, build_baseline
from router.live.broadcast import Broadcaster
from router.live.drift import DriftEvent, DriftMonitor
from router.live.metrics import LiveMetrics
from router.logging import FailureRun
from router.paired.compare import domain_types
from router.paired.record import LiveDiffRecord
from router.profiling.sources import ProfileQuery, embedder_for, find_profiles, open_suite
from router.store import ComparisonRow, DiffQuery, DriftRow, Retention, Store
from router.store.base import Channel

NO_DOMAIN = "general"
"""The domain a comparison counts under when the policy gave none."""
REPLAY_S = 86_400.0
"""Comparisons of the last day are replayed into the drift monitor at startup…"""
REPLAY_ROWS = 50_000
"""… the newest of them at most (a CUSUM needs the recent past, not all of it)."""
PROBLEM_WINDOW_S = 300.0
"""A failed store write keeps ``/healthz`` degraded this long."""
POLL_S = 1.0
"""The follower reads the store at least this often, notified or not."""
PAGE = 1000
"""Rows the follower reads at once."""
RELOAD_RETRY_S = 10.0
"""A baseline reload that failed (the profiles could not be read: an embedder away) is tried
again this long after; the baseline in use stays meanwhile."""
ALARM_TWIN_S = 600.0
"""An alarm for the same pair, domain and direction within this long is the same alarm
(raised by another instance, or by this one before a restart)."""

DriftCallback = Callable[[DriftEvent], None]
BaselineLoader = Callable[[], ProfileBaseline]
"""Reads the profiles' predictions again (blocking: run in a worker thread)."""
_log = structlog.get_logger("diffroute.live")


class DurableLiveDiffSink:
    """Counts, tests and stores live comparisons (see the module docstring)."""

    def __init__(self, store: Store, config: LiveSettings | None = None,
                 baseline: ProfileBaseline | None = None,
                 metrics: LiveMetrics | None = None,
                 reload: BaselineLoader | None = None) -> None:
        """``reload``: how to read the baseline again when profiles are rebuilt into the
        store (``None``: the baseline stays as given)."""
        self.store = store
        self.config = config or LiveSettings()
        self.baseline = baseline or ProfileBaseline()
        self.metrics = metrics or LiveMetrics()
        self.monitor = DriftMonitor(self.config.prior_weight, self.config.burn_in,
                                    self.config.cusum_h)
        self.broadcaster = Broadcaster()
        self.on_drift: list[DriftCallback] = []
        self._record_timer = self.metrics.overhead_seconds.labels("record")
        self._last_comparison = 0
        """The id of the last comparison the monitor has seen."""
        self._last_diff = 0
        """The ``seq`` of the last live diff the stream has been given (or skipped)."""
        self._wake = asyncio.Event()
        self._reload = reload
        self._profiles_changed = False
        self._reload_at = 0.0
        """When a failed reload may be tried again (``time.monotonic()``)."""
        self._rebase_pending = False
        """A new baseline was adopted and the pairs are still judged against the old one."""
        self._reload_failures = FailureRun("live.baseline_reload_failed",
                                           logger="diffroute.live")

    # -- the LiveDiffSink protocol ----------------------------------------------------------

    async def record(self, record: LiveDiffRecord) -> str | None:
        """Count the comparison; store a flagged one and return its id once committed."""
        domain = record.domains[0] if record.domains else NO_DOMAIN
        self.store.add_comparison(ComparisonRow(record.created_at, record.primary,
                                                record.partner, record.role, domain,
                                                record.flagged))
        self.metrics.comparison(record.primary, record.partner, record.role, record.flagged)
        if not record.flagged:
            return None
        started = time.perf_counter()
        values = self.diff_values(record)
        try:
            values["seq"] = await self.store.add_diff(values)
        except StorageError:  # never silent: the caller says so in its response
            self.metrics.record_errors.inc()
            raise
        self._record_timer.observe(time.perf_counter() - started)
        return record.id

    def diff_values(self, record: LiveDiffRecord) -> dict[str, Any]:
        """The stored columns of a live diff; prompt, answers and diff are kept unless redacted."""
        c, redact = record.comparison, self.config.redact
        return {
            "id": record.id, "created_at": record.created_at, "request_id": record.request_id,
            "primary_model": record.primary, "partner": record.partner, "role": record.role,
            "answered_by": record.answered_by, "mode": record.mode,
            "domains": orjson.dumps(list(record.domains)).decode(),
            "prompt_digest": record.prompt_digest,
            "prompt": None if redact else orjson.dumps([dict(m) for m in record.messages])
            .decode(),
            "primary_text": None if redact else record.primary_text,
            "partner_text": None if redact else record.partner_text,
            "agreement": c.agreement, "divergence": c.divergence, "threshold": c.threshold,
            "method": c.method, "unified_diff": None if redact else c.unified_diff,
            "reason": record.reason, "redacted": int(redact),
        }

    # -- rates and drift --------------------------------------------------------------------

    def observe(self, primary: str, partner: str, domain: str, flagged: bool,
                at: float | None = None, monitor: DriftMonitor | None = None
                ) -> DriftEvent | None:
        """Feed the drift monitor (and its gauges); the alarm it raised, if any."""
        monitor = self.monitor if monitor is None else monitor
        key = (primary, partner, domain)
        event = monitor.observe(key, flagged, self.baseline.predicted_disagreement(*key), at)
        pair = monitor.pairs[key]
        self.metrics.drift(key, pair.state, 0.0 if pair.cusum is None else
                           pair.cusum.statistic)
        return event

    async def _drift(self, event: DriftEvent) -> None:
        """Store an alarm; if it is new (no instance stored it yet): log, count, call back."""
        stored = await self.store.add_drift_event(
            DriftRow(event.at, event.primary, event.partner, event.domain, event.direction,
                     event.expected, event.observed, event.comparisons, event.statistic),
            ALARM_TWIN_S)
        if not stored:
            _log.info("live.drift_already_raised", primary=event.primary,
                      partner=event.partner, domain=event.domain, direction=event.direction)
            return
        _log.warning("live.drift", primary=event.primary, partner=event.partner,
                     domain=event.domain, direction=event.direction,
                     expected=round(event.expected, 4), observed=round(event.observed, 4),
                     comparisons=event.comparisons)
        self.metrics.drift_event(event)
        if self.config.reprofile_on_drift:
            self.store.request_reprofile(
                event.at, event.partner,
                f"drift {event.direction} with {event.primary} in {event.domain}")
        for callback in self.on_drift:
            callback(event)

    def blended_agreement(self, pair: tuple[str, str], domain: str) -> float | None:
        """Live agreement blended with the profile prior (``GET /v1/stats/disagreements``);
        the profile's own prediction until the pair has been compared in ``domain``."""
        found = self.monitor.blended_agreement(pair, domain)
        if found is not None:
            return found
        predicted = self.baseline.predicted_disagreement(pair[0], pair[1], domain)
        return None if predicted is None else 1.0 - predicted

    def problem(self, within_s: float = PROBLEM_WINDOW_S) -> str | None:
        """Why the store is not healthy (a write failed in the last ``within_s``, and none
        has committed since), or None."""
        failure, written = self.store.failure, self.store.written_at
        if failure is None or time.time() - failure[0] > within_s or (
                written is not None and written > failure[0]):
            return None
        return f"a live-diff store write failed {time.time() - failure[0]:.0f} s ago: " \
               f"{failure[1]}"

    async def replay(self, since_s: float = REPLAY_S, limit: int = REPLAY_ROWS) -> int:
        """Rebuild the drift monitor from the newest stored comparisons (no alarm is raised);
        at most ``limit`` rows, so a restart does not grow with history. The follower goes
        on from there."""
        last_comparison, self._last_diff = await self.store.last_ids()
        replayed = await self._replay_into(self.monitor, last_comparison, since_s, limit)
        self._last_comparison = last_comparison
        return replayed

    async def _replay_into(self, monitor: DriftMonitor, last_comparison: int,
                           since_s: float = REPLAY_S, limit: int = REPLAY_ROWS) -> int:
        after, since, replayed = max(0, last_comparison - limit), time.time() - since_s, 0
        while after < last_comparison:
            rows = await self.store.comparisons_after(after, since, min(PAGE, limit))
            for rowid, row in rows:
                if rowid <= last_comparison:
                    self.observe(row.primary, row.partner, row.domain, row.flagged, row.at,
                                 monitor)
                    replayed += 1
            if len(rows) < min(PAGE, limit):
                break
            after = rows[-1][0]
        return replayed

    async def _rebase(self) -> None:
        """After new profiles: judge the pairs against the new predictions, as a restart
        would — the comparisons seen so far replayed into a fresh monitor (no alarm is
        raised), whose pairs replace the monitor's in place (the policy holds it)."""
        fresh = DriftMonitor(self.config.prior_weight, self.config.burn_in,
                             self.config.cusum_h)
        await self._replay_into(fresh, self._last_comparison)
        self.monitor.pairs = fresh.pairs

    def changed(self, channel: Channel) -> None:
        """The store's change callback: wake the follower (new comparisons or live diffs, or
        rebuilt profiles to read the baseline from)."""
        if channel == "profiles":
            self._profiles_changed = self._reload is not None
        if channel in ("live", "profiles"):
            self._wake.set()

    async def reload_baseline(self) -> None:
        """Read the profiles' predictions again, if they were rebuilt since the last time,
        and judge the pairs against them (:meth:`_rebase`)."""
        if self._profiles_changed and self._reload is not None and \
                time.monotonic() >= self._reload_at:
            self._profiles_changed = False
            try:
                baseline = await asyncio.to_thread(self._reload)
            except Exception as exc:  # an embedder away: keep the one in use
                self._profiles_changed = True  # and read the profiles again a while later
                self._reload_at = time.monotonic() + RELOAD_RETRY_S
                self._reload_failures.failed(exc)
                return
            self._reload_failures.succeeded()
            self.baseline.adopt(baseline)
            self._rebase_pending = True
            _log.info("live.baseline_reloaded", profiled_pairs=len(self.baseline.agreement))
        if self._rebase_pending:
            await self._rebase()  # (a store that fails: tried again at the next round)
            self._rebase_pending = False

    async def catch_up(self) -> None:
        """Feed the monitor every comparison committed since the last call and the stream
        every live diff, in commit order (any instance's, on a shared store)."""
        while True:
            rows = await self.store.comparisons_after(self._last_comparison, 0.0, PAGE)
            for rowid, row in rows:
                self._last_comparison = rowid
                event = self.observe(row.primary, row.partner, row.domain, row.flagged, row.at)
                if event is not None:
                    await self._drift(event)
            if not rows and await self._ids_went_back():
                continue
            if len(rows) < PAGE:
                break
        await self._publish_diffs()

    async def _ids_went_back(self) -> bool:
        """Whether the newest comparison id fell below the last one seen (retention emptied
        the table and SQLite reused the ids): then start again from the first."""
        newest = (await self.store.last_ids())[0]
        if newest >= self._last_comparison:
            return False
        self._last_comparison = 0
        return True

    async def _publish_diffs(self) -> None:
        if not self.broadcaster.listening:  # nobody streams: skip to the end, read nothing
            self._last_diff = (await self.store.last_ids())[1]
            return
        while True:
            page = await self.store.diffs(DiffQuery(after=self._last_diff, limit=PAGE))
            for diff in page:
                self.broadcaster.publish(diff)
                self._last_diff = int(diff["seq"])
            if len(page) < PAGE:
                return

    async def follow(self, poll_s: float = POLL_S) -> None:
        """Catch up whenever the store says something changed, and every ``poll_s``; a
        store that fails is logged and tried again (the service goes on)."""
        run = FailureRun("live.follow_failed", logger="diffroute.live")
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), poll_s)
            self._wake.clear()
            try:
                await self.reload_baseline()
                await self.catch_up()
            except StorageError as exc:
                run.failed(exc)
            else:
                run.succeeded()


def load_baseline(settings: Settings, strict: bool = False, soft: bool = True
                  ) -> ProfileBaseline:
    """The pool's profile baseline, or an empty one (logged) when none can be read; ``strict``
    (at start): a ``live.suite`` that is not there is a configuration error, as
    ``policy.suite``'s is, not a service that runs without noise floors. Not ``soft`` (a
    reload while serving): any failure is raised, so the baseline in use is kept."""
    config = settings.live
    try:
        suite = open_suite(config.suite)
    except ConfigError as exc:
        if not soft:
            raise
        if strict:
            raise ConfigError([f"live.suite: {p}" for p in exc.problems], exc.source) from None
        _log.warning("live.no_baseline", error=repr(exc))
        return ProfileBaseline()
    try:
        types = domain_types(suite.probes)
        if not config.profiles:
            return ProfileBaseline(types=types)
        query = ProfileQuery(config.suite, config.profile_samples, config.profile_temperature)
        found = find_profiles(settings, [m.name for m in settings.models], suite, query)
        profiles = [f.profile for f in found.values() if f is not None]
        return build_baseline(profiles, suite, embedder_for(settings.embedder), types)
    except Exception as exc:  # no baseline is a degraded mode, not a failed start
        if not soft:
            raise
        _log.warning("live.no_baseline", error=repr(exc))
        return ProfileBaseline()


@asynccontextmanager
async def open_live_sink(settings: Settings, store: Store, baseline: ProfileBaseline,
                         metrics: LiveMetrics) -> AsyncIterator[DurableLiveDiffSink]:
    """The service's durable sink over ``store``, with its retention loop (see the module
    docstring); the store stays open (its owner closes it)."""
    config = settings.live
    retention: asyncio.Task[None] | None = None
    try:
        sink = DurableLiveDiffSink(store, config, baseline, metrics,
                                   reload=lambda: load_baseline(settings, soft=False))
        store.watch(sink.changed)
        # retention and the drift replay run beside the service: start-up does not wait
        # for them, however much history is stored
        retention = asyncio.create_task(_maintain(sink, config))
        yield sink
    finally:
        if retention is not None:
            retention.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retention


async def _maintain(sink: DurableLiveDiffSink, config: LiveSettings) -> None:
    """Replay recent comparisons into the drift monitor and follow the store from there;
    enforce retention now and every ``live.retention_interval_s``."""
    while True:
        try:
            replayed = await sink.replay()
            break
        except StorageError as exc:  # the database is not there yet: the service goes on
            _log.warning("live.replay_failed", error=str(exc))
            await asyncio.sleep(POLL_S)
    follower = asyncio.create_task(sink.follow())
    try:
        await _retain(sink, config, replayed)
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower


async def _retain(sink: DurableLiveDiffSink, config: LiveSettings, replayed: int) -> None:
    while True:
        try:
            deleted = await sink.store.enforce(Retention.of(config), time.time)
        except StorageError as exc:
            _log.warning("live.retention_failed", error=str(exc))  # tried again next round
        else:
            _log.info("live.retention", store=sink.store.describe(), deleted=deleted,
                      replayed=replayed, profiled_pairs=len(sink.baseline.agreement))
        replayed = 0
        await asyncio.sleep(config.retention_interval_s)
