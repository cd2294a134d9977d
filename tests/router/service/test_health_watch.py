"""The pool's health, checked in the background: a check that fails is logged without what
its exception carries."""

from __future__ import annotations

from typing import Any, cast

from structlog.testing import capture_logs

from router.pool import Pool
from router.service.health_watch import HealthWatch


class _Failing:
    """A pool whose check fails as encoding a key with curly quotes into a header did."""

    async def status(self) -> Any:
        raise UnicodeEncodeError("latin-1", "Bearer “sk-live-SECRET”", 7, 8,
                                 "ordinal not in range(256)")

    def with_circuits(self, statuses: Any) -> Any:
        return statuses


async def test_a_failed_check_is_logged_without_the_text_it_could_not_encode() -> None:
    """The warning logged ``repr(exc)``: a UnicodeEncodeError's repr holds the whole text,
    here an ``Authorization`` header and its key."""
    watch = HealthWatch(cast(Pool, _Failing()), interval_s=60)
    with capture_logs() as logs:
        assert await watch.current() == []
    failed = [e for e in logs if e["event"] == "health.check_failed"]
    assert len(failed) == 1 and "UnicodeEncodeError" in failed[0]["error"]
    assert "SECRET" not in str(logs)
