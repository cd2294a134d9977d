"""Profile building for the CLI and the service: pool + suite + store → profiles.

The statistics live in ``profiles``; this module only wires the pool to them and draws the
progress bar.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from profiles.collect import CollectReport, Decoding, collect, merge_reports, plan
from profiles.profile import Profile, from_store
from profiles.protocol import ModelClient
from profiles.store import Observations, observation_key
from profiles.suite import Suite
from router.config import Settings
from router.errors import StartupError
from router.pool import Pool
from router.profiling.sources import open_suite
from router.store import open_observations


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description:<16}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8} samples/s"),
        TextColumn("[red]{task.fields[failed]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )


BUILD_LOCK = "profile-build.lock"
"""In the data dir: held (``flock``) by the profile build that collects into it."""


@contextmanager
def one_build(settings: Settings) -> Iterator[None]:
    """One profile build at a time per data dir (SQLite store): two at once each collected
    everything — the data stayed whole (the later write of a probe replaces the earlier) but
    every request was paid twice, without a word. The second is refused, naming the first's
    process; the lock goes with the process, however it ends."""
    if settings.store.kind != "sqlite":
        yield
        return
    data_dir = settings.data_dir
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(data_dir / BUILD_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StartupError(f"cannot lock {data_dir / BUILD_LOCK}: {exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise StartupError(f"another profile build is collecting into {data_dir} "
                               f"(process {holder}): wait for it to end (a re-run then "
                               "collects only what is still missing)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


GIVE_UP_AFTER = 8
"""A model whose last 8 probes all failed (after their retries) is not asked for the rest:
its upstream is down, and each further probe would only cost its retries and backoff."""


def without_breakers(settings: Settings) -> Settings:
    """``settings`` with every model's circuit breaker off, for a profile build.

    The breaker is for serving (fail fast while a model keeps failing); a build retries each
    request itself, honouring ``Retry-After``, and gives a model up after
    :data:`GIVE_UP_AFTER` failed probes in a row. With the breaker, five 429s or 503s in a row
    (a rate limit, a blip) failed every remaining probe at once, the confirm round's too.
    """
    models = tuple(m.model_copy(update={"circuit": None}) for m in settings.models)
    return settings.model_copy(update={"models": models})


async def collect_with_progress(pool: Pool, names: Sequence[str], suite: Suite,
                                store: Observations, decoding: Decoding,
                                concurrency: int) -> CollectReport:
    """Collect what is missing for ``names``, with one progress bar per model."""
    models = [pool.get(n) for n in names]
    jobs, _ = plan(models, suite.probes, store, decoding)
    todo: dict[str, int] = {}
    for job in jobs:
        todo[job.model.name] = todo.get(job.model.name, 0) + len(job.indices)
    with _progress() as bar:
        tasks: dict[str, TaskID] = {
            n: bar.add_task(n, total=todo.get(n, 0) or 1, completed=0 if todo.get(n) else 1,
                            rate="-", failed="")
            for n in names
        }
        stored = dict.fromkeys(names, 0)
        failed = dict.fromkeys(names, 0)

        def advance(model: str, done: int, failure: bool) -> None:
            # the bar is the work done; the rate counts stored samples only, failures apart
            (failed if failure else stored)[model] += done
            bar.advance(tasks[model], done)
            elapsed = bar.tasks[tasks[model]].elapsed
            rate = stored[model] / elapsed if elapsed else 0.0
            bar.update(tasks[model], rate=f"{rate:.1f}" if stored[model] else "-",
                       failed=f"{failed[model]} failed" if failed[model] else "")

        limits = {n: pool.get(n).config.max_concurrency for n in names}
        return await collect(models, suite.probes, store, decoding, concurrency=concurrency,
                             on_progress=advance, limits=limits, give_up_after=GIVE_UP_AFTER)


async def build_profiles(settings: Settings, suite_name: str, names: Sequence[str], samples: int,
                         temperature: float, concurrency: int,
                         export_dir: Path | None = None,
                         ) -> tuple[list[dict[str, Any]], CollectReport]:
    """Collect, then summarise each model's profile (and export it if asked)."""
    suite = open_suite(suite_name)
    decoding = Decoding(samples=samples, temperature=temperature)
    with one_build(settings), open_observations(settings) as store:
        async with Pool.open(without_breakers(settings)) as pool:
            report = await collect_with_progress(pool, names, suite, store, decoding, concurrency)
            # the confirm collection: other seeds, later requests (what a diff confirms on);
            # not of a model given up on (its upstream is down: a re-run collects both)
            confirm = await collect_with_progress(
                pool, [n for n in names if n not in report.given_up], suite, store,
                decoding.confirm(), concurrency)
            report = merge_reports(report, confirm)
            summaries = []
            for name in names:
                prof = from_store(pool.get(name), suite, store, decoding)
                failures = [f for f in report.failures if f[0] == name]
                # not a model with probes missing: its export (an empty profile, when its
                # upstream was down) replaced a whole one, e.g. a shipped profile
                complete = not failures and name not in report.given_up
                if export_dir is not None and complete:
                    prof.save(export_dir / f"{name}.json.gz")
                summary = prof.summary(suite)
                summary["failures"] = failures
                summary["exported"] = export_dir is not None and complete
                summaries.append(summary)
    return summaries, report


def summarize_profiles(settings: Settings, suite_name: str, names: Sequence[str], samples: int,
                       temperature: float) -> list[dict[str, Any]]:
    """Summaries of what is stored, calling no model."""
    suite = open_suite(suite_name)
    decoding = Decoding(samples=samples, temperature=temperature)
    stored = settings.data_dir / "observations.sqlite3"
    if settings.store.kind == "sqlite" and not stored.exists():
        # opening it created it (and the data dir): a mistyped --data-dir was a coverage of
        # 0.000 for every model, exit 0, and a new directory
        raise StartupError(f"no observation store at {stored}: nothing was built into this "
                           "data dir (`diffroute profile build` collects; until then diff, "
                           "pairs and serve read the shipped profiles, where there are any)")
    with open_observations(settings) as store:
        pool = Pool(settings)
        summaries = []
        for name in names:
            prof = from_store(pool.get(name), suite, store, decoding)
            summary = prof.summary(suite)
            summary["notes"] = identity_notes(store, pool.get(name), prof, suite)
            summaries.append(summary)
        return summaries


def _flat(identity: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in identity.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def identity_notes(store: Observations, model: ModelClient, prof: Profile, suite: Suite
                   ) -> list[str]:
    """Why a model's stored profile falls short, when the store holds observations of its pool
    name under another configuration (another upstream model, URL, system prompt, decoding):
    those are another model's and do not count, and saying so beats a bare coverage of 0."""
    if len(prof.records) >= len(suite.probes):
        return []
    identity = model.identity()
    key = observation_key(model.name, identity)
    now = _flat(identity)
    notes = []
    for before, samples in store.other_identities(model.name, key, prof.decoding.key())[:1]:
        then = _flat(before)
        changed = sorted(k for k in now.keys() | then.keys() if now.get(k) != then.get(k))
        shown = ", ".join(f"{k} was {then.get(k)!r}, now {now.get(k)!r}" for k in changed[:3])
        notes.append(f"{model.name}: {samples} stored samples are of an earlier configuration "
                     f"({shown}): they do not count for this one, and `diffroute profile "
                     "build` collects it anew")
    return notes

