"""Delivery receipts: Twilio's status callbacks for each message and call, one log line per receipt.

Twilio posts them, form-encoded and signed with the account's auth token, to the URL each create
asked for: {public URL}/twilio/status. The signature covers the exact URL Twilio called; behind Cloud
Run the request arrives as http on an internal address, so the URL is rebuilt from PUBLIC_URL, or
from the public host and X-Forwarded-Proto Cloud Run passes on. Nothing external is called here.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

import flask
from twilio.request_validator import RequestValidator

from models import DeliveryChannel
from telephony.answers import (
    Answer,
    Outcome,
    receipt,
    receipt_forbidden,
    receipt_invalid,
    receipt_method_not_allowed,
    receipt_too_large,
)
from telephony.intake import read_body
from telephony.logs import mark_sensitive
from telephony.phone import describe, mask
from telephony.settings import Settings
from telephony.twilio_errors import twilio_error
from telephony.twilio_facts import is_sid

RECEIPTS_PATH = "/twilio/status"
SIGNATURE_HEADER = "X-Twilio-Signature"

# Twilio's MessageStatus and CallStatus values (twilio-oai: message_enum_status, call_enum_status).
MESSAGE_STATUSES = frozenset(
    {"queued", "sending", "sent", "failed", "delivered", "undelivered", "receiving", "received", "accepted",
     "scheduled", "read", "partially_delivered", "canceled"}
)  # fmt: skip
CALL_STATUSES = frozenset(
    {"queued", "initiated", "ringing", "in-progress", "completed", "busy", "failed", "no-answer", "canceled"}
)
# The code did not reach the user: what an admin hears about as "I got no code".
NOT_DELIVERED = frozenset({"undelivered", "failed", "busy", "no-answer"})


def outcome_for(status: str) -> Outcome:
    """WARNING when the code did not reach the user, INFO for every step on the way."""
    return Outcome.RECEIPT_NOT_DELIVERED if status in NOT_DELIVERED else Outcome.RECEIPT


def public_base(request: flask.Request, configured: str | None) -> str:
    """'https://host': PUBLIC_URL (with the path a platform strips in front, if any), else what the
    caller called, as the proxy in front reports it."""
    if configured:
        return configured.rstrip("/")
    # Cloud Run keeps the public Host and says in X-Forwarded-Proto whether the caller used https.
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    scheme = forwarded if forwarded in {"http", "https"} else request.scheme
    return f"{scheme}://{request.host}"


def called_url(request: flask.Request, configured: str | None) -> str:
    """The exact URL the caller used, query string included, as its signature covers it."""
    raw_target = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if not raw_target or not raw_target.startswith("/"):
        query = request.query_string.decode("latin-1")
        raw_target = request.path + (f"?{query}" if query else "")
    return public_base(request, configured) + raw_target


class Receipt(NamedTuple):
    """What one status callback says, safe to log: never the numbers or the text."""

    sid: str
    channel: DeliveryChannel
    status: str
    error_code: int | None
    phone: str  # masked
    country: str
    call_duration_s: int | None

    def log_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "twilio_sid": self.sid,
            "channel": self.channel,
            "delivery_status": self.status,
            "phone": self.phone,
            "country": self.country,
        }
        if self.error_code is not None:
            error = twilio_error(self.error_code)
            fields.update(error_code=self.error_code, error_meaning=error.meaning, error_fix=error.fix)
        if self.call_duration_s is not None:
            fields["call_duration_s"] = self.call_duration_s
        return fields


def _digits(form: dict[str, str], name: str) -> int | None:
    value = form.get(name, "")
    if not value:
        return None
    if not value.isdigit() or len(value) > 9:
        raise receipt_invalid(f"{name} is not a whole number")
    return int(value)


def parse_receipt(form: dict[str, str]) -> Receipt:
    """A message's (MessageSid, MessageStatus) or a call's (CallSid, CallStatus) receipt."""
    if form.get("CallSid"):
        sid, channel, status, known = form["CallSid"], "voice", form.get("CallStatus", ""), CALL_STATUSES
    elif form.get("MessageSid") or form.get("SmsSid"):
        sid = form.get("MessageSid") or form["SmsSid"]
        channel, status, known = "sms", form.get("MessageStatus") or form.get("SmsStatus", ""), MESSAGE_STATUSES
    else:
        raise receipt_invalid("no MessageSid or CallSid")
    if not is_sid(sid, "SM", "MM", "CA"):
        raise receipt_invalid("the SID is not a Twilio SID")
    if status not in known:
        raise receipt_invalid(f"unknown {'CallStatus' if channel == 'voice' else 'MessageStatus'}")
    to = form.get("To", "")
    return Receipt(
        sid=sid,
        channel="voice" if channel == "voice" else "sms",
        status=status,
        error_code=_digits(form, "ErrorCode"),
        phone=mask(to),
        country=describe(to).country,
        call_duration_s=_digits(form, "CallDuration") if channel == "voice" else None,
    )


class Receipts:
    """The /twilio/status route, and the callback URL each Messages and Calls create asks for."""

    name = "receipts route"
    path = RECEIPTS_PATH
    log = logging.getLogger("telephony_hook.receipts")
    credential_headers: tuple[str, ...] = (SIGNATURE_HEADER,)

    def __init__(self, settings: Settings) -> None:
        token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else ""
        self._validator = RequestValidator(token) if token else None
        self._public_url = settings.public_url
        self._verify = settings.twilio_verify_service_sid is not None  # Verify asks for no receipts
        self._derivation_reported = False

    @property
    def on(self) -> bool:
        """Whether codes ask Twilio for receipts: Messages and Calls do, Verify has none."""
        return self._validator is not None and not self._verify

    def startup_report(self) -> list[tuple[int, str]]:
        return [self._receipts_report()]

    def _receipts_report(self) -> tuple[int, str]:
        if self._verify:
            return logging.INFO, (
                "Delivery receipts are off: Twilio Verify sends the codes (TWILIO_VERIFY_SERVICE_SID), and "
                "Verify posts no status callbacks. Verify's own logs show each code's delivery."
            )
        if self._validator is None:
            return logging.WARNING, (
                "Delivery receipts are off: TWILIO_AUTH_TOKEN is not set, and Twilio signs receipts with it "
                "(even when sending with an API key). No status callback is requested."
            )
        if self._public_url:
            url = self._public_url.rstrip("/") + RECEIPTS_PATH
            return logging.INFO, f"Delivery receipts on: Twilio posts them to {url} (PUBLIC_URL)."
        return logging.INFO, (
            f"Delivery receipts on: PUBLIC_URL is not set, so the URL is taken from each hook's request "
            f"(Host and X-Forwarded-Proto) + {RECEIPTS_PATH}."
        )

    def callback_url(self, request: flask.Request) -> str | None:
        """Where Twilio should post this code's receipts; None when receipts are off."""
        if not self.on:
            return None
        url = public_base(request, self._public_url) + RECEIPTS_PATH
        if not self._public_url and not self._derivation_reported:
            self._derivation_reported = True  # once per instance: a race only repeats the line
            self.log.info(f"Delivery receipts go to {url}, derived from the hook's request (PUBLIC_URL is not set).")
        return url

    def handle(self, request: flask.Request) -> Answer:
        """Check the signature, then the receipt is logged and answered 204: Twilio needs nothing more."""
        taken = self._receive(request)
        fields = taken.log_fields()
        note = f"{taken.channel} {taken.sid} {taken.status}"
        if taken.error_code is not None:
            note += f", error {taken.error_code}: {fields['error_meaning']}"
        return receipt(outcome_for(taken.status), fields, f"{note} ({taken.phone})")

    def _receive(self, request: flask.Request) -> Receipt:
        if request.method != "POST":
            raise receipt_method_not_allowed()
        if self._validator is None:
            raise receipt_forbidden("receipts are off (TWILIO_AUTH_TOKEN is not set)")
        signature = request.headers.get(SIGNATURE_HEADER)
        if not signature:  # refused before the body is read
            raise receipt_forbidden(f"no {SIGNATURE_HEADER} header")
        body = read_body(request, receipt_too_large)
        if request.mimetype != "application/x-www-form-urlencoded":
            raise receipt_invalid("the body is not form-encoded")
        try:
            form = dict(parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=bool(body), errors="strict"))
        except (UnicodeDecodeError, ValueError):
            raise receipt_invalid("the body is not form-encoded") from None
        for name in ("To", "From"):  # the net under the rule: never written, even by mistake
            number = form.get(name, "")
            mark_sensitive(number, mask(number))
            mark_sensitive(number.removeprefix("+"), mask(number))
        mark_sensitive(form.get("Body", ""))
        if not self._validator.validate(called_url(request, self._public_url), form, signature):
            raise receipt_forbidden(f"wrong {SIGNATURE_HEADER} for this URL and body")
        return parse_receipt(form)
