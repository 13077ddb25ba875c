"""Every answer the function gives, built here: Okta's success and error shapes, and each refusal.

Each outcome is one member of `Outcome`, which also says how loudly the hook's log line reports it.
Other modules decide *that* a call is refused; this module decides what the refusal looks like.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import StrEnum
from http import HTTPStatus
from typing import Any, NamedTuple, Protocol

from pydantic import BaseModel, ValidationError

from models import (
    ErrorCause,
    ErrorResponse,
    HookError,
    TelephonyActionResult,
    TelephonyCommand,
    TelephonyHookResponse,
)

NOT_DELIVERED = "The verification code could not be sent."
AUTH_FAILED = "The call's credentials were missing, wrong or insufficient."
MAX_BODY_BYTES = 64 * 1024  # Okta's requests are about 1 KB
MAX_EVENT_BODY_BYTES = 512 * 1024  # a batch of System Log events, a few KB each


class Outcome(StrEnum):
    """The short, stable label of every answer, for log queries and dashboards."""

    DELIVERED = "delivered"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    BODY_TOO_LARGE = "body_too_large"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    JWKS_UNAVAILABLE = "jwks_unavailable"
    INVALID_REQUEST = "invalid_request"
    BODY_TOO_SLOW = "body_too_slow"  # the hook's or event hook's body did not arrive within its deadline
    REQUEST_UNREADABLE = "request_unreadable"  # refused by the server before any route ran: not HTTP it reads
    EXPIRED = "expired"
    NUMBER_REFUSED = "number_refused"
    NOT_CONFIGURED = "not_configured"
    PROVIDER_ERROR = "provider_error"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    INTERNAL_ERROR = "internal_error"
    CODE_TOO_LONG = "code_too_long"
    GUARD_REFUSED = "guard_refused"  # the spend guard: a limit per number, range or country is full
    RETRY_NOT_SENT = "retry_not_sent"  # Okta's retry of a code Twilio may have accepted: not sent twice
    # Okta's event hook (/okta/events): Verify feedback, one outcome per event.
    EVENT_HOOK_VERIFIED = "event_hook_verified"
    EVENTS_RECEIVED = "events_received"  # one POST of events; each event has its own line and outcome
    EVENTS_UNFINISHED = "events_unfinished"  # answered by Okta's deadline while some events still ran
    FEEDBACK_APPROVED = "feedback_approved"
    FEEDBACK_NOT_PENDING = "feedback_not_pending"
    FEEDBACK_NO_PHONE = "feedback_no_phone"
    FEEDBACK_AMBIGUOUS = "feedback_ambiguous"  # the event fits several of the user's numbers: none proved
    FEEDBACK_FAILED = "feedback_failed"
    OKTA_API_UNAVAILABLE = "okta_api_unavailable"
    CONVERTED = "converted"  # the spend guard learnt the user's numbers converted (no Verify to tell)
    NOT_CONVERTED = "not_converted"  # ... and could not record it: no valid number, or its store failed
    NOT_PROVEN = "not_proven"  # an activation made by someone else, with no Verify approval to prove it
    # Twilio's delivery receipts, on /twilio/status
    RECEIPT = "receipt"
    RECEIPT_NOT_DELIVERED = "receipt_not_delivered"
    RECEIPT_REPEATED = "receipt_repeated"  # the same status of the same message or call again: counted once
    RECEIPT_FORBIDDEN = "receipt_forbidden"
    RECEIPT_INVALID = "receipt_invalid"
    RECEIPT_TOO_SLOW = "receipt_too_slow"  # its body did not arrive within the receipt's deadline
    RECEIPT_BUSY = "receipt_busy"  # every reader taken, and the body did not arrive at once

    @property
    def severity(self) -> int:
        return _SEVERITY.get(self, logging.WARNING)


# What an admin must act on is an ERROR; a code delivered is INFO; the caller's mistakes are WARNING.
_SEVERITY: dict[Outcome, int] = {
    Outcome.DELIVERED: logging.INFO,
    Outcome.JWKS_UNAVAILABLE: logging.ERROR,
    Outcome.NOT_CONFIGURED: logging.ERROR,
    Outcome.PROVIDER_ERROR: logging.ERROR,
    Outcome.PROVIDER_UNAVAILABLE: logging.ERROR,
    Outcome.INTERNAL_ERROR: logging.ERROR,
    Outcome.CODE_TOO_LONG: logging.ERROR,
    Outcome.EVENT_HOOK_VERIFIED: logging.INFO,
    Outcome.EVENTS_RECEIVED: logging.INFO,
    Outcome.FEEDBACK_APPROVED: logging.INFO,
    Outcome.FEEDBACK_NOT_PENDING: logging.INFO,
    Outcome.FEEDBACK_FAILED: logging.ERROR,
    Outcome.OKTA_API_UNAVAILABLE: logging.ERROR,
    Outcome.CONVERTED: logging.INFO,
    Outcome.NOT_PROVEN: logging.INFO,
    Outcome.RECEIPT: logging.INFO,
    Outcome.RECEIPT_REPEATED: logging.INFO,
}


class Headers(Protocol):
    """What we read of a request's headers (Flask's Headers, or a dict in tests)."""

    def get(self, key: str, /) -> str | None: ...


# Records in the function are NamedTuples, not dataclasses: cheaper to define at every cold start.
class Answer(NamedTuple):
    """An HTTP answer, plus what the route's log line says about it. Built whole, never changed after."""

    status: HTTPStatus
    body: BaseModel | None  # None: no body (Twilio's receipts need none)
    outcome: Outcome
    log_fields: dict[str, Any]
    headers: dict[str, str]
    note: str = ""  # the log line's message after the route and outcome, e.g. 'sms to +1******0123'
    # Bookkeeping the caller need not wait for: run once the answer has been sent (telephony/app.py).
    after_sent: tuple[Callable[[], None], ...] = ()

    def json(self) -> str:
        return "" if self.body is None else self.body.model_dump_json(by_alias=True, exclude_none=True)

    def adding(self, fields: dict[str, Any], note: str = "") -> Answer:
        """The same answer, its log line told more: what the route knew before it was refused."""
        return self._replace(log_fields={**fields, **self.log_fields}, note=self.note or note)

    def then(self, task: Callable[[], None]) -> Answer:
        """The same answer, with `task` to run once it has been sent."""
        return self._replace(after_sent=(*self.after_sent, task))


class Refused(Exception):
    """Raised at any step of any route to stop it and answer with `answer` (usually an error object)."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.outcome)
        self.answer = answer


def successful(
    *, provider: str, transaction_id: str, metadata: str, log_fields: dict[str, Any] | None = None
) -> Answer:
    """The code was accepted by the provider: SUCCESSFUL stops Okta's own fallback delivery."""
    result = TelephonyActionResult(
        status="SUCCESSFUL", provider=provider, transaction_id=transaction_id, transaction_metadata=metadata
    )
    return Answer(
        status=HTTPStatus.OK,
        body=TelephonyHookResponse(commands=[TelephonyCommand(value=[result])]),
        outcome=Outcome.DELIVERED,
        log_fields=log_fields or {},
        headers={},
    )


def refused(
    status: HTTPStatus,
    outcome: Outcome,
    summary: str,
    causes: list[ErrorCause] | None = None,
    *,
    log_fields: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Refused:
    """An error answer, ready to raise. `summary` reaches end users: keep it plain and safe."""
    body = ErrorResponse(error=HookError(error_summary=summary, error_causes=causes or []))
    return Refused(Answer(status, body, outcome, log_fields or {}, headers or {}))


def cause(summary: str, reason: str, location: str) -> ErrorCause:
    return ErrorCause(error_summary=summary, reason=reason, location=location)


# ------------------------------------------------------------------------- refusals before the work
# Each names the route that refuses (`route`, e.g. "telephony hook"): a caller of one route must not be
# told about another.


def method_not_allowed(route: str, allow: str = "POST") -> Refused:
    methods = " and ".join(method.strip() for method in allow.split(","))
    return refused(
        HTTPStatus.METHOD_NOT_ALLOWED,
        Outcome.METHOD_NOT_ALLOWED,
        f"The {route} accepts {methods} only.",
        headers={"Allow": allow},
    )


def body_too_large(route: str, limit: int = MAX_BODY_BYTES) -> Refused:
    return refused(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        Outcome.BODY_TOO_LARGE,
        f"The {route} request is too large.",
        [cause(f"Bodies over {limit} bytes are refused.", "BODY_TOO_LARGE", "body")],
    )


def body_unreadable(route: str) -> Refused:
    """A body the server could not read: its chunked framing is broken, or the caller closed it early."""
    return refused(
        HTTPStatus.BAD_REQUEST,
        Outcome.INVALID_REQUEST,
        f"The {route} request is invalid: body",
        [cause("The body could not be read: its framing is broken, or it ended early.", "BODY_UNREADABLE", "body")],
        log_fields={"invalid_fields": ["body"]},
    )


def body_too_slow(route: str, seconds: float) -> Refused:
    return refused(
        HTTPStatus.REQUEST_TIMEOUT,
        Outcome.BODY_TOO_SLOW,
        f"The {route} request's body did not arrive in time.",
        [cause(f"The body did not arrive within {seconds:g} s of the request.", "BODY_TOO_SLOW", "body")],
    )


def verification_challenge_missing() -> Refused:
    return refused(
        HTTPStatus.BAD_REQUEST,
        Outcome.INVALID_REQUEST,
        "The event hook's GET is Okta's verification: X-Okta-Verification-Challenge is missing.",
    )


def unauthorized(
    hint: str, location: str, *, route: str = "telephony hook", status: HTTPStatus = HTTPStatus.UNAUTHORIZED
) -> Refused:
    """The one shape of every rejection. The caller may be anyone (the URL is public), so the answer
    names no header, scope or failed check; the admin reads `hint` and `location` in the log line."""
    forbidden = status == HTTPStatus.FORBIDDEN
    return refused(
        status,
        Outcome.FORBIDDEN if forbidden else Outcome.UNAUTHORIZED,
        f"The {route} refused the call: authentication failed.",
        [cause(AUTH_FAILED, "FORBIDDEN" if forbidden else "UNAUTHORIZED", "authentication")],
        log_fields={"auth_problem": hint, "auth_location": location},
    )


def jwks_unavailable() -> Refused:
    return refused(
        HTTPStatus.SERVICE_UNAVAILABLE,
        Outcome.JWKS_UNAVAILABLE,
        "The telephony hook cannot check the caller's token right now.",
    )


def invalid_request(route: str, error: ValidationError) -> Refused:
    """400 naming every bad field by its JSON path (bad JSON is 'body'); never echoes the input."""
    causes = [
        cause(
            summary=issue["msg"],
            reason=issue["type"].upper(),
            location=".".join(str(part) for part in issue["loc"]) or "body",
        )
        for issue in error.errors(include_input=False, include_url=False, include_context=False)
    ]
    fields = sorted({item.location for item in causes})
    return refused(
        HTTPStatus.BAD_REQUEST,
        Outcome.INVALID_REQUEST,
        f"The {route} request is invalid: " + ", ".join(fields),
        causes,
        log_fields={"invalid_fields": fields},
    )


# What a request the server could not read as HTTP got wrong, by the part it names.
_UNREADABLE = {
    "headers": "The headers could not be read as HTTP, or they are too large (a line too long, or too many).",
    "Expect": "The Expect header asks for what the server does not do.",
    "Transfer-Encoding": "The Transfer-Encoding is not one the server reads.",
}


def request_unreadable(status: HTTPStatus, part: str) -> Answer:
    """A request the server could not read as HTTP (`part`: "headers", "request line"...), refused before
    any route ran: the answer names no route, and nothing of what was sent."""
    return refused(
        status,
        Outcome.REQUEST_UNREADABLE,
        f"The request is invalid: {part}",
        [cause(_UNREADABLE.get(part, f"The {part} could not be read as HTTP."), "REQUEST_UNREADABLE", part)],
        log_fields={"invalid_fields": [part]},
    ).answer


def head_too_slow(seconds: float) -> Answer:
    """A request whose head was still coming in when its deadline passed, refused before any route ran."""
    return refused(
        HTTPStatus.REQUEST_TIMEOUT,
        Outcome.REQUEST_UNREADABLE,
        "The request did not arrive in time.",
        [cause(f"The request's head did not arrive within {seconds:g} s.", "REQUEST_TOO_SLOW", "request")],
        log_fields={"invalid_fields": ["request"]},
    ).answer


def internal_error(route: str) -> Answer:
    """A bug of ours: still an answer in Okta's shape, naming the route."""
    return refused(HTTPStatus.INTERNAL_SERVER_ERROR, Outcome.INTERNAL_ERROR, f"The {route} failed.").answer


# ------------------------------------------ refusals to send: 200 + error object, and Okta falls back


def expired() -> Refused:
    return refused(
        HTTPStatus.OK,
        Outcome.EXPIRED,
        "The verification code has expired.",
        [cause("otpExpires is in the past; the code was not sent.", "OTP_EXPIRED", "data.messageProfile.otpExpires")],
    )


def number_refused(reason: str, country: str, number_type: str) -> Refused:
    return refused(
        HTTPStatus.OK,
        Outcome.NUMBER_REFUSED,
        reason,
        [cause(reason, "PHONE_POLICY", "data.messageProfile.phoneNumber")],
        log_fields={"country": country, "number_type": number_type},
    )


def guard_refused(scope: str, log_fields: dict[str, Any]) -> Refused:
    """The spend guard holds the code: 200 + error object, answered at once (a timeout or a 5xx would
    only make Okta send it through its own provider). The user reads a plain sentence, never the limit."""
    return refused(
        HTTPStatus.OK,
        Outcome.GUARD_REFUSED,
        "Too many verification codes were requested for this phone number or its area. Try again later.",
        [cause(f"The spend guard's {scope} limit is reached.", "SPEND_GUARD", "data.messageProfile.phoneNumber")],
        log_fields=log_fields,
    )


def retried(provider: str, transaction_id: str) -> Answer:
    """Okta's retry of a request whose code was sent: the first call's transaction id, nothing sent."""
    return successful(
        provider=provider,
        transaction_id=transaction_id,
        metadata="retry of a code already sent; nothing sent again",
        log_fields={"twilio_sid": transaction_id},
    )


def retry_not_sent(*, in_flight: bool) -> Refused:
    """Okta's retry of a request whose first attempt Twilio may have accepted (its answer timed out or
    was a 5xx), or is still with Twilio: sending again could send the code twice."""
    state = "is still being sent" if in_flight else "may have reached the provider"
    return refused(
        HTTPStatus.OK,
        Outcome.RETRY_NOT_SENT,
        NOT_DELIVERED,
        [cause(f"The first attempt of this request {state}: it is not sent twice.", "RETRY_NOT_SENT", "data")],
    )


def not_configured(missing: str) -> Refused:
    return refused(
        HTTPStatus.OK,
        Outcome.NOT_CONFIGURED,
        NOT_DELIVERED,
        [cause(f"The hook is missing {missing}.", "HOOK_NOT_CONFIGURED", "configuration")],
    )


def code_too_long(length: int, maximum: int) -> Refused:
    """Twilio Verify takes custom codes of 4 to 10 characters: refused before Twilio, so Okta falls back."""
    return refused(
        HTTPStatus.OK,
        Outcome.CODE_TOO_LONG,
        NOT_DELIVERED,
        [
            cause(
                f"Twilio Verify accepts custom codes of at most {maximum} characters; Okta's has {length}.",
                "VERIFY_CODE_TOO_LONG",
                "data.messageProfile.otpCode",
            )
        ],
        log_fields={"otp_length": length},
    )


def provider_error(summary: str, hint: str, reason: str, location: str, log_fields: dict[str, Any]) -> Refused:
    """Twilio refused the code: the admin sees why, Okta falls back."""
    return refused(
        HTTPStatus.OK, Outcome.PROVIDER_ERROR, summary, [cause(hint, reason, location)], log_fields=log_fields
    )


def provider_unavailable(hint: str, reason: str, log_fields: dict[str, Any]) -> Refused:
    """Twilio did not answer in time, or could not be reached."""
    return refused(
        HTTPStatus.OK,
        Outcome.PROVIDER_UNAVAILABLE,
        NOT_DELIVERED,
        [cause(hint, reason, "https://status.twilio.com")],
        log_fields=log_fields,
    )


# ---------------------------------------------------------- answers to Twilio's delivery receipts
# Twilio reads only the status; the log line says why.


def receipt_refused(status: HTTPStatus, outcome: Outcome, problem: str) -> Refused:
    return Refused(Answer(status, None, outcome, {"receipt_problem": problem}, {}, f"refused: {problem}"))


def receipt_forbidden(problem: str) -> Refused:
    return receipt_refused(HTTPStatus.FORBIDDEN, Outcome.RECEIPT_FORBIDDEN, problem)


def receipt_invalid(problem: str) -> Refused:
    return receipt_refused(HTTPStatus.BAD_REQUEST, Outcome.RECEIPT_INVALID, problem)


def receipt_too_large(limit: int = MAX_BODY_BYTES) -> Refused:
    return receipt_refused(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE, Outcome.BODY_TOO_LARGE, f"bodies over {limit} bytes are refused"
    )


def receipt_too_slow(seconds: float) -> Refused:
    return receipt_refused(
        HTTPStatus.REQUEST_TIMEOUT, Outcome.RECEIPT_TOO_SLOW, f"the body did not arrive within {seconds:g} s"
    )


def receipt_busy(reading: int) -> Refused:
    """Every reader was taken, and the body did not arrive within the short deadline left for it: a
    stalled upload holds a thread no longer than that."""
    refusal = receipt_refused(
        HTTPStatus.SERVICE_UNAVAILABLE, Outcome.RECEIPT_BUSY, f"{reading} receipts were being read already"
    )
    return Refused(refusal.answer._replace(headers={"Retry-After": "1"}))


def receipt_method_not_allowed() -> Refused:
    refusal = receipt_refused(HTTPStatus.METHOD_NOT_ALLOWED, Outcome.METHOD_NOT_ALLOWED, "receipts are POSTed")
    return Refused(refusal.answer._replace(headers={"Allow": "POST"}))


def receipt(outcome: Outcome, log_fields: dict[str, Any], note: str) -> Answer:
    """A receipt taken: 204, Twilio needs nothing more."""
    return Answer(HTTPStatus.NO_CONTENT, None, outcome, log_fields, {}, note)


# ------------------------------------------------------------------------ Okta's event hook answers


def events_received(body: BaseModel, counts: dict[str, int]) -> Answer:
    """Okta gets its 200 in time; users still running log their own lines when their bounded calls end.
    `counts` is the POST's summary: its events, and how many were not acted on, by why."""
    outcome = Outcome.EVENTS_UNFINISHED if counts.get("unfinished") else Outcome.EVENTS_RECEIVED
    return Answer(HTTPStatus.OK, body, outcome, dict(counts), {})


def event_hook_verified(body: BaseModel) -> Answer:
    return Answer(HTTPStatus.OK, body, Outcome.EVENT_HOOK_VERIFIED, {}, {})
