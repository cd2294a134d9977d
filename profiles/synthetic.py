"""A varied generator of synthetic profile pairs with a known ground truth.

Used by ``benchmarks/diff_quality.py`` and the statistical tests of the diff engine; it ships in
the package (as the scripted backend does) so that anyone can measure the engine on data of
their design. It builds :class:`~profiles.profile.Profile` objects directly (no store, no
backend), vectorised, so hundreds of pairs take seconds.

The world, per pair (everything drawn from the pair's seed unless said):

* ``domains`` domains of ``probes`` (low, high) four-option ``choice`` probes each (sizes drawn
  once from ``suite_seed``, so every pair of one run shares one suite).
* **Heterogeneous, correlated difficulty**: a domain difficulty ~ N(0, 0.8) plus a probe one ~
  N(0, 1); the correct option's logit is ``1.2 − difficulty``, so some probes are near-certain
  and some near-uniform, and hard probes cluster in hard domains.
* **A favourite distractor per domain**: one option letter per domain gets logit + N(0.6, 0.6)
  on every probe where it is wrong; the other wrong options get N(−0.6, 0.6).
* **Unparsed answers**: each (model, domain) has a rate drawn from ``unparsed`` (4–5 %); an
  unparsed sample has value ``None``.
* **Per-request nudges**: every request adds N(0, ``nudge_sd``²) to each option's logit (a seed,
  a cache, a batch: whatever a request shares). With ``one_request_per_probe`` the k samples of a
  probe share one request and its nudge (how collection worked before issue #13); otherwise
  every sample is its own request. :func:`nudge_tv` converts ``nudge_sd`` to the mean TV distance
  between two requests' answer distributions (0.06 at ``nudge_sd = 0.21``, 0.15 at 0.53).
* Model B is model A (same logits, same unparsed rates) with its own sampling stream, plus a
  planted :class:`Shift` in ``shift.domains`` domains: ``uniform`` moves ``points`` of answer
  mass on every probe of the domain from A's modal answer to another option; ``sparse`` moves
  3 × ``points`` (capped by the modal answer's mass) on a random third of its probes;
  ``refusal`` raises B's unparsed (refusal) rate in the domain by ``points``.

Each profile also carries a confirm collection (``confirm_records``): fresh requests drawn with
another seed, as :func:`profiles.collect.collect_rounds` makes them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from profiles.collect import Decoding
from profiles.probe import Probe
from profiles.profile import ProbeRecord, Profile
from profiles.suite import Suite, SuiteManifest

LETTERS = ("A", "B", "C", "D")
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
TEMPERATURE = 0.7
"""Logits are divided by it, as a backend sampling at temperature 0.7 does."""


@dataclass(frozen=True)
class Shift:
    """A planted difference: ``points`` (0–1) of answer mass, in ``domains`` domains."""

    points: float = 0.0
    domains: int = 1
    kind: Literal["uniform", "sparse", "refusal"] = "uniform"


@dataclass(frozen=True)
class World:
    """How the synthetic models and their collection behave (see the module docstring)."""

    domains: int = 12
    probes: tuple[int, int] = (20, 40)
    unparsed: tuple[float, float] = (0.04, 0.05)
    nudge_sd: float = 0.0
    one_request_per_probe: bool = False
    suite_seed: int = 0


@dataclass
class SyntheticPair:
    """Two profiles of one suite and the domains where they truly differ."""

    suite: Suite
    a: Profile
    b: Profile
    planted: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class _Layout:
    suite: Suite
    domain_of: IntArray  # (P,) domain index of every probe
    names: tuple[str, ...]


def synthetic_suite(world: World) -> Suite:
    """The suite every pair of ``world`` is drawn on."""
    return _layout(world).suite


def _layout(world: World) -> _Layout:
    return _layout_for(world.domains, world.probes, world.suite_seed)


@functools.lru_cache(maxsize=16)
def _layout_for(domains: int, sizes_range: tuple[int, int], suite_seed: int) -> _Layout:
    rng = np.random.default_rng(suite_seed)
    sizes = rng.integers(sizes_range[0], sizes_range[1] + 1, domains)
    names = tuple(f"d{i:02d}" for i in range(domains))
    probes = []
    for name, size in zip(names, sizes, strict=True):
        for i in range(int(size)):
            gold = LETTERS[int(rng.integers(0, 4))]
            text = f"[{name}] question {i}\n" + "\n".join(
                f"{o}. option {o}" for o in LETTERS) + "\nAnswer with the letter only."
            probes.append(Probe(id=f"{name}-{i:03d}", domains=(name,), type="choice",
                                messages=({"role": "user", "content": text},),
                                options=tuple(f"option {o}" for o in LETTERS), gold=gold))
    suite = Suite(SuiteManifest(name="synthetic", version="1", description="synthetic"),
                  tuple(probes))
    domain_of = np.repeat(np.arange(domains), sizes).astype(np.int64)
    return _Layout(suite, domain_of, names)


def _softmax(z: FloatArray) -> FloatArray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    out: FloatArray = e / e.sum(axis=-1, keepdims=True)
    return out


def _logits(layout: _Layout, rng: np.random.Generator) -> FloatArray:
    """Model A's logits ``(P, 4)``: correlated difficulty and a favourite distractor."""
    n_dom = len(layout.names)
    gold = np.array([LETTERS.index(p.gold or "A") for p in layout.suite.probes])
    difficulty = rng.normal(0, 0.8, n_dom)[layout.domain_of] + rng.normal(0, 1, gold.size)
    favourite = rng.integers(0, 4, n_dom)[layout.domain_of]
    z = rng.normal(-0.6, 0.6, (gold.size, 4))
    rows = np.arange(gold.size)
    fav_boost = rng.normal(0.6, 0.6, gold.size)
    z[rows, favourite] = np.where(favourite != gold, fav_boost, z[rows, favourite])
    z[rows, gold] = 1.2 - difficulty
    return z


def _shifted(p: FloatArray, probes: npt.NDArray[np.bool_], amount: float,
             rng: np.random.Generator) -> FloatArray:
    """Move ``amount`` of mass on the chosen probes from the modal option to another one."""
    out = p.copy()
    rows = np.flatnonzero(probes)
    top = p[rows].argmax(axis=1)
    target = (top + rng.integers(1, 4, rows.size)) % 4
    moved = np.minimum(amount, p[rows, top])
    out[rows, top] -= moved
    out[rows, target] += moved
    return out


def _draw(p: FloatArray, k: int, unparsed: FloatArray, world: World,
          rng: np.random.Generator) -> IntArray:
    """``k`` answers per probe ``(P, k)`` from per-request nudged distributions; -1 unparsed."""
    n = p.shape[0]
    logp = np.log(np.maximum(p, 1e-12))
    if world.nudge_sd > 0:
        shape = (n, 1, 4) if world.one_request_per_probe else (n, k, 4)
        q = _softmax(logp[:, None, :] + rng.normal(0, world.nudge_sd, shape))
        q = np.broadcast_to(q, (n, k, 4))
    else:
        q = np.broadcast_to(p[:, None, :], (n, k, 4))
    u = rng.random((n, k, 1))
    answers = (u > np.cumsum(q, axis=2)).sum(axis=2).clip(0, 3).astype(np.int64)
    lost = rng.random((n, k)) < unparsed[:, None]
    return np.where(lost, -1, answers)


def _records(layout: _Layout, answers: IntArray) -> dict[str, ProbeRecord]:
    out = {}
    for probe, row in zip(layout.suite.probes, answers.tolist(), strict=True):
        texts = tuple(LETTERS[v] if v >= 0 else "(no letter)" for v in row)
        values = tuple(LETTERS[v] if v >= 0 else None for v in row)
        out[probe.id] = ProbeRecord(probe.id, probe.id, texts, values)
    return out


def synthetic_pair(seed: int, k: int, shift: Shift | None = None,
                   world: World = World()) -> SyntheticPair:
    """One pair of profiles (k samples per probe, plus a confirm collection of k more)."""
    layout = _layout(world)
    rng = np.random.default_rng([seed, k])
    p_a = _softmax(_logits(layout, rng) / TEMPERATURE)
    rates = rng.uniform(*world.unparsed, len(layout.names))
    un_a = rates[layout.domain_of]
    p_b, un_b = p_a, un_a.copy()
    planted: set[str] = set()
    if shift is not None and shift.points > 0 and shift.domains > 0:
        chosen = rng.choice(len(layout.names), shift.domains, replace=False)
        planted = {layout.names[int(d)] for d in chosen}
        in_domain = np.isin(layout.domain_of, chosen)
        if shift.kind == "uniform":
            p_b = _shifted(p_a, in_domain, shift.points, rng)
        elif shift.kind == "sparse":
            third = in_domain & (rng.random(in_domain.size) < 1 / 3)
            p_b = _shifted(p_a, third, 3 * shift.points, rng)
        else:
            un_b = np.where(in_domain, un_a + shift.points, un_a)
    decoding = Decoding(samples=k)
    profiles = []
    for name, p, un in (("a", p_a, un_a), ("b", p_b, un_b)):
        screen = _records(layout, _draw(p, k, un, world, rng))
        confirm = _records(layout, _draw(p, k, un, world, rng))
        profiles.append(Profile(name, f"key-{name}", layout.suite.name,
                                layout.suite.version, decoding, screen, confirm))
    return SyntheticPair(layout.suite, profiles[0], profiles[1], planted)


def nudge_tv(nudge_sd: float, world: World = World(), n: int = 4000, seed: int = 0) -> float:
    """Mean TV distance between two requests' answer distributions at this nudge."""
    rng = np.random.default_rng(seed)
    layout = _layout(world)
    p = _softmax(_logits(layout, rng) / TEMPERATURE)
    rows = rng.integers(0, p.shape[0], n)
    logp = np.log(p[rows])
    one = _softmax(logp + rng.normal(0, nudge_sd, logp.shape))
    two = _softmax(logp + rng.normal(0, nudge_sd, logp.shape))
    return float(0.5 * np.abs(one - two).sum(axis=1).mean())
