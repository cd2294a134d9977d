"""What one paired call is: the client's options, the prepared call, and its outcome."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from profiles.protocol import Message, SampleRequest
from router.paired.compare import Comparison
from router.pairing.decision import Decision, Role, RouteRequest

AuditMode = Literal["concurrent", "review"]

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


def partner_request(request: SampleRequest) -> SampleRequest:
    """What the partner (or a shadowing primary) is asked: one answer, no logprobs."""
    return dataclasses.replace(request, n=1, top_logprobs=0)


def review_request(request: SampleRequest, answer: str) -> SampleRequest:
    """The conversation plus the primary's answer and the review instruction."""
    review: Message = {"role": "user",
                       "content": f"{REVIEW_INSTRUCTION}\n\nAnswer to review:\n{answer}"}
    return dataclasses.replace(request, n=1, top_logprobs=0,
                               messages=(*request.messages, review), completion_prompt=None)
