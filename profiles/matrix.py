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
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from math import isfinite
from typing import Any

import numpy as np
import numpy.typing as npt

from profiles.embed import Embedder, usable_rows
from profiles.extract import numbers_match
from profiles.priors import (
    pairwise_prior_agreement,
    pairwise_text_similarity,
    self_agreement,
    text_summaries,
)
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
    prior: FloatArray | None = None
    """(M, M) agreement beyond chance and own noise on categorical probes without gold
    (other than refusal probes): :mod:`profiles.priors`."""
    refusal: FloatArray | None = None
    """(M, M) the same on refusal probes (refuse or comply), gold or not."""
    free: FloatArray | None = None
    """(M, M) free-text similarity beyond chance and own noise (when an embedder was given)."""
    similarity: FloatArray | None = None
    """(M, M) every measure of the domain in one, weighted by its probes: κp (error
    consistency where there is no gold choice probe) on gold probes, ``prior``, ``refusal``,
    ``free``. What the pairing policy ranks partners by."""
    similarity_low: FloatArray | None = None
    similarity_high: FloatArray | None = None
    """95 % bootstrap interval of ``similarity`` (probes resampled within each measure)."""
    n_prior: int = 0
    n_refusal: int = 0
    n_free: int = 0
    catch: FloatArray | None = None
    """(M, M) on gold probes, row the primary: the expected share of the primary's wrong
    answers that the column model's answer differs from (what an auditor catches), two
    independent calls per probe (:func:`audit_rates`)."""
    false_alarm: FloatArray | None = None
    """(M, M) the same for the primary's right answers (what an auditor flags in vain)."""
    catch_even: FloatArray | None = None
    catch_odd: FloatArray | None = None
    false_alarm_even: FloatArray | None = None
    false_alarm_odd: FloatArray | None = None
    """``catch`` and ``false_alarm`` on each half of the domain's gold probes (alternate ones,
    in suite order): a choice made on one half is counted on the other, so that the policy's
    false-alarm budget holds for answers it has not chosen on (cross-fitting). None below
    :data:`MIN_FOLD_PROBES` gold probes per half."""


OPTIONAL = ("prior", "refusal", "free", "similarity", "similarity_low", "similarity_high",
            "catch", "false_alarm", "catch_even", "catch_odd", "false_alarm_even",
            "false_alarm_odd")
"""The (M, M) arrays of a :class:`DomainMatrix` that older matrices (JSON) may lack."""


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
                    "n_kappa": m.n_kappa, "n_gold": m.n_gold, "n_categorical": m.n_categorical,
                    **{key: clean(getattr(m, key)) for key in OPTIONAL
                       if getattr(m, key) is not None},
                    "n_prior": m.n_prior, "n_refusal": m.n_refusal, "n_free": m.n_free}
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
                m["n_kappa"], m["n_gold"], m["n_categorical"],
                **{key: arr(m[key], (n, n)) for key in OPTIONAL if key in m},
                n_prior=m.get("n_prior", 0), n_refusal=m.get("n_refusal", 0),
                n_free=m.get("n_free", 0))
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
    correct: FloatArray  # (M, P) share of correct samples (an unparsed one is not correct)
    modal_correct: npt.NDArray[np.bool_]
    seen: npt.NDArray[np.bool_]
    kinds: list[str]
    own: FloatArray  # (M, P) chance two distinct samples of a model agree (profiles.priors)
    answered: npt.NDArray[np.bool_]  # (M, P) a sample was taken, parsed or not (accuracy's)


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


def _taken(profile: Profile, probes: Sequence[Probe], k: int) -> npt.NDArray[np.int64]:
    """How many of its first ``k`` samples the model gave on each probe (parsed or not)."""
    records = [profile.records.get(probe.id) for probe in probes]
    return np.array([min(len(r.values), k) if r is not None else 0 for r in records],
                    dtype=np.int64)


def usable_option_probs(probs: Sequence[float | None]) -> tuple[float, ...] | None:
    """``probs`` if they can be scored (finite, non-negative, some mass), else ``None``."""
    if not all(isinstance(p, int | float) and isfinite(p) and p >= 0 for p in probs):
        return None
    values = tuple(float(p) for p in probs if p is not None)
    return values if sum(values) > 0 else None


def _option_probs(freq: FloatArray, probes: Sequence[Probe], profiles: Sequence[Profile],
                  cats: list[list[str]]) -> npt.NDArray[np.bool_]:
    """Replace sampled frequencies by first-token option probabilities, on the choice probes
    where every model that observed the probe has usable ones (finite, non-negative, some
    mass: otherwise that probe is read from the sampled answers of all models). Returns where
    that happened.

    The probabilities are tempered to each profile's sampling temperature (p^(1/T),
    renormalised; one-hot at T = 0) so that they describe what the model's sampled answers
    do; and they are used for all models of a probe or for none, so κp never compares one
    model's probabilities with another's sampled frequencies.
    """
    exact = np.zeros(len(probes), dtype=bool)
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
        exact[j] = True
    return exact


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
    exact = _option_probs(freq, probes, profiles, cats)
    gold = np.array([_gold_code(p, ix) for p, ix in zip(probes, indexes, strict=True)],
                    dtype=np.int64)
    parsed = (codes >= 0).sum(axis=2)
    taken = np.stack([_taken(prof, probes, k) for prof in profiles])  # (M, P)
    hits = ((codes == gold[None, :, None]) & (gold[None, :, None] >= 0)).sum(axis=2)
    # an answer the extraction could not read (no number, a letter contradicting its option's
    # text, a cut-off answer) is not a right one: accuracy counts every sample taken, as the
    # diff counts "unparsed" as an answer of its own
    correct = np.where(taken > 0, hits / np.maximum(taken, 1), 0.0)
    # the modal answer among the options and "unparsed", ties broken uniformly at random
    # (argmax alone favours option A)
    voted = np.concatenate([counts, (taken - parsed)[..., None]], axis=2)
    jitter = rng.random(voted.shape) * 0.5
    modal = ((voted + jitter).argmax(axis=2) == gold[None, :]) & (parsed > 0) & \
        (gold[None, :] >= 0)
    n_opt = np.array([max(2, len(c)) for c in cats], dtype=np.int64)
    freq = normalise_rows(freq)
    return _Arrays(freq, n_opt, gold, correct, modal, freq.sum(-1) > 0,
                   [p.type for p in probes], self_agreement(freq, parsed, exact), taken > 0)


def _pairwise_agreement(freq: FloatArray) -> FloatArray:
    seen = (freq.sum(-1) > 0).astype(np.float64)
    flat = freq.reshape(freq.shape[0], -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        shared = seen @ seen.T
        return np.where(shared > 0, (flat @ flat.T) / shared, np.nan)


@dataclass
class _Text:
    """Free-text answers of the pool: per model and probe, the mean unit embedding of its
    samples and their mean cosine with each other (:func:`profiles.priors.text_summaries`)."""

    means: FloatArray  # (M, P, d)
    own: FloatArray  # (M, P)
    seen: npt.NDArray[np.bool_]  # (M, P): at least two usable samples

    def subset(self, cols: npt.NDArray[np.int64]) -> _Text:
        return _Text(self.means[:, cols], self.own[:, cols], self.seen[:, cols])


@dataclass
class _Columns:
    """Which probes of a domain each measure reads."""

    kappa: npt.NDArray[np.int64]
    gold: npt.NDArray[np.int64]
    prior: npt.NDArray[np.int64]
    refusal: npt.NDArray[np.int64]

    @classmethod
    def of(cls, a: _Arrays) -> _Columns:
        """The probes of each measure that at least two models answered: the evidence a
        measure rests on is what was observed, not what the suite holds (an unfinished build
        showed "κp on 156 gold probes" resting on 11)."""
        kinds = np.array(a.kinds)
        pair = a.seen.sum(0) >= 2
        # right or wrong needs no readable answer: one that could not be read is a wrong one
        graded = a.answered.sum(0) >= 2
        return cls(np.flatnonzero((kinds == "choice") & (a.gold >= 0) & pair),
                   np.flatnonzero((a.gold >= 0) & graded),
                   np.flatnonzero((a.gold < 0) & (kinds != "refusal") & pair),
                   np.flatnonzero((kinds == "refusal") & pair))


def _kappa(a: _Arrays, cols: npt.NDArray[np.int64]) -> FloatArray:
    return pairwise_capa(a.freq[:, cols], a.gold[cols], a.n_options[cols])


def _error_consistency(a: _Arrays, cols: npt.NDArray[np.int64]) -> FloatArray:
    # "no readable answer" is an answer of its own (and a wrong one): modal_correct says so
    return pairwise_error_consistency(a.modal_correct[:, cols], a.answered[:, cols])


def _prior(a: _Arrays, cols: npt.NDArray[np.int64]) -> FloatArray:
    return pairwise_prior_agreement(a.freq[:, cols], a.own[:, cols], a.seen[:, cols])


def _free(text: _Text, cols: npt.NDArray[np.int64]) -> FloatArray:
    return pairwise_text_similarity(text.means[:, cols], text.own[:, cols],
                                    text.seen[:, cols])


def _measures(a: _Arrays, text: _Text | None, c: _Columns, free_cols: npt.NDArray[np.int64],
              m: int) -> list[tuple[FloatArray, int]]:
    """Each measure of the domain with the number of probes it rests on (none: NaN, 0)."""
    nan = np.full((m, m), np.nan)
    gold = _kappa(a, c.kappa) if c.kappa.size else \
        _error_consistency(a, c.gold) if c.gold.size else nan
    return [
        (gold, int(c.kappa.size or c.gold.size)),
        (_prior(a, c.prior) if c.prior.size else nan, int(c.prior.size)),
        (_prior(a, c.refusal) if c.refusal.size else nan, int(c.refusal.size)),
        (_free(text, free_cols) if text is not None and free_cols.size else nan,
         int(free_cols.size)),
    ]


MIN_FOLD_PROBES = 4
"""Gold probes a half needs for its own audit rates (fewer: the domain has no folds)."""


def audit_rates(freq: FloatArray, gold: npt.NDArray[np.int64],
                seen: npt.NDArray[np.bool_]) -> tuple[FloatArray, FloatArray]:
    """(catch, false alarm), (M, M) with the primary as row, from answer distributions on gold
    probes: per probe, P(the two differ and the primary is wrong) = P(differ) − P(primary
    right, other wrong), summed and divided by the primary's expected wrong (right) answers.

    Both models are read on the probes both answered; the sums are exact expectations for
    two independent calls, so (unlike error consistency, which reads modal answers) they
    count how often an auditor would flag the primary's errors and its right answers.
    """
    m, p, _ = freq.shape
    s = seen.astype(np.float64)
    right = np.zeros((m, p))
    right[:, gold >= 0] = freq[:, np.flatnonzero(gold >= 0), gold[gold >= 0]]
    right *= s
    flat = freq.reshape(m, -1)
    shared = s @ s.T
    differ = shared - flat @ flat.T
    alarms = right @ s.T - right @ right.T  # [p, a] = Σ r_p (1 − r_a)
    caught = differ - alarms
    n_right = right @ s.T
    n_wrong = shared - n_right
    with np.errstate(invalid="ignore", divide="ignore"):
        catch = np.where(n_wrong > 1e-9, np.clip(caught, 0.0, None) / n_wrong, np.nan)
        alarm = np.where(n_right > 1e-9, np.clip(alarms, 0.0, None) / n_right, np.nan)
    return catch, alarm


def combined(measures: Sequence[tuple[FloatArray, int]]) -> FloatArray:
    """The probe-weighted mean of the measures a pair has (NaN ones left out)."""
    values = np.stack([v for v, _ in measures])
    weights = np.array([n for _, n in measures], dtype=np.float64)[:, None, None]
    present = ~np.isnan(values)
    total = (weights * present).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (weights * np.where(present, values, 0.0)).sum(0) / total,
                        np.nan)


MIN_INTERVAL_PROBES = 5
"""Gold choice probes κp needs for a bootstrap interval: over 2 probes the "95 %" interval
covered the true κp 51–72 % of the time, over 3–4 80–96 %, from 5 on about 95 %."""


def _resampled(cols: npt.NDArray[np.int64], rng: np.random.Generator) -> npt.NDArray[np.int64]:
    return rng.choice(cols, cols.size) if cols.size > 1 else cols


def _domain_matrix(a: _Arrays, text: _Text | None, bootstrap: int,
                   rng: np.random.Generator) -> DomainMatrix:
    m = a.freq.shape[0]
    c = _Columns.of(a)
    free_cols = np.flatnonzero(text.seen.sum(0) >= 2) if text is not None else np.arange(0)
    nan = np.full((m, m), np.nan)
    measures = _measures(a, text, c, free_cols, m)
    kappa = measures[0][0] if c.kappa.size else nan.copy()
    low, high, sim_low, sim_high = nan.copy(), nan.copy(), nan.copy(), nan.copy()
    if bootstrap:
        kappas, sims = [], []
        for _ in range(bootstrap):
            draw = _Columns(_resampled(c.kappa, rng), _resampled(c.gold, rng),
                            _resampled(c.prior, rng), _resampled(c.refusal, rng))
            drawn = _measures(a, text, draw, _resampled(free_cols, rng), m)
            kappas.append(drawn[0][0])
            sims.append(combined(drawn))
        with warnings.catch_warnings():  # a pair without any evidence stays NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            if c.kappa.size >= MIN_INTERVAL_PROBES:
                low, high = np.nanpercentile(np.stack(kappas), [2.5, 97.5], axis=0)
            sim_low, sim_high = np.nanpercentile(np.stack(sims), [2.5, 97.5], axis=0)
    ec, acc, catch, alarm = nan.copy(), np.full(m, np.nan), nan.copy(), nan.copy()
    folds: dict[str, FloatArray] = {}
    # each model's accuracy on every gold probe it answered, whoever else did: a probe it
    # answered unreadably counts, as wrong (as `profile show` counts it)
    graded = a.answered[:, a.gold >= 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = (a.correct[:, a.gold >= 0] * graded).sum(1) / graded.sum(1)
    if c.gold.size:
        valid = a.seen[:, c.gold]
        ec = _error_consistency(a, c.gold)
        catch, alarm = audit_rates(a.freq[:, c.gold], a.gold[c.gold], valid)
        if c.gold.size >= 2 * MIN_FOLD_PROBES:
            for name, half in (("even", c.gold[0::2]), ("odd", c.gold[1::2])):
                folds[f"catch_{name}"], folds[f"false_alarm_{name}"] = audit_rates(
                    a.freq[:, half], a.gold[half], a.seen[:, half])
    return DomainMatrix(kappa, low, high, ec, _pairwise_agreement(a.freq), acc,
                        int(c.kappa.size), int(c.gold.size), int(a.freq.shape[1]),
                        prior=measures[1][0], refusal=measures[2][0], free=measures[3][0],
                        similarity=combined(measures), similarity_low=sim_low,
                        similarity_high=sim_high, n_prior=int(c.prior.size),
                        n_refusal=int(c.refusal.size), n_free=int(free_cols.size),
                        catch=catch, false_alarm=alarm, **folds)


def pool_matrix(profiles: Sequence[Profile], suite: Suite, bootstrap: int = 200,
                seed: int = 0, embedder: Embedder | None = None) -> PoolMatrix:
    """The pool's similarity matrix on the suite's probes, per domain and overall.

    Categorical probes give κp, error consistency, accuracy and the prior and refusal
    agreement; with an ``embedder``, free-text probes give the free-text similarity too.
    """
    probes = [p for p in suite.probes if p.type != "free"]
    free = [p for p in suite.probes if p.type == "free"] if embedder is not None else []
    models = tuple(p.model for p in profiles)
    version = hashlib.sha256(json.dumps(sorted(p.version for p in profiles)).encode()
                             ).hexdigest()[:12]
    out = PoolMatrix(models, version=version)
    if not probes:
        return out
    rng = np.random.default_rng(seed)
    arrays = _arrays(probes, profiles, rng)
    text = _texts(free, profiles, embedder) if free and embedder is not None else None
    domains = sorted({d for p in [*probes, *free] for d in p.domains})
    for name in [ALL, *domains]:
        cols = np.array([j for j, p in enumerate(probes) if name == ALL or name in p.domains],
                        dtype=np.int64)
        free_cols = np.array([j for j, p in enumerate(free) if name == ALL or name in p.domains],
                             dtype=np.int64)
        sub_text = text.subset(free_cols) if text is not None else None
        out.domains[name] = _domain_matrix(_subset(arrays, cols), sub_text, bootstrap, rng)
    return out


def _texts(probes: Sequence[Probe], profiles: Sequence[Profile], embedder: Embedder) -> _Text:
    """Embed every model's sampled answers to the free-text probes (one batch)."""
    k = max([1, *(len(r.texts) for prof in profiles for r in prof.records.values())])
    texts: list[str] = []
    valid = np.zeros((len(profiles), len(probes), k), dtype=bool)
    for i, prof in enumerate(profiles):
        for j, probe in enumerate(probes):
            record = prof.records.get(probe.id)
            answers = record.texts[:k] if record is not None else ()
            valid[i, j, :len(answers)] = True
            texts.extend([*answers, *([""] * (k - len(answers)))])
    vectors = embedder.embed(texts).astype(np.float64)
    valid &= usable_rows(vectors).reshape(valid.shape)
    emb = vectors.reshape(len(profiles), len(probes), k, -1)
    emb /= np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)
    means, own = text_summaries(emb, valid)
    return _Text(means, own, valid.sum(2) > 1)


def _subset(a: _Arrays, cols: npt.NDArray[np.int64]) -> _Arrays:
    return _Arrays(a.freq[:, cols], a.n_options[cols], a.gold[cols], a.correct[:, cols],
                   a.modal_correct[:, cols], a.seen[:, cols], [a.kinds[j] for j in cols],
                   a.own[:, cols], a.answered[:, cols])
