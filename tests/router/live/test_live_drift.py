"""The online blend and the CUSUM drift test."""

from __future__ import annotations

import random

import pytest

from router.config import PRIOR_WEIGHT
from router.live.drift import BernoulliCusum, DriftMonitor, PairMonitor

KEY = ("alpha", "beta", "general")


@pytest.mark.parametrize("profiled", [True, False])
def test_stable_pair_raises_no_alarm_over_5000_comparisons(profiled: bool) -> None:
    rng, monitor = random.Random(7), DriftMonitor()
    alarms = sum(monitor.observe(KEY, rng.random() < 0.05, 0.05 if profiled else None)
                 is not None for _ in range(5000))
    print(f"false alarms over 5000 stable comparisons (profiled={profiled}): {alarms}")
    assert alarms == 0


def test_drift_is_detected_within_a_bounded_number_of_comparisons() -> None:
    rng, monitor = random.Random(3), DriftMonitor()
    for _ in range(200):
        assert monitor.observe(KEY, rng.random() < 0.05) is None
    for n in range(1, 201):  # noqa: B007  # n is reported after the loop
        event = monitor.observe(KEY, rng.random() < 0.5)
        if event is not None:
            break
    else:
        pytest.fail("no drift detected within 200 comparisons")
    print(f"drift 0.05 -> 0.5 detected after {n} comparisons")
    assert event.direction == "up" and event.observed > event.expected
    assert monitor.pairs[KEY].state == "drifted"


def test_downward_drift_is_detected_against_the_profile() -> None:
    monitor = DriftMonitor()
    events = [monitor.observe(KEY, False, predicted=0.4) for _ in range(100)]
    assert any(e is not None and e.direction == "down" for e in events)


def test_blend_weighs_the_profile_as_pseudo_observations() -> None:
    pair = PairMonitor(predicted=0.1)
    assert pair.blended_agreement() == pytest.approx(0.9)
    for _ in range(int(PRIOR_WEIGHT)):
        pair.observe(True)
    # 50 pseudo-observations at 0.9 agreement + 50 live disagreements
    assert pair.blended_agreement() == pytest.approx(0.45)
    assert PairMonitor(predicted=None).blended_agreement() == 0.5


def test_cusum_alarm_resets_the_statistic() -> None:
    cusum = BernoulliCusum(0.01)
    directions = [cusum.update(True) for _ in range(10)]
    assert "up" in directions and cusum.statistic < cusum.h
    assert cusum.alarm_statistic > cusum.h


def test_live_shifts_weigh_domains_by_comparisons_and_skip_unprofiled() -> None:
    from router.live.drift import EPOCH_COMPARISONS, DriftMonitor

    monitor = DriftMonitor(prior_weight=50)
    for _ in range(50):  # predicted 10 % disagreement, observed 100 %: agreement collapses
        monitor.observe(("p", "q", "math"), True, predicted=0.1)
    for _ in range(50):  # as predicted
        monitor.observe(("p", "q", "law"), False, predicted=0.0)
    for _ in range(20):  # unprofiled: no prediction to move from
        monitor.observe(("p", "r", "math"), True, predicted=None)
    shifts = monitor.live_shifts("p")
    assert set(shifts) == {"q"}
    shift, n = shifts["q"]
    assert n == 100
    # math: blended (50*0.9 + 0)/100 = 0.45 → -0.45; law: (50*1 + 50)/100 = 1.0 → 0.0
    assert abs(shift - (-0.45 * 50 + 0.0 * 50) / 100) < 1e-9
    assert monitor.epoch == 120 // EPOCH_COMPARISONS


@pytest.mark.parametrize("predicted", [0.0, None])
def test_a_pair_that_always_agrees_raises_no_downward_alarm(predicted: float | None) -> None:
    # the profile predicts 0 (clipped to P_FLOOR) or the burn-in saw no disagreement: the rate
    # cannot go below 0, so 10,000 agreements in a row are no drift
    monitor = DriftMonitor()
    events = [e for _ in range(10_000) if (e := monitor.observe(KEY, False, predicted))]
    assert events == []
    assert monitor.pairs[KEY].state == "ok"


def test_a_rate_that_falls_to_zero_from_above_the_floor_is_still_a_downward_drift() -> None:
    monitor = DriftMonitor()
    events = [e for _ in range(5000) if (e := monitor.observe(KEY, False, 0.02))]
    assert events and events[0].direction == "down"


def test_an_alarm_reports_the_rate_since_its_learned_baseline_not_since_the_burn_in() -> None:
    monitor = DriftMonitor(burn_in=100)
    for i in range(100):  # burn-in: 10 % (every tenth)
        assert monitor.observe(KEY, i % 10 == 0) is None
    for n in range(1, 401):  # noqa: B007  # then every comparison disagrees; n is checked below
        event = monitor.observe(KEY, True)
        if event is not None:
            break
    else:
        pytest.fail("no drift detected")
    assert event.comparisons == n
    assert event.observed == 1.0
