"""Task → domain on everyday prompts written outside the suite: which embedder and method.

``benchmarks/data/task_domains.jsonl`` holds 72 prompts (6 per domain of the default suite, none
of them a probe of it) and 30 that fit no domain (``"all"``; none of them one of the everyday
requests of ``router/data/elsewhere.txt``). For each embedder (the hash
embedder, all-MiniLM-L6-v2) and each method of ``policy.task_domains`` (``centroid``: similarity
to each domain's mean probe embedding, with the ``all`` floor calibrated on the suite itself;
``neighbours``: the softmax vote of the 16 nearest probes) it prints the top-1 accuracy on the
72 domain prompts with a Wilson 95 % interval, how many of the 30 off-topic prompts get ``all``
(or no domain above half the weight), each with and without ``policy.elsewhere``, and the
milliseconds to embed and classify one task. The baseline is the hash embedder with
``neighbours``: the configuration before issue #14.

Nothing here is fitted on the held-out prompts: the centroids and thresholds come from the
suite alone.

Run: ``python -m benchmarks.task_domains``
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from benchmarks._common import print_table
from profiles.embed import Embedder, HashEmbedder, MiniLMEmbedder
from profiles.suite import load_suite
from router.config import PolicySettings
from router.live.rates import wilson_interval
from router.pairing.index import ProbeIndex, elsewhere_texts

HELD_OUT = Path(__file__).parent / "data" / "task_domains.jsonl"


def held_out() -> list[tuple[str, str]]:
    """(task, domain) rows; ``domain`` is ``"all"`` for a task that fits no domain."""
    rows = [json.loads(line) for line in HELD_OUT.read_text().splitlines() if line.strip()]
    return [(r["task"], r["domain"]) for r in rows]


def top(weights: dict[str, float]) -> str:
    """The heaviest domain, ``all`` for none; ``?`` when no domain has half the weight."""
    if not weights:
        return "all"
    best = max(weights, key=weights.__getitem__)
    return best if weights[best] >= 0.5 else "?"


def measure(embedder: Embedder, method: str, rows: list[tuple[str, str]],
            config: PolicySettings, elsewhere: bool) -> list[str]:
    """One row of the table for ``embedder`` and ``method``, with or without the comparison
    with everyday requests outside the suite (``policy.elsewhere``)."""
    index = ProbeIndex.build(load_suite("default").probes, embedder,
                             elsewhere=elsewhere_texts() if elsewhere else ())
    embedder.embed(["warm up"])
    predicted, seconds = [], []
    for task, domain in rows:
        start = time.perf_counter()
        vector = embedder.embed([task])[0]
        weights = index.classify(vector, config.domain_temperature) if method == "centroid" \
            else index.domain_weights(vector, config.neighbours, config.temperature)
        seconds.append(time.perf_counter() - start)
        first = max(weights, key=weights.__getitem__) if weights else "all"
        predicted.append(top(weights) if domain == "all" else first)
    domain_rows = [(p, d) for p, (_, d) in zip(predicted, rows, strict=True) if d != "all"]
    hits = sum(p == d for p, d in domain_rows)
    low, high = wilson_interval(hits, len(domain_rows))
    off = [p for p, (_, d) in zip(predicted, rows, strict=True) if d == "all"]
    wrong = [f"{t[:32]}→{p}" for p, (t, d) in zip(predicted, rows, strict=True)
             if d != "all" and p != d]
    missed = [t[:32] for p, (t, d) in zip(predicted, rows, strict=True)
              if d == "all" and p not in ("all", "?")]
    print(f"{embedder.name} {method} elsewhere={elsewhere} misses: {'; '.join(wrong)}")
    print(f"    off-topic given a domain: {'; '.join(missed)}")
    off_low, off_high = wilson_interval(sum(p in ("all", "?") for p in off), len(off))
    return [embedder.name, method, "on" if elsewhere else "off", f"{hits}/{len(domain_rows)}",
            f"{hits / len(domain_rows):.3f} [{low:.3f}, {high:.3f}]",
            f"{sum(p in ('all', '?') for p in off)}/{len(off)} [{off_low:.2f}, {off_high:.2f}]",
            f"{1000 * float(np.median(seconds)):.2f}"]


def main() -> None:
    rows = held_out()
    config = PolicySettings()
    table = [measure(embedder, method, rows, config, elsewhere)
             for embedder in (HashEmbedder(256), MiniLMEmbedder())
             for method in ("neighbours", "centroid")
             for elsewhere in (False, True)]
    print_table(["embedder", "method", "elsewhere", "top-1", "accuracy [95% CI]",
                 "off-topic → all [95% CI]", "ms/task"], table)


if __name__ == "__main__":
    main()
