"""The one table of Twilio's error codes: what the hook tells Okta, and what receipts and the event
hook's log lines tell the admin.

Okta shows `errorSummary` to admins and end users, so summaries are plain and never carry Twilio's
own message text (it contains the recipient's number, sometimes the message body). The admin gets the
Twilio code, a hint, and the link to Twilio's page for the code.
"""

from __future__ import annotations

from typing import NamedTuple

from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException

from telephony.answers import NOT_DELIVERED, Refused, provider_error, provider_unavailable
from telephony.outbound import ANSWER_TOO_LARGE
from telephony.twilio_facts import SMS_MAX_CHARS
from telephony.twilio_http import TwilioUnavailable


class TwilioError(NamedTuple):
    """What one Twilio error code means to the people who see it."""

    summary: str  # for end users and admins alike: Okta shows it
    meaning: str  # what happened, for the admin reading Okta's hook error or our logs
    fix: str = ""  # what the admin can do about it, when anything

    @property
    def hint(self) -> str:
        return f"{self.meaning} {self.fix}".strip()


_SENDER = TwilioError(
    NOT_DELIVERED,
    "The Twilio sender cannot send this.",
    "Check TWILIO_FROM_NUMBER or the Messaging Service's senders.",
)
_INVALID_TO = TwilioError("The phone number is not valid.", "Twilio says the To number is not a valid phone number.")
_NOT_MOBILE = TwilioError(
    "The phone number cannot receive text messages.",
    "Not a mobile number: SMS cannot reach it.",
    "Enrol a mobile number, or use voice for this user.",
)

# Every code the hook's answers, the delivery receipts and the event hook's Verify updates meet: one
# table, so the same code reads the same wherever an admin meets it.
TWILIO_ERRORS: dict[int, TwilioError] = {
    20003: TwilioError(
        NOT_DELIVERED,
        "Twilio rejected the function's credentials.",
        "Check the account SID and auth token or API key.",
    ),
    20404: TwilioError(NOT_DELIVERED, "Twilio does not know the account, service or resource the function addressed."),
    20429: TwilioError(
        "Too many codes are being sent right now; try again shortly.", "Twilio is rate-limiting this account."
    ),
    21210: _SENDER,
    21211: _INVALID_TO,
    21212: _SENDER,
    21214: TwilioError("The phone number cannot be reached.", "Twilio cannot route a call to this number."),
    21215: TwilioError(
        "Calls to this country are not enabled.",
        "Voice Geo Permissions do not allow calls to this country.",
        "Enable the country in Twilio's Voice Geo Permissions, if you mean to.",
    ),
    21216: TwilioError("The phone number cannot be called.", "This number is blocked for the Twilio account."),
    21217: _INVALID_TO,
    21408: TwilioError(
        "Text messages to this country are not enabled.",
        "Messaging Geo Permissions do not allow this country.",
        "Enable the country in Twilio's Messaging Geo Permissions, if you mean to.",
    ),
    21606: _SENDER,
    21610: TwilioError(
        "This number has opted out of text messages.",
        "The user replied STOP: Twilio will not text this number.",
        "Ask the user to text START to the sender, or use voice.",
    ),
    21611: TwilioError(NOT_DELIVERED, "The sender's outgoing message queue is full."),
    21612: TwilioError(
        "The phone number cannot receive this message.",
        "Twilio cannot route a message from this sender to this number.",
        "Check the sender's country support and Geo Permissions.",
    ),
    21614: _NOT_MOBILE,
    21617: TwilioError(
        NOT_DELIVERED, f"The SMS text is longer than {SMS_MAX_CHARS} characters.", "Shorten SMS_TEMPLATE."
    ),
    30001: TwilioError(
        NOT_DELIVERED,
        "Queue overflow: the sender sent faster than its throughput.",
        "Use a Messaging Service with more senders, or a short code.",
    ),
    30002: TwilioError(NOT_DELIVERED, "Account suspended.", "Check the Twilio console's account status and billing."),
    30003: TwilioError(
        NOT_DELIVERED,
        "Unreachable destination handset (off, or out of coverage).",
        "Nothing to fix: the user retries once the phone is on, or uses another factor.",
    ),
    30004: TwilioError(
        NOT_DELIVERED,
        "Message blocked by the recipient or their carrier.",
        "Ask the user to lift the block; offer another factor.",
    ),
    30005: TwilioError(
        NOT_DELIVERED,
        "Unknown destination handset: the number is not in service.",
        "Ask the user to update the phone number enrolled in Okta.",
    ),
    30006: TwilioError(
        NOT_DELIVERED,
        "Landline or unreachable carrier: SMS cannot reach it.",
        "Enrol a mobile number, or use voice for this user.",
    ),
    30007: TwilioError(
        NOT_DELIVERED,
        "Filtered by the carrier as spam.",
        "Register the sender (10DLC, toll-free verification) and keep the text plain.",
    ),
    30008: TwilioError(
        NOT_DELIVERED,
        "Unknown error from the carrier.",
        "Retry; if it persists for a country, open a Twilio support ticket.",
    ),
    30034: TwilioError(
        NOT_DELIVERED,
        "US message from an unregistered 10DLC number.",
        "Register the number's A2P 10DLC campaign, or send from a toll-free or short code.",
    ),
    90007: TwilioError(NOT_DELIVERED, "Twilio refused the message's validity period."),
    60200: TwilioError(NOT_DELIVERED, "Twilio Verify refused a parameter as invalid (To or Channel, for example)."),
    60203: TwilioError(
        "Too many codes were sent to this number; try again later.",
        "Twilio Verify's send limit for this number was reached.",
    ),
    60204: TwilioError(
        NOT_DELIVERED,
        "Custom verification codes are disabled on the Verify service.",
        "Turn them on in Twilio's Console.",
    ),
    60205: TwilioError(
        "The phone number cannot receive text messages.",
        "Twilio Verify: SMS is not supported by a landline.",
        "Use a voice call.",
    ),
    60410: TwilioError(NOT_DELIVERED, "Twilio Verify Fraud Guard blocked this number's country prefix."),
    60605: TwilioError(
        "Codes cannot be sent to this country.", "Twilio Verify Geo Permissions do not allow this country."
    ),
}


def twilio_error(code: int, delivery: bool = False) -> TwilioError:
    """The table's entry, or one that points the admin to Twilio's page for the code. `delivery`: the
    code comes from a delivery receipt (Twilio took the message; it failed on its way), not from a
    refusal of our request."""
    known = TWILIO_ERRORS.get(code)
    if known is not None:
        return known
    said = (
        f"Twilio reports error {code} for its delivery." if delivery else f"Twilio refused the request (error {code})."
    )
    return TwilioError(NOT_DELIVERED, said, f"See https://www.twilio.com/docs/errors/{code}")


def answered_status(error: TwilioException, http_status: int | None = None) -> int | None:
    """The HTTP status Twilio answered with: `http_status`, the answer's own, when known (the library
    reports an RFC 9457 body's own `status` as the answer's), else what the library says."""
    status = http_status if http_status is not None else getattr(error, "status", None)
    return status if isinstance(status, int) else None


def error_code(error: TwilioException, http_status: int | None = None) -> int | None:
    """Twilio's error code; None when the answer carries none. Twilio's codes have five digits: another
    number is not a Twilio code (it could be anything the peer chose to echo), and a bare 429 is
    Twilio's rate limit (20429). `http_status`: the answer's own, when known (answered_status)."""
    if not isinstance(error, TwilioRestException | TwilioServiceException):
        return None
    if isinstance(error.code, int) and 10000 <= error.code <= 99999:
        return error.code
    return 20429 if answered_status(error, http_status) == 429 else None


def http_only(status: int | None) -> tuple[str, str]:
    """What an answer with no Twilio code says (a 5xx from Twilio's edge, a proxy's 3xx): the reason
    Okta and the log line carry, and the admin's hint."""
    if status is None:
        return "TWILIO_ERROR", "Twilio refused the request, with no error code."
    return f"TWILIO_HTTP_{status}", f"Twilio answered HTTP {status}, with no error code."


def twilio_failure(error: TwilioException, attempts: int, http_status: int | None = None) -> Refused:
    """A refusal by Twilio: 200 + error object, so Okta falls back and the admin sees why. `http_status`
    is the answer's own status: whether a code may have gone out depends on it, not on the body's word."""
    code = error_code(error, http_status)
    fields: dict[str, int | str] = {"twilio_attempts": attempts}
    status = answered_status(error, http_status)
    if status is not None:
        fields["twilio_http_status"] = status
    if code is None:  # no Twilio code at all, only the HTTP status
        reason, hint = http_only(status)
        fields["twilio_error"] = reason
        return provider_error(NOT_DELIVERED, hint, reason, "https://status.twilio.com", log_fields=fields)
    fields["twilio_error_code"] = code
    known = twilio_error(code)
    location = f"https://www.twilio.com/docs/errors/{code}"
    return provider_error(known.summary, known.hint, f"TWILIO_{code}", location, log_fields=fields)


def transport_failure(error: TwilioUnavailable, timeout_seconds: float) -> Refused:
    """Twilio did not answer in time, or could not be reached: answer Okta before its 3 s run out."""
    if error.error_type == ANSWER_TOO_LARGE:  # treated as a timeout: Twilio may have taken the request
        hint, reason = "Twilio's answer was far larger than any Twilio resource.", "TWILIO_TIMEOUT"
    elif error.timed_out:
        hint, reason = f"Twilio did not answer within {round(timeout_seconds, 1):g} s.", "TWILIO_TIMEOUT"
    else:
        hint, reason = "Twilio could not be reached, or its answer could not be read.", "TWILIO_UNREACHABLE"
    fields = {"twilio_error": reason, "error_type": error.error_type, "twilio_attempts": error.attempts}
    return provider_unavailable(hint, reason, log_fields=fields)


# What the twilio library raises reading a 2xx answer that is not the resource it expects: not an
# object, a field of the wrong type, JSON nested too deep, a date in a year past any calendar
# (OverflowError, an ArithmeticError like the library's other number readings may raise).
UNREADABLE_ANSWER = (ValueError, TypeError, AttributeError, LookupError, RecursionError, ArithmeticError)


def malformed_answer(what: str, attempts: int) -> Refused:
    """Twilio (or what stands in its place) answered 2xx with something that is not the resource we
    asked for: nothing proves the code was accepted, so Okta falls back. It is not sent again: it may have been."""
    return provider_error(
        NOT_DELIVERED,
        "Twilio's answer was not a resource with a SID: check TWILIO_API_BASE_URL, proxies, status.twilio.com.",
        "TWILIO_MALFORMED_ANSWER",
        "https://status.twilio.com",
        log_fields={"twilio_error": "TWILIO_MALFORMED_ANSWER", "error_type": what, "twilio_attempts": attempts},
    )


# Every status Twilio documents for the resources the hook creates: another value is not repeated.
KNOWN_STATUSES = frozenset(
    {"queued", "sending", "sent", "failed", "delivered", "undelivered", "receiving", "received", "accepted",
     "scheduled", "read", "partially_delivered", "canceled", "initiated", "ringing", "in-progress", "completed",
     "busy", "no-answer", "pending", "approved", "max_attempts_reached", "expired", "deleted"}
)  # fmt: skip


UNKNOWN_STATUS = "an unknown status"


def status_word(status: object) -> str:
    """A status as a log line or an answer may repeat it: one Twilio documents, else UNKNOWN_STATUS
    (what a peer sends in its place is not written)."""
    return status if isinstance(status, str) and status in KNOWN_STATUSES else UNKNOWN_STATUS


# What a resource just created may say that proves the code did not go and will not: a message or call
# that failed or was canceled, a call nobody answered, a verification Verify will not send.
NOT_GOING = frozenset(
    {"failed", "canceled", "undelivered", "busy", "no-answer", "max_attempts_reached", "expired", "deleted"}
)


def not_accepted(api: str, status: str, attempts: int, sid: str | None = None) -> Refused:
    """Twilio created the resource but its status does not say it goes out: Okta falls back. Only a
    status that says it will not go ('failed', 'canceled') proves nothing was sent; any other (none, an
    unknown one, 'completed') may hide a code that went, and Okta's retry of it is not sent again.
    `sid`: the resource's, for the log line (the admin looks it up in Twilio's console)."""
    word = status_word(status)  # none, or not Twilio's: not repeated
    said = f"status {word}" if word != UNKNOWN_STATUS else word
    if status in NOT_GOING:
        summary, reason = f"Twilio created the {api} with {said}: the code was not sent.", "TWILIO_NOT_ACCEPTED"
    else:
        summary = f"Twilio created the {api} with {said}, which does not say it goes out: it is not sent again."
        reason = "TWILIO_UNCLEAR_STATUS"
    return provider_error(
        NOT_DELIVERED,
        summary,
        reason,
        "https://status.twilio.com",
        log_fields={
            "twilio_error": reason,
            "twilio_status": word,
            "twilio_attempts": attempts,
            **({"twilio_sid": sid} if sid else {}),
        },
    )
