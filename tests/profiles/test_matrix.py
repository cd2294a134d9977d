"""The pool matrix compares like with like: sampled answers unless every model has logprobs."""

from __future__ import annotations

import numpy as np
import pytest

from profiles.collect import Decoding
from profiles.matrix import pool_matrix, tempered
from profiles.probe import Probe
from profiles.profile import ProbeRecord, Profile
from profiles.suite import Suite, SuiteManifest


def suite(n: int) -> Suite:
    probes = tuple(
        Probe(id=f"p-{i:03d}", domains=("d",), type="choice",
              messages=({"role": "user", "content": f"Question {i}?"},),  # type: ignore[arg-type]
              options=("x", "y", "z"), gold="B")
        for i in range(n))
    return Suite(SuiteManifest(name="t", version="1"), probes)


def profile(name: str, s: Suite, values: tuple[str, ...],
            probs: tuple[float, ...] | None = None, temperature: float = 0.7) -> Profile:
    records = {p.id: ProbeRecord(p.id, p.id, values, values, probs) for p in s.probes}
    return Profile(name, name, s.name, s.version, Decoding(samples=len(values),
                                                           temperature=temperature), records)


def test_probabilities_stand_in_only_when_every_model_has_them() -> None:
    s = suite(10)
    # A samples B four times out of four but its first token spreads over the options
    with_probs = profile("a", s, ("B",) * 4, probs=(0.3, 0.4, 0.3))
    without = profile("b", s, ("B",) * 4)
    mixed = pool_matrix([with_probs, without], s, bootstrap=0).domains["d"]
    # both compared on sampled answers: always the same answer
    assert mixed.agreement[0, 1] == pytest.approx(1.0)
    both = pool_matrix([with_probs, profile("c", s, ("B",) * 4, probs=(0.3, 0.4, 0.3))], s,
                       bootstrap=0).domains["d"]
    expected = tempered((0.3, 0.4, 0.3), 0.7)
    assert both.agreement[0, 1] == pytest.approx(float(expected @ expected))


def test_tempered_probabilities_follow_the_sampling_temperature() -> None:
    np.testing.assert_allclose(tempered((0.2, 0.8), 1.0), [0.2, 0.8])
    np.testing.assert_allclose(tempered((0.2, 0.8), 0.5), [0.04 / 0.68, 0.64 / 0.68])
    np.testing.assert_allclose(tempered((0.2, 0.8), 0.0), [0.0, 1.0])


def test_modal_ties_are_broken_at_random_not_towards_option_a() -> None:
    s = suite(300)
    # every probe: A twice, B (gold) twice; argmax alone would call both models always wrong
    a = profile("a", s, ("A", "A", "B", "B"))
    b = profile("b", s, ("A", "A", "B", "B"))
    m = pool_matrix([a, b], s, bootstrap=0, seed=1).domains["d"]
    assert abs(m.error_consistency[0, 1]) < 0.2  # independent tie-breaks: no shared "errors"
