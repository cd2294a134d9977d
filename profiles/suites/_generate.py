"""Write the shipped suites: ``python -m profiles.suites._generate [--out DIR]``.

The output is deterministic (fixed seeds, stable ordering, fixed JSON formatting), so running
it again over the shipped files changes nothing unless the content modules changed; a test
holds the shipped data to that.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

from profiles.probe import Probe
from profiles.suite import MANIFEST_FILE, PROBES_FILE, SuiteManifest
from profiles.suites._behaviour import identity, instructions, politics, safety, values
from profiles.suites._computed import SEED, arithmetic, code, reasoning
from profiles.suites._knowledge import geography, history, science
from profiles.suites._multilingual import multilingual

DOMAIN_BUILDERS: tuple[Callable[[], list[Probe]], ...] = (
    geography,
    science,
    history,
    arithmetic,
    reasoning,
    code,
    instructions,
    safety,
    values,
    politics,
    identity,
    multilingual,
)
SUITE_VERSION = "1.0.0"
SMOKE_SIZE = 40

DEFAULT_MANIFEST = SuiteManifest(
    name="default",
    version=SUITE_VERSION,
    description=(
        "diffroute's default suite: world knowledge, arithmetic, reasoning, code reading, "
        "instruction following, safety (refusal calibration), contested values, political "
        "framing, self-identity and multilingual probes; gold answers where a fact decides."
    ),
)
SMOKE_MANIFEST = SuiteManifest(
    name="smoke",
    version=SUITE_VERSION,
    description=(
        f"About {SMOKE_SIZE} probes drawn from the default suite (ids kept), covering every "
        "domain and answer type; for quick runs and tests."
    ),
)


def default_probes() -> list[Probe]:
    """Every probe of the default suite, domain by domain."""
    return [probe for build in DOMAIN_BUILDERS for probe in build()]


def smoke_probes(probes: Sequence[Probe], size: int = SMOKE_SIZE) -> list[Probe]:
    """A seeded sample with one probe per (domain, type, gold kind), topped up per domain.

    Returned in the order of ``probes`` so the smoke file reads like a slice of the default.
    """
    rng = random.Random(f"{SEED}:smoke")
    strata: dict[tuple[str, str, str], list[Probe]] = defaultdict(list)
    for probe in probes:
        strata[_stratum(probe)].append(probe)
    chosen = {rng.choice(members).id for _, members in sorted(strata.items())}
    _top_up(probes, chosen, size, rng)
    return [p for p in probes if p.id in chosen]


def _stratum(probe: Probe) -> tuple[str, str, str]:
    # refusal probes are split by expected behaviour so smoke runs see both comply and refuse
    gold_kind = probe.gold or "" if probe.type == "refusal" else str(probe.gold is not None)
    return probe.domains[0], probe.type, gold_kind


def _top_up(probes: Sequence[Probe], chosen: set[str], size: int, rng: random.Random) -> None:
    """Add probes round-robin over domains until ``size`` are chosen."""
    by_domain: dict[str, list[Probe]] = defaultdict(list)
    for probe in probes:
        if probe.id not in chosen:
            by_domain[probe.domains[0]].append(probe)
    domains = list(dict.fromkeys(p.domains[0] for p in probes))
    while len(chosen) < size and any(by_domain.values()):
        for domain in domains:
            if len(chosen) >= size or not by_domain[domain]:
                continue
            pick = by_domain[domain].pop(rng.randrange(len(by_domain[domain])))
            chosen.add(pick.id)


def write_suite(directory: Path, manifest: SuiteManifest, probes: Sequence[Probe]) -> None:
    """Write ``manifest.json`` and ``probes.jsonl`` into ``directory`` (created if needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    manifest_text = json.dumps(manifest.model_dump(mode="json"), indent=2, ensure_ascii=False)
    (directory / MANIFEST_FILE).write_text(manifest_text + "\n", encoding="utf-8", newline="\n")
    lines = (
        json.dumps(p.model_dump(mode="json", exclude_none=True), ensure_ascii=False) for p in probes
    )
    (directory / PROBES_FILE).write_text(
        "".join(f"{line}\n" for line in lines), encoding="utf-8", newline="\n"
    )


def write_suites(out_dir: Path) -> None:
    """Write the ``default`` and ``smoke`` suites under ``out_dir``."""
    probes = default_probes()
    write_suite(out_dir / "default", DEFAULT_MANIFEST, probes)
    write_suite(out_dir / "smoke", SMOKE_MANIFEST, smoke_probes(probes))


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; writes next to this module unless ``--out`` is given."""
    parser = argparse.ArgumentParser(description="Write diffroute's shipped probe suites.")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="directory that receives default/ and smoke/",
    )
    args = parser.parse_args(argv)
    write_suites(args.out)
    print(f"wrote default and smoke suites under {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
