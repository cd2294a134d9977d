"""Recent routing decisions: bounded, expiring, claimed once."""

from __future__ import annotations

from router.pairing.decision import Decision
from router.pairing.recent import RecentDecisions

DECISION = Decision("a", "b", "audit", 0.5, "test")
TASK = ({"role": "user", "content": "hi"},)


def test_a_decision_expires_after_its_ttl() -> None:
    now = [0.0]
    recent = RecentDecisions(ttl_s=10, clock=lambda: now[0])
    routed = recent.add(DECISION, TASK)
    assert routed.id.startswith("dec_") and len(routed.id) == 36
    now[0] = 9.9
    assert recent.get(routed.id) == routed
    now[0] = 10.0
    assert recent.get(routed.id) is None and len(recent) == 0


def test_the_oldest_go_first_beyond_the_bound() -> None:
    recent = RecentDecisions(max_entries=2)
    first, second, third = (recent.add(DECISION, TASK) for _ in range(3))
    assert recent.get(first.id) is None
    assert recent.get(second.id) is not None and recent.get(third.id) is not None
    assert len(recent) == 2


def test_a_claimed_decision_is_gone() -> None:
    recent = RecentDecisions()
    routed = recent.add(DECISION, TASK)
    assert recent.claim(routed.id) == routed
    assert recent.claim(routed.id) is None and recent.get(routed.id) is None


def test_a_restored_decision_can_be_claimed_again_until_it_expires() -> None:
    now = [0.0]
    recent = RecentDecisions(ttl_s=10, clock=lambda: now[0])
    routed = recent.add(DECISION, TASK)
    now[0] = 5.0
    newer = recent.add(DECISION, TASK)
    assert recent.claim(routed.id) == routed
    recent.restore(routed)  # behind the newer entry, where expiry from the front does not look
    assert recent.claim(routed.id) == routed
    recent.restore(routed)
    now[0] = 10.0
    assert recent.get(routed.id) is None and recent.claim(routed.id) is None
    assert recent.get(newer.id) == newer


def test_the_oldest_go_first_beyond_the_bytes_kept() -> None:
    """Only the count was bounded: 10,000 routed tasks of a MiB each were kept an hour."""
    big = ({"role": "user", "content": "x" * 1000},)
    recent = RecentDecisions(max_bytes=2500)
    first, second, third = (recent.add(DECISION, big) for _ in range(3))
    assert recent.get(first.id) is None and len(recent) == 2
    assert recent.claim(second.id) == second  # a claim gives its bytes back
    fourth = recent.add(DECISION, big)
    assert recent.get(third.id) == third and recent.get(fourth.id) == fourth
    recent.restore(second)  # a restored decision counts again: the next one makes room
    fifth = recent.add(DECISION, big)
    assert recent.get(third.id) is None and recent.get(fourth.id) is None
    assert recent.get(second.id) == second and recent.get(fifth.id) == fifth
