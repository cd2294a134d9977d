"""The pool's pairwise similarity matrix, per domain: what the pairing policy reads.

For every domain of the suite (and ``"all"``) it holds, for each pair of models, κp on gold
``choice`` probes (with a bootstrap interval over probes), error consistency on every gold probe,
plain answer agreement on every categorical probe, and each model's accuracy. All pairs are
computed at once with matrix products (see :mod:`profiles.similarity`), so a 100-model pool
takes seconds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from profiles.extract import numbers_match
from profiles.probe import Probe
from profiles.profile import Profile
from profiles.similarity import normalise_rows, pairwise_capa, pairwise_error_consistency
from profiles.suite import Suite

ALL = "all"
FloatArray = npt.NDArray[np.float64]


@dataclass
class DomainMatrix:
    """Pairwise similarity of the pool on one domain; ``NaN`` where there is no evidence."""

    kappa: FloatArray
    """(M, M) κp on gold choice probes."""
    kappa_low: FloatArray
    kappa_high: FloatArray
    error_consistency: FloatArray
    agreement: FloatArray
    """(M, M) probability that the two give the same answer, on every categorical probe."""
    accuracy: FloatArray
    """(M,) share of correct samples on gold probes."""
    n_kappa: int
    n_gold: int
    n_categorical: int


@dataclass
class PoolMatrix:
    """Per-domain :class:`DomainMatrix` for one set of profiles."""

    models: tuple[str, ...]
    domains: dict[str, DomainMatrix] = field(default_factory=dict)
    version: str = ""

    def index(self, model: str) -> int:
        return self.models.index(model)

    def to_json(self) -> dict[str, Any]:
        def clean(a: FloatArray) -> Any:
            return [None if np.isnan(x) else round(float(x), 5) for x in a.ravel()]

        return {
            "models": list(self.models),
            "version": self.version,
            "domains": {
                d: {"kappa": clean(m.kappa), "kappa_low": clean(m.kappa_low),
                    "kappa_high": clean(m.kappa_high),
                    "error_consistency": clean(m.error_consistency),
                    "agreement": clean(m.agreement), "accuracy": clean(m.accuracy),
                    "n_kappa": m.n_kappa, "n_gold": m.n_gold, "n_categorical": m.n_categorical}
                for d, m in self.domains.items()
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PoolMatrix:
        n = len(data["models"])

        def arr(values: list[float | None], shape: tuple[int, ...]) -> FloatArray:
            return np.array([np.nan if v is None else v for v in values],
                            dtype=np.float64).reshape(shape)

        out = cls(tuple(data["models"]), version=data.get("version", ""))
        for d, m in data["domains"].items():
            out.domains[d] = DomainMatrix(
                arr(m["kappa"], (n, n)), arr(m["kappa_low"], (n, n)),
                arr(m["kappa_high"], (n, n)), arr(m["error_consistency"], (n, n)),
                arr(m["agreement"], (n, n)), arr(m["accuracy"], (n,)),
                m["n_kappa"], m["n_gold"], m["n_categorical"])
        return out


def _categories(probe: Probe, profiles: Sequence[Profile]) -> list[str]:
    if probe.type == "choice":
        return list(probe.labels)
    if probe.type == "refusal":
        return ["comply", "refuse"]
    values = {v for p in profiles if (r := p.records.get(probe.id)) for v in r.values if v}
    return sorted(values)


def _is_correct(probe: Probe, value: str) -> bool:
    if probe.type == "numeric" and probe.gold is not None:
        return numbers_match(value, probe.gold)
    return value == probe.gold


@dataclass
class _Arrays:
    freq: FloatArray  # (M, P, C) answer frequencies (option probs for choice when known)
    n_options: npt.NDArray[np.int64]
    gold: npt.NDArray[np.int64]  # -1 when no gold or gold not a category
    correct: FloatArray  # (M, P) share of correct parsed samples
    modal_correct: npt.NDArray[np.bool_]
    seen: npt.NDArray[np.bool_]
    kinds: list[str]


def _arrays(probes: Sequence[Probe], profiles: Sequence[Profile]) -> _Arrays:
    cats = [_categories(p, profiles) for p in probes]
    width = max([2, *(len(c) for c in cats)])
    m, n = len(profiles), len(probes)
    freq = np.zeros((m, n, width))
    correct = np.zeros((m, n))
    modal = np.zeros((m, n), dtype=bool)
    gold = np.full(n, -1, dtype=np.int64)
    for j, (probe, cat) in enumerate(zip(probes, cats, strict=True)):
        index = {c: i for i, c in enumerate(cat)}
        if probe.gold is not None and probe.gold in index:
            gold[j] = index[probe.gold]
        for i, prof in enumerate(profiles):
            rec = prof.records.get(probe.id)
            if rec is None:
                continue
            parsed = [v for v in rec.values if v is not None and v in index]
            if probe.type == "choice" and rec.option_probs and len(rec.option_probs) == len(cat):
                freq[i, j, : len(cat)] = rec.option_probs
            for v in parsed:
                if not (probe.type == "choice" and rec.option_probs):
                    freq[i, j, index[v]] += 1
            if parsed and probe.gold is not None:
                hits = [_is_correct(probe, v) for v in parsed]
                correct[i, j] = sum(hits) / len(hits)
                top = max(set(parsed), key=lambda v: (parsed.count(v), v))
                modal[i, j] = _is_correct(probe, top)
    freq = normalise_rows(freq)
    n_opt = np.array([max(2, len(c)) for c in cats], dtype=np.int64)
    return _Arrays(freq, n_opt, gold, correct, modal, freq.sum(-1) > 0,
                   [p.type for p in probes])


def _pairwise_agreement(freq: FloatArray) -> FloatArray:
    seen = (freq.sum(-1) > 0).astype(np.float64)
    flat = freq.reshape(freq.shape[0], -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        shared = seen @ seen.T
        return np.where(shared > 0, (flat @ flat.T) / shared, np.nan)


def _domain_matrix(a: _Arrays, bootstrap: int, rng: np.random.Generator) -> DomainMatrix:
    m = a.freq.shape[0]
    kappa_cols = np.flatnonzero((np.array(a.kinds) == "choice") & (a.gold >= 0))
    nan = np.full((m, m), np.nan)
    kappa, low, high = nan.copy(), nan.copy(), nan.copy()
    if kappa_cols.size:
        def kp(cols: npt.NDArray[np.int64]) -> FloatArray:
            return pairwise_capa(a.freq[:, cols], a.gold[cols], a.n_options[cols])

        kappa = kp(kappa_cols)
        if bootstrap and kappa_cols.size > 1:
            draws = np.stack([kp(rng.choice(kappa_cols, kappa_cols.size)) for _ in
                              range(bootstrap)])
            low, high = np.nanpercentile(draws, [2.5, 97.5], axis=0)
    gold_cols = np.flatnonzero(a.gold >= 0)
    ec, acc = nan.copy(), np.full(m, np.nan)
    if gold_cols.size:
        valid = a.seen[:, gold_cols]
        ec = pairwise_error_consistency(a.modal_correct[:, gold_cols], valid)
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = (a.correct[:, gold_cols] * valid).sum(1) / valid.sum(1)
    return DomainMatrix(kappa, low, high, ec, _pairwise_agreement(a.freq), acc,
                        int(kappa_cols.size), int(gold_cols.size), int(a.freq.shape[1]))


def pool_matrix(profiles: Sequence[Profile], suite: Suite, bootstrap: int = 200,
                seed: int = 0) -> PoolMatrix:
    """The pool's similarity matrix on the suite's categorical probes, per domain and overall."""
    probes = [p for p in suite.probes if p.type != "free"]
    models = tuple(p.model for p in profiles)
    version = hashlib.sha256(json.dumps(sorted(p.version for p in profiles)).encode()
                             ).hexdigest()[:12]
    out = PoolMatrix(models, version=version)
    if not probes:
        return out
    arrays = _arrays(probes, profiles)
    rng = np.random.default_rng(seed)
    domains = sorted({d for p in probes for d in p.domains})
    for name in [ALL, *domains]:
        cols = np.array([j for j, p in enumerate(probes) if name == ALL or name in p.domains],
                        dtype=np.int64)
        out.domains[name] = _domain_matrix(_subset(arrays, cols), bootstrap, rng)
    return out


def _subset(a: _Arrays, cols: npt.NDArray[np.int64]) -> _Arrays:
    return _Arrays(a.freq[:, cols], a.n_options[cols], a.gold[cols], a.correct[:, cols],
                   a.modal_correct[:, cols], a.seen[:, cols], [a.kinds[j] for j in cols])
