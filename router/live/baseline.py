"""What the profiles predict for live comparisons: disagreement rates and noise floors.

* Predicted disagreement of a pair in a domain = 1 − the pool matrix's answer agreement
  (probability that one sample of each gives the same answer on the domain's categorical
  probes; :func:`profiles.matrix.pool_matrix`). A domain the suite does not know uses the
  suite-wide (``all``) value.
* Semantic noise floor of a model in a domain = the 95th percentile of cosine distances between
  its own samples of the same ``free`` probe: 95 % of pure sampling noise stays below it. A
  pair's threshold is the larger of its two models' floors (at least :data:`MIN_FLOOR`).
  Samples whose embedding cannot be scored (zero or non-finite) are left out of the floor.

Loading reads the observation store (or the shipped profiles) through
``router.profiling.sources``; it runs in a worker thread at startup (and again when a profile
build on a shared store finishes) and fails soft: no profiles, no predictions.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import structlog

from profiles.embed import Embedder, usable_rows
from profiles.matrix import ALL, PoolMatrix, pool_matrix
from profiles.probe import AnswerType
from profiles.profile import Profile
from profiles.suite import Suite

MIN_FLOOR = 0.05
"""A deterministic model's floor is 0; two equal-meaning answers still differ in wording."""
FLOOR_QUANTILE = 95.0

_log = structlog.get_logger("diffroute.live")


@dataclass
class ProfileBaseline:
    """Predicted disagreement per (a, b, domain) and semantic floors per (model, domain)."""

    agreement: dict[tuple[str, str, str], float] = field(default_factory=dict)
    floors: dict[tuple[str, str], float] = field(default_factory=dict)
    types: dict[str, AnswerType] = field(default_factory=dict)
    version: str = ""

    def adopt(self, other: ProfileBaseline) -> None:
        """Take ``other``'s predictions in place (profiles were rebuilt), so that whoever
        holds this baseline — the sink, the comparer — sees them at once."""
        self.agreement, self.floors, self.version = other.agreement, other.floors, other.version
        self.types.clear()
        self.types.update(other.types)

    def predicted_disagreement(self, primary: str, partner: str, domain: str) -> float | None:
        """The profile's disagreement rate, ``None`` when the pair is unprofiled."""
        for d in (domain, ALL):
            found = self.agreement.get((primary, partner, d))
            if found is not None:
                return 1.0 - found
        return None

    def semantic_threshold(self, pair: tuple[str, str], domain: str) -> float | None:
        """:class:`~router.paired.compare.NoiseFloors`: the larger floor of the two, if known."""
        a, b = (self.floors.get((m, domain)) for m in pair)
        return None if a is None or b is None else max(a, b, MIN_FLOOR)


def from_matrix(matrix: PoolMatrix) -> dict[tuple[str, str, str], float]:
    """Pairwise agreement per domain, both orders, where there is evidence."""
    out: dict[tuple[str, str, str], float] = {}
    for domain, dm in matrix.domains.items():
        for i, j in itertools.permutations(range(len(matrix.models)), 2):
            value = float(dm.agreement[i, j])
            if not np.isnan(value):
                out[(matrix.models[i], matrix.models[j], domain)] = value
    return out


def semantic_floors(profiles: Sequence[Profile], suite: Suite,
                    embedder: Embedder) -> dict[tuple[str, str], float]:
    """Each model's 95th-percentile self-distance on the ``free`` probes of each domain."""
    free = [p for p in suite.probes if p.type == "free"]
    out: dict[tuple[str, str], float] = {}
    for profile in profiles:
        per_domain: dict[str, list[float]] = {}
        for probe in free:
            record = profile.records.get(probe.id)
            if record is None or len(record.texts) < 2:
                continue
            vectors = embedder.embed(list(record.texts))
            vectors = vectors[usable_rows(vectors)]
            if len(vectors) < 2:
                _log.warning("baseline.probe_left_out", model=profile.model, probe=probe.id,
                             reason="fewer than 2 samples with a usable embedding")
                continue
            sims = vectors @ vectors.T
            upper = np.triu_indices(len(vectors), 1)
            distances = (1.0 - sims[upper]).tolist()
            for domain in (*probe.domains, ALL):
                per_domain.setdefault(domain, []).extend(distances)
        for domain, values in per_domain.items():
            out[(profile.model, domain)] = float(np.percentile(values, FLOOR_QUANTILE))
    return out


def build_baseline(profiles: Sequence[Profile], suite: Suite, embedder: Embedder,
                   types: Mapping[str, AnswerType] | None = None) -> ProfileBaseline:
    """The baseline of a set of profiles on one suite."""
    if not profiles:
        return ProfileBaseline(types=dict(types or {}))
    matrix = pool_matrix(profiles, suite, bootstrap=0)
    return ProfileBaseline(from_matrix(matrix), semantic_floors(profiles, suite, embedder),
                           dict(types or {}), matrix.version)
