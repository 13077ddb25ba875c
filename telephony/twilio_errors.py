"""The one table from Twilio's errors to what we tell Okta.

Okta shows `errorSummary` to admins and end users, so summaries are plain and never carry Twilio's
own message text (it contains the recipient's number, sometimes the message body). The admin gets the
Twilio code, a hint, and the link to Twilio's page for the code.
"""

from __future__ import annotations

from typing import NamedTuple

from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException

from telephony.answers import NOT_DELIVERED, HookRefused, provider_error, provider_unavailable
from telephony.outbound import ANSWER_TOO_LARGE
from telephony.twilio_http import TwilioUnavailable


class ProviderProblem(NamedTuple):
    summary: str  # for end users and admins alike
    hint: str  # for the admin reading Okta's hook error or our logs


_SENDER = ProviderProblem(
    NOT_DELIVERED, "The Twilio sender (TWILIO_FROM_NUMBER or Messaging Service) cannot send this."
)
_INVALID_TO = ProviderProblem(
    "The phone number is not valid.", "Twilio says the To number is not a valid phone number."
)

TWILIO_ERRORS: dict[int, ProviderProblem] = {
    20003: ProviderProblem(
        NOT_DELIVERED, "Twilio rejected the hook's credentials: check the account SID and auth token or API key."
    ),
    20404: ProviderProblem(NOT_DELIVERED, "Twilio does not know the account, service or resource the hook addressed."),
    20429: ProviderProblem(
        "Too many codes are being sent right now; try again shortly.", "Twilio is rate-limiting this account."
    ),
    21210: _SENDER,
    21211: _INVALID_TO,
    21212: _SENDER,
    21214: ProviderProblem("The phone number cannot be reached.", "Twilio cannot route a call to this number."),
    21215: ProviderProblem(
        "Calls to this country are not enabled.", "Voice Geo Permissions do not allow calls to this country."
    ),
    21216: ProviderProblem("The phone number cannot be called.", "This number is blocked for the Twilio account."),
    21217: _INVALID_TO,
    21408: ProviderProblem(
        "Text messages to this country are not enabled.", "Messaging Geo Permissions do not allow this country."
    ),
    21606: _SENDER,
    21610: ProviderProblem(
        "This number has opted out of text messages.",
        "The recipient replied STOP; they must text START to opt back in.",
    ),
    21611: ProviderProblem(NOT_DELIVERED, "The sender's outgoing message queue is full."),
    21612: ProviderProblem(
        "The phone number cannot receive this message.",
        "Twilio cannot route a message from this sender to this number.",
    ),
    21614: ProviderProblem(
        "The phone number cannot receive text messages.", "The number is not a mobile number; use a voice call."
    ),
    21617: ProviderProblem(NOT_DELIVERED, "The SMS text is longer than 1600 characters: check SMS_TEMPLATE."),
    90007: ProviderProblem(NOT_DELIVERED, "Twilio refused the message's validity period."),
    60200: ProviderProblem(NOT_DELIVERED, "Twilio Verify refused a parameter as invalid (To or Channel, for example)."),
    60203: ProviderProblem(
        "Too many codes were sent to this number; try again later.",
        "Twilio Verify's send limit for this number was reached.",
    ),
    60204: ProviderProblem(
        NOT_DELIVERED,
        "Custom verification codes are disabled on the Verify service: turn them on in Twilio's Console.",
    ),
    60205: ProviderProblem(
        "The phone number cannot receive text messages.",
        "Twilio Verify: SMS is not supported by a landline; use a voice call.",
    ),
    60410: ProviderProblem(NOT_DELIVERED, "Twilio Verify Fraud Guard blocked this number's country prefix."),
    60605: ProviderProblem(
        "Codes cannot be sent to this country.", "Twilio Verify Geo Permissions do not allow this country."
    ),
}


def twilio_failure(error: TwilioException) -> HookRefused:
    """A refusal by Twilio: 200 + error object, so Okta falls back and the admin sees why."""
    code = 0
    if isinstance(error, TwilioRestException | TwilioServiceException):
        code = error.code if isinstance(error.code, int) else int(error.status or 0)
    if code == 429:  # rate limiting answered without a Twilio code
        code = 20429
    if 100 <= code < 600:  # no Twilio code at all, only the HTTP status (a 5xx from Twilio's edge)
        hint, reason, location = f"Twilio answered HTTP {code}.", f"TWILIO_HTTP_{code}", "https://status.twilio.com"
        summary = NOT_DELIVERED
    else:
        problem = TWILIO_ERRORS.get(code, ProviderProblem(NOT_DELIVERED, f"Twilio refused the request (error {code})."))
        summary, hint = problem.summary, problem.hint
        reason, location = f"TWILIO_{code}", f"https://www.twilio.com/docs/errors/{code}"
    return provider_error(summary, hint, reason, location, log_fields={"twilio_error_code": code})


def transport_failure(error: TwilioUnavailable, timeout_seconds: float) -> HookRefused:
    """Twilio did not answer in time, or could not be reached: answer Okta before its 3 s run out."""
    if error.error_type == ANSWER_TOO_LARGE:  # treated as a timeout: Twilio may have taken the request
        hint, reason = "Twilio's answer was far larger than any Twilio resource.", "TWILIO_TIMEOUT"
    elif error.timed_out:
        hint, reason = f"Twilio did not answer within {timeout_seconds:g} s.", "TWILIO_TIMEOUT"
    else:
        hint, reason = "Twilio could not be reached.", "TWILIO_UNREACHABLE"
    return provider_unavailable(hint, reason, log_fields={"twilio_error": reason, "error_type": error.error_type})


def malformed_answer(what: str) -> HookRefused:
    """Twilio (or what stands in its place) answered 2xx with something that is not the resource we
    asked for: nothing proves the code was accepted, so Okta falls back. It is not sent again: it may have been."""
    return provider_error(
        NOT_DELIVERED,
        "Twilio's answer was not a resource with a SID: check TWILIO_API_BASE_URL, proxies, status.twilio.com.",
        "TWILIO_MALFORMED_ANSWER",
        "https://status.twilio.com",
        log_fields={"twilio_error": "TWILIO_MALFORMED_ANSWER", "error_type": what},
    )
