"""Profile building for the CLI and the service: pool + suite + store → profiles.

The statistics live in ``profiles``; this module only wires the pool to them and draws the
progress bar.
"""

from __future__ import annotations

from collections.abc import Sequence
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
from profiles.store import Observations
from profiles.suite import Suite
from router.config import Settings
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
                             on_progress=advance, limits=limits)


async def build_profiles(settings: Settings, suite_name: str, names: Sequence[str], samples: int,
                         temperature: float, concurrency: int,
                         export_dir: Path | None = None,
                         ) -> tuple[list[dict[str, Any]], CollectReport]:
    """Collect, then summarise each model's profile (and export it if asked)."""
    suite = open_suite(suite_name)
    decoding = Decoding(samples=samples, temperature=temperature)
    with open_observations(settings) as store:
        async with Pool.open(settings) as pool:
            report = await collect_with_progress(pool, names, suite, store, decoding, concurrency)
            # the confirm collection: other seeds, later requests (what a diff confirms on)
            confirm = await collect_with_progress(pool, names, suite, store, decoding.confirm(),
                                                  concurrency)
            report = merge_reports(report, confirm)
            summaries = []
            for name in names:
                prof = from_store(pool.get(name), suite, store, decoding)
                if export_dir is not None:
                    prof.save(export_dir / f"{name}.json.gz")
                summary = prof.summary(suite)
                summary["failures"] = [f for f in report.failures if f[0] == name]
                summaries.append(summary)
    return summaries, report


def summarize_profiles(settings: Settings, suite_name: str, names: Sequence[str], samples: int,
                       temperature: float) -> list[dict[str, Any]]:
    """Summaries of what is stored, calling no model."""
    suite = open_suite(suite_name)
    decoding = Decoding(samples=samples, temperature=temperature)
    with open_observations(settings) as store:
        pool = Pool(settings)
        return [from_store(pool.get(n), suite, store, decoding).summary(suite) for n in names]


def load_profile(path: Path) -> Profile:
    return Profile.load(path)
