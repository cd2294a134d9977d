"""The pool's pairwise similarity matrix, per domain: what the pairing policy reads.

For every domain of the suite (and ``"all"``) it holds, for each pair of models, κp on gold
``choice`` probes (with a bootstrap interval over probes), error consistency on every gold probe,
plain answer agreement on every categorical probe, and each model's accuracy.

Answer distributions are sampled frequencies, except on ``choice`` probes where every model has
first-token option probabilities: there those are used, tempered to each profile's sampling
temperature, for every model alike. Error consistency needs one answer per model and probe:
the modal sampled answer, ties broken uniformly at random (seeded). All pairs are
computed at once with matrix products (see :mod:`profiles.similarity`), so a 100-model pool
takes seconds.

A record's option probabilities are used only when they are usable (finite, non-negative, some
mass; :func:`usable_option_probs`); otherwise that probe counts by its sampled answers, so one
corrupt record never stops the matrix (nor the policy that loads it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from math import isfinite
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


@dataclass
class _Arrays:
    freq: FloatArray  # (M, P, C) answer frequencies (option probs for choice when known)
    n_options: npt.NDArray[np.int64]
    gold: npt.NDArray[np.int64]  # -1 when no gold or gold not a category
    correct: FloatArray  # (M, P) share of correct parsed samples
    modal_correct: npt.NDArray[np.bool_]
    seen: npt.NDArray[np.bool_]
    kinds: list[str]


def _gold_code(probe: Probe, index: dict[str, int]) -> int:
    if probe.gold is None:
        return -1
    if probe.gold in index:
        return index[probe.gold]
    if probe.type == "numeric":
        return next((i for c, i in index.items() if numbers_match(c, probe.gold)), -1)
    return -1


def _codes(profile: Profile, probes: Sequence[Probe], indexes: list[dict[str, int]],
           k: int) -> npt.NDArray[np.int64]:
    """One model's answers as category codes ``(probes, k)``; -1 for missing or unparsed."""
    missing: tuple[str | None, ...] = (None,) * k
    rows = [profile.records.get(probe.id) for probe in probes]
    values = [(r.values + missing)[:k] if r is not None else missing for r in rows]
    flat = [
        index.get(v, -1) if v is not None else -1
        for row, index in zip(values, indexes, strict=True)
        for v in row
    ]
    return np.array(flat, dtype=np.int64).reshape(len(probes), k)


def usable_option_probs(probs: Sequence[float | None]) -> tuple[float, ...] | None:
    """``probs`` if they can be scored (finite, non-negative, some mass), else ``None``."""
    if not all(isinstance(p, int | float) and isfinite(p) and p >= 0 for p in probs):
        return None
    values = tuple(float(p) for p in probs if p is not None)
    return values if sum(values) > 0 else None


def _option_probs(freq: FloatArray, probes: Sequence[Probe], profiles: Sequence[Profile],
                  cats: list[list[str]]) -> None:
    """Replace sampled frequencies by first-token option probabilities, on the choice probes
    where every model that observed the probe has usable ones (finite, non-negative, some
    mass: otherwise that probe is read from the sampled answers of all models).

    The probabilities are tempered to each profile's sampling temperature (p^(1/T),
    renormalised; one-hot at T = 0) so that they describe what the model's sampled answers
    do; and they are used for all models of a probe or for none, so κp never compares one
    model's probabilities with another's sampled frequencies.
    """
    for j, probe in enumerate(probes):
        if probe.type != "choice":
            continue
        n = len(cats[j])
        rows = [(i, prof.records.get(probe.id)) for i, prof in enumerate(profiles)]
        seen = [(i, r) for i, r in rows if r is not None]
        if not seen or any(not r.option_probs or len(r.option_probs) != n for _, r in seen):
            continue
        usable = [(i, usable_option_probs(r.option_probs or ())) for i, r in seen]
        if any(u is None for _, u in usable):
            continue
        for i, probs in usable:
            assert probs is not None
            freq[i, j, :] = 0.0
            freq[i, j, :n] = tempered(probs, profiles[i].decoding.temperature)


def tempered(probs: Sequence[float], temperature: float) -> FloatArray:
    """Option probabilities at temperature 1 turned into those at ``temperature``."""
    p = np.asarray(probs, dtype=np.float64)
    if temperature <= 0:
        out = np.zeros_like(p)
        out[int(p.argmax())] = 1.0
        return out
    with np.errstate(divide="ignore"):
        logp = np.where(p > 0, np.log(np.maximum(p, 1e-300)), -np.inf) / temperature
    w = np.exp(logp - logp.max())
    result: FloatArray = w / w.sum()
    return result


def _arrays(probes: Sequence[Probe], profiles: Sequence[Profile],
            rng: np.random.Generator) -> _Arrays:
    cats = [_categories(p, profiles) for p in probes]
    indexes = [{c: i for i, c in enumerate(cat)} for cat in cats]
    width = max([2, *(len(c) for c in cats)])
    k = max([1, *(len(r.values) for prof in profiles for r in prof.records.values())])
    codes = np.stack([_codes(prof, probes, indexes, k) for prof in profiles])  # (M, P, k)
    counts = (codes[..., None] == np.arange(width)).sum(axis=2).astype(np.float64)
    freq = counts.copy()
    _option_probs(freq, probes, profiles, cats)
    gold = np.array([_gold_code(p, ix) for p, ix in zip(probes, indexes, strict=True)],
                    dtype=np.int64)
    parsed = (codes >= 0).sum(axis=2)
    hits = ((codes == gold[None, :, None]) & (gold[None, :, None] >= 0)).sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        correct = np.where(parsed > 0, hits / np.maximum(parsed, 1), 0.0)
    # the modal answer, ties broken uniformly at random (argmax alone favours option A)
    jitter = rng.random(counts.shape) * 0.5
    modal = ((counts + jitter).argmax(axis=2) == gold[None, :]) & (parsed > 0) & \
        (gold[None, :] >= 0)
    n_opt = np.array([max(2, len(c)) for c in cats], dtype=np.int64)
    freq = normalise_rows(freq)
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
    rng = np.random.default_rng(seed)
    arrays = _arrays(probes, profiles, rng)
    domains = sorted({d for p in probes for d in p.domains})
    for name in [ALL, *domains]:
        cols = np.array([j for j, p in enumerate(probes) if name == ALL or name in p.domains],
                        dtype=np.int64)
        out.domains[name] = _domain_matrix(_subset(arrays, cols), bootstrap, rng)
    return out


def _subset(a: _Arrays, cols: npt.NDArray[np.int64]) -> _Arrays:
    return _Arrays(a.freq[:, cols], a.n_options[cols], a.gold[cols], a.correct[:, cols],
                   a.modal_correct[:, cols], a.seen[:, cols], [a.kinds[j] for j in cols])
