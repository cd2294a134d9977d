"""What one paired call is: the client's options, the prepared call, and its outcome."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from profiles.protocol import Message, SampleRequest, SampleResult
from router.paired.answer import Answer
from router.paired.compare import Comparison
from router.pairing.decision import Decision, Role, RouteRequest

AuditMode = Literal["concurrent", "review"]

REVIEW_DROPPED = frozenset({"stream", "stream_options", "response_format", "logprobs",
                            "top_logprobs", "n", "parallel_tool_calls"})
"""Fields of the client's body a reviewer is not sent: its reply is one plain text."""
REVIEW_INSTRUCTION = (
    "You are auditing another assistant. Review its answer to the conversation above. "
    "If the answer is correct and complete, reply with exactly AGREE. Otherwise reply "
    "DISAGREE on the first line, then give the correct answer."
)


@dataclass(frozen=True, slots=True)
class PairedOptions:
    """Per-request options (the ``diffroute`` body object or ``x-diffroute-*`` headers)."""

    role: Role | None = None
    partner: str | None = None
    candidates: tuple[str, ...] | None = None
    audit_mode: AuditMode | None = None
    shadow_rate: float | None = None
    domain: str | None = None


@dataclass(frozen=True, slots=True)
class Fallback:
    """A partner that failed, and why (the response's ``diffroute.fallback``)."""

    failed: str
    error: str

    def to_json(self) -> dict[str, str]:
        return {"failed": self.failed, "error": self.error}


@dataclass(frozen=True, slots=True)
class PairedCall:
    """A prepared paired call: the decision and what to send."""

    decision: Decision
    request: SampleRequest
    audit_mode: AuditMode = "concurrent"
    shadow: bool = False
    request_id: str = ""
    route: RouteRequest | None = None
    """What the policy was asked (``None`` when the client named the partner): asked again,
    without the failed auditor, for the next one."""
    fallback: Fallback | None = None
    """The partner that failed and was replaced: the assistant (the primary answers instead)
    or the auditor (the policy's next auditor audits instead)."""
    body: Mapping[str, Any] | None = None
    """The client's body as sent (less ``diffroute``); a model whose backend forwards bodies
    is sent it as it is (tools and all), any other model ``request``."""

    @property
    def models(self) -> tuple[str, str]:
        """The two models the call sends to: the answering one first."""
        d = self.decision
        return (self.answering, d.partner if d.role == "audit" else d.primary)

    @property
    def answering(self) -> str:
        """The model whose answer the client gets."""
        if self.decision.role == "audit" or self.fallback is not None:
            return self.decision.primary
        return self.decision.partner

    @property
    def domains(self) -> tuple[str, ...]:
        weights = self.decision.domains
        return tuple(sorted((d for d, w in weights.items() if w > 0), key=lambda d: -weights[d]))


@dataclass(frozen=True, slots=True)
class PairedOutcome:
    """What a paired call produced; :meth:`to_json` is the response's ``diffroute`` object."""

    call: PairedCall
    comparison: Comparison | None = None
    live_diff_id: str | None = None
    partner_error: str | None = None
    live_diff_error: str | None = None
    """Why a flagged comparison could not be stored (a full disk): never silent."""

    def to_json(self) -> dict[str, Any]:
        d, c = self.call.decision, self.comparison
        out: dict[str, Any] = {
            "role": d.role, "primary": d.primary, "partner": d.partner,
            "answered_by": self.call.answering,
            "agreement": None if c is None else round(c.agreement, 6),
            "flagged": False if c is None else c.flagged,
            "live_diff_id": self.live_diff_id, "reason": d.reason, "score": d.score,
            "domains": list(self.call.domains), "profile_version": d.profile_version,
        }
        if d.role == "audit":
            out["audit_mode"] = self.call.audit_mode
        else:
            out["shadow"] = self.call.shadow
        if self.partner_error is not None:
            out["partner_error"] = self.partner_error
        if self.call.fallback is not None:
            out["fallback"] = self.call.fallback.to_json()
        if self.live_diff_error is not None:
            out["live_diff_error"] = self.live_diff_error
        return out


@dataclass(frozen=True, slots=True)
class Ask:
    """What one model of a paired call is sent: the translated request, and the body a
    forwarding backend passes through instead (``None``: there is none, e.g. a report)."""

    request: SampleRequest
    body: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ModelReply:
    """One model's reply: the comparer's view of it, and what the client may be given."""

    answer: Answer
    result: SampleResult | None = None
    """A translated call's result."""
    completion: dict[str, Any] | None = None
    """A forwarded call's ``chat.completion``, as the upstream gave it."""


def answering_ask(call: PairedCall) -> Ask:
    """What the answering model is sent: the request as the client made it."""
    return Ask(call.request, call.body)


def partner_ask(call: PairedCall) -> Ask:
    """What the partner (or a shadowing primary) is sent: the same, as one unstreamed answer."""
    body = None if call.body is None else {
        k: v for k, v in call.body.items() if k not in PARTNER_DROPPED}
    return Ask(partner_request(call.request), body)


PARTNER_DROPPED = frozenset({"stream", "stream_options", "logprobs", "top_logprobs"})
"""Fields of the client's body the partner is not sent: its answer is one whole message whose
logprobs nobody reads (as :func:`partner_request` drops them from a translated request), and a
model that does not take ``logprobs`` would refuse it and lose the audit."""


def review_ask(call: PairedCall, answer: Answer) -> Ask:
    """The conversation plus the primary's answer (its tool calls included) to review. A
    forwarded reviewer keeps the tool definitions as context but may not call them."""
    text = answer.render()
    body = None
    if call.body is not None:
        body = {k: v for k, v in call.body.items() if k not in REVIEW_DROPPED}
        body["messages"] = [*call.body.get("messages", ()), _review_message(text)]
        if body.get("tools"):
            body["tool_choice"] = "none"
    return Ask(review_request(call.request, text), body)


def _review_message(answer: str) -> Message:
    return {"role": "user", "content": f"{REVIEW_INSTRUCTION}\n\nAnswer to review:\n{answer}"}


def partner_request(request: SampleRequest) -> SampleRequest:
    """What the partner (or a shadowing primary) is asked: one answer, no logprobs."""
    if request.n == 1 and request.top_logprobs == 0:  # the usual case: no copy to make
        return request
    return dataclasses.replace(request, n=1, top_logprobs=0)


def review_request(request: SampleRequest, answer: str) -> SampleRequest:
    """The conversation plus the primary's answer and the review instruction."""
    return dataclasses.replace(request, n=1, top_logprobs=0,
                               messages=(*request.messages, _review_message(answer)),
                               completion_prompt=None)
