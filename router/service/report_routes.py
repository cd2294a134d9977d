"""``POST /v1/diffs``: a framework reports the answers of a pair it called itself.

Agent frameworks that run the calls themselves (their own SDKs, tools, retries) ask
``POST /v1/route`` for a pair and get a ``decision_id``; once both models have answered, they
post the two assistant messages here. The report is compared by the engine's comparer (tool
calls, structured output, text, noise-aware), recorded through the same sink as a paired
call's comparison (mode ``reported``), so it counts in ``/v1/diffs``, the disagreement rates,
drift and ``/metrics``, and the comparison is the answer::

    route → (framework calls primary and partner) → report → compare → record

Bad bodies are 400s naming the field, an unknown, expired or already reported id a 404, a
``model`` that is not the decision's a 400, a body over ``server.max_body_bytes`` a 413.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from profiles.protocol import SampleRequest
from router.errors import BadRequestError, DecisionNotFoundError
from router.paired.answer import Answer
from router.paired.call import PairedCall, PairedOutcome
from router.pairing.decision import Decision
from router.pairing.recent import RecentDecisions, Routed
from router.service.middleware import REQUEST_ID
from router.service.schema import ReportBody, parse_report, read_json
from router.service.state import STATE
from router.service.wire import json_response


def add_routes(app: web.Application) -> None:
    """Register ``POST /v1/diffs`` (``GET`` on the same path lists live diffs)."""
    app.router.add_post("/v1/diffs", report)


async def report(request: web.Request) -> web.Response:
    """Compare and record the two answers of a routed pair; the comparison is the answer."""
    state = request.app[STATE]
    body = parse_report(await read_json(request))
    routed = state.decisions.get(body.decision_id)
    if routed is None:
        raise DecisionNotFoundError(body.decision_id, state.decisions.ttl_s)
    _check_models(body, routed.decision)
    if state.decisions.claim(body.decision_id) is None:  # reported meanwhile
        raise DecisionNotFoundError(body.decision_id, state.decisions.ttl_s)
    messages = (tuple(m.model_dump(exclude_none=True) for m in body.messages)
                if body.messages else routed.messages)
    call = PairedCall(routed.decision, SampleRequest(messages=messages),
                      request_id=request[REQUEST_ID])
    work = asyncio.ensure_future(state.engine.report(
        call, Answer.of_message(body.primary.message.model_dump(exclude_none=True)),
        Answer.of_message(body.partner.message.model_dump(exclude_none=True))))
    work.add_done_callback(lambda done: _settled(state.decisions, routed, done))
    state.engine.hold(work)  # a shutdown waits for it (shutdown_timeout) before the store closes
    # shielded: a client that goes away (a timeout cancels its handler) does not take the
    # claimed report with it — it is compared and recorded all the same, so its retry is told
    # the truth (already reported), not that a report nobody recorded was
    outcome = await asyncio.shield(work)
    return json_response(report_json(body.decision_id, outcome))


def _settled(decisions: RecentDecisions, routed: Routed,
             work: asyncio.Future[PairedOutcome]) -> None:
    """A report that failed recorded nothing (a store failure is in the outcome): the decision
    stays reportable, a retry is not told it never existed."""
    if work.cancelled() or work.exception() is not None:
        decisions.restore(routed)


def _check_models(body: ReportBody, decision: Decision) -> None:
    for side, given, expected in (("primary", body.primary.model, decision.primary),
                                  ("partner", body.partner.model, decision.partner)):
        if given is not None and given != expected:
            raise BadRequestError(
                f"{side}.model '{given}' is not the decision's {side} '{expected}'",
                param=f"{side}.model", code="model_mismatch")


def report_json(decision_id: str, outcome: PairedOutcome) -> dict[str, Any]:
    """The comparison of a report, as the answer of ``POST /v1/diffs``."""
    d, c = outcome.call.decision, outcome.comparison
    out: dict[str, Any] = {
        "object": "diffroute.report", "decision_id": decision_id, "role": d.role,
        "primary": d.primary, "partner": d.partner, "mode": "reported",
        "domains": list(outcome.call.domains), "live_diff_id": outcome.live_diff_id,
        "agreement": None, "flagged": False, "method": None, "divergence": None,
        "threshold": None, "diff": None}
    if c is not None:
        out |= {"agreement": round(c.agreement, 6), "flagged": c.flagged, "method": c.method,
                "divergence": round(c.divergence, 6), "threshold": c.threshold,
                "diff": c.unified_diff or None}
    if outcome.live_diff_error is not None:  # flagged, but the store failed: never silent
        out["live_diff_error"] = outcome.live_diff_error
    return out
