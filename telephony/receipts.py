"""Delivery receipts: Twilio's status callbacks for each message and call, one log line per receipt.

Twilio posts them, form-encoded and signed with the account's auth token, to the URL each create
asked for: {PUBLIC_URL}/twilio/status. The signature covers the exact URL Twilio called, and a receipt
is accepted only when signed for this function's own URL, which only PUBLIC_URL can say: the Host
and X-Forwarded-Proto of a request are the caller's to choose, and a receipt Twilio signed for another
deployment of the same account would pass a check over them. Without PUBLIC_URL, receipts are off.

The body is read only after the signature header is seen, within RECEIPT_READ_SECONDS and at most
RECEIPT_MAX_BYTES, and only so many at once: stalled uploads can hold no more than a quarter of the
instance's threads, each for at most that deadline. Nothing external is called here.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

import flask
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict

from models import DeliveryChannel
from telephony.answers import (
    Answer,
    Outcome,
    receipt,
    receipt_busy,
    receipt_forbidden,
    receipt_invalid,
    receipt_method_not_allowed,
    receipt_too_large,
    receipt_too_slow,
)
from telephony.intake import read_body
from telephony.logs import mark_sensitive
from telephony.phone import describe, mask
from telephony.settings import Settings
from telephony.store import Claims, LocalClaims
from telephony.twilio_errors import twilio_error
from telephony.twilio_facts import is_sid

RECEIPTS_PATH = "/twilio/status"
RECEIPT_CLAIM_SECONDS = 2 * 86400  # Twilio posts a message's statuses within hours of sending it
RECEIPT_MAX_BYTES = 8 * 1024  # Twilio's status callbacks are about 1 KB
RECEIPT_READ_SECONDS = 2.0  # a receipt's body arrives with its head; a stalled one is cut here
# With every reader taken (by stalled uploads, anyone can send a signature header), a receipt is still
# read within this: Twilio's arrive whole and are never sent again; only a stalled upload misses it.
RECEIPT_QUICK_SECONDS = 0.1
SIGNATURE_HEADER = "X-Twilio-Signature"

# Twilio's MessageStatus and CallStatus values (twilio-oai: message_enum_status, call_enum_status).
MESSAGE_STATUSES = frozenset(
    {"queued", "sending", "sent", "failed", "delivered", "undelivered", "receiving", "received", "accepted",
     "scheduled", "read", "partially_delivered", "canceled"}
)  # fmt: skip
CALL_STATUSES = frozenset(
    {"queued", "initiated", "ringing", "in-progress", "completed", "busy", "failed", "no-answer", "canceled"}
)
# A status Twilio adds later is still Twilio's word on a signed receipt: recorded as it is named.
STATUS_SHAPE = re.compile(r"[a-z][a-z_-]{0,31}")
# The fields a receipt is read from: each must say one thing (the signature covers every value given).
READ_FIELDS = ("MessageSid", "SmsSid", "CallSid", "MessageStatus", "SmsStatus", "CallStatus", "ErrorCode",
               "CallDuration", "To")  # fmt: skip
# The code did not reach the user: what an admin hears about as "I got no code".
NOT_DELIVERED = frozenset({"undelivered", "failed", "busy", "no-answer"})


def outcome_for(status: str) -> Outcome:
    """WARNING when the code did not reach the user, INFO for every step on the way."""
    return Outcome.RECEIPT_NOT_DELIVERED if status in NOT_DELIVERED else Outcome.RECEIPT


def called_url(request: flask.Request, public_url: str) -> str:
    """The URL Twilio called, as its signature covers it: PUBLIC_URL (with the path a platform strips
    in front, if any), then the path and query string exactly as they arrived. Never the request's Host."""
    raw_target = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if not raw_target or not raw_target.startswith("/"):
        query = request.query_string.decode("latin-1")
        raw_target = request.path + (f"?{query}" if query else "")
    return public_url.rstrip("/") + raw_target


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
            error = twilio_error(self.error_code, delivery=True)
            fields.update(error_code=self.error_code, error_meaning=error.meaning, error_fix=error.fix)
        if self.call_duration_s is not None:
            fields["call_duration_s"] = self.call_duration_s
        return fields


def _digits(form: dict[str, str], name: str) -> int | None:
    value = form.get(name, "")
    if not value:
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 9:
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
    field = "CallStatus" if channel == "voice" else "MessageStatus"
    if status not in known and not STATUS_SHAPE.fullmatch(status):
        raise receipt_invalid(f"the {field} is not a status" if status else f"no {field}")
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

    def __init__(self, settings: Settings, claims: Claims | None = None) -> None:
        token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else ""
        self._claims: Claims = claims or LocalClaims()
        self._validator = RequestValidator(token) if token else None
        self._public_url = settings.public_url.rstrip("/") if settings.public_url else None
        self._verify = settings.twilio_verify_service_sid is not None  # Verify asks for no receipts
        # Receipt bodies read at once for up to RECEIPT_READ_SECONDS; the rest get RECEIPT_QUICK_SECONDS,
        # so stalled uploads can hold at most this many of the instance's threads for long.
        self._readers = max(1, settings.threads // 4)
        self._reading = threading.BoundedSemaphore(self._readers)

    @property
    def on(self) -> bool:
        """Whether codes ask Twilio for receipts: Messages and Calls do, Verify has none, and without
        PUBLIC_URL no receipt could be checked against this function's own URL."""
        return self._validator is not None and not self._verify and self._public_url is not None

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
        if self._public_url is None:
            return logging.WARNING, (
                "Delivery receipts are off: PUBLIC_URL is not set. A receipt is accepted only when Twilio "
                "signed it for this function's own URL, and only PUBLIC_URL says what that is (a request's Host "
                "is the caller's to choose). Set PUBLIC_URL to the function's URL, as registered in Okta."
            )
        return (
            logging.INFO,
            f"Delivery receipts on: Twilio posts them to {self._public_url}{RECEIPTS_PATH} (PUBLIC_URL).",
        )

    def callback_url(self, request: flask.Request) -> str | None:
        """Where Twilio should post this code's receipts (PUBLIC_URL's, whatever the request); None when off."""
        return f"{self._public_url}{RECEIPTS_PATH}" if self.on else None

    def handle(self, request: flask.Request) -> Answer:
        """Check the signature, then the receipt is logged and answered 204: Twilio needs nothing more."""
        taken = self._receive(request)
        note = f"{taken.channel} {taken.sid} {taken.status}"
        # A signed receipt can be sent again by whoever saw it: one status of one message counts once
        # (in the delivery metric and its alert), across instances when the guard's store is shared.
        if not self._claims.claim(f"receipt:{taken.sid}:{taken.status}", RECEIPT_CLAIM_SECONDS):
            return receipt(Outcome.RECEIPT_REPEATED, {"twilio_sid": taken.sid, "channel": taken.channel}, note)
        fields = taken.log_fields()
        if taken.error_code is not None:
            note += f", error {taken.error_code}: {fields['error_meaning']}"
        return receipt(outcome_for(taken.status), fields, f"{note} ({taken.phone})")

    def _receive(self, request: flask.Request) -> Receipt:
        if request.method != "POST":
            raise receipt_method_not_allowed()
        if self._validator is None:
            raise receipt_forbidden("receipts are off (TWILIO_AUTH_TOKEN is not set)")
        if self._public_url is None:
            raise receipt_forbidden("receipts are off (PUBLIC_URL is not set)")
        signature = request.headers.get(SIGNATURE_HEADER)
        if not signature:  # refused before the body is read
            raise receipt_forbidden(f"no {SIGNATURE_HEADER} header")
        if request.mimetype != "application/x-www-form-urlencoded":
            raise receipt_invalid("the body is not form-encoded")
        reader = self._reading.acquire(blocking=False)
        try:
            body = read_body(
                request,
                lambda: receipt_too_large(RECEIPT_MAX_BYTES),
                RECEIPT_MAX_BYTES,
                unreadable=lambda: receipt_invalid("the body could not be read"),
                seconds=RECEIPT_READ_SECONDS if reader else RECEIPT_QUICK_SECONDS,
                too_slow=lambda: receipt_too_slow(RECEIPT_READ_SECONDS) if reader else receipt_busy(self._readers),
            )
        finally:
            if reader:
                self._reading.release()
        try:
            pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=bool(body), errors="strict")
        except (UnicodeDecodeError, ValueError):
            raise receipt_invalid("the body is not form-encoded") from None
        form: MultiDict[str, str] = MultiDict(pairs)
        for name in ("To", "From"):  # the net under the rule: never written, even by mistake
            for number in form.getlist(name):
                mark_sensitive(number, mask(number))
                mark_sensitive(number.removeprefix("+"), mask(number))
        for text in form.getlist("Body"):
            mark_sensitive(text)
        # Twilio's validator signs every value of a repeated field (its MultiDict support), as Twilio does.
        if not self._validator.validate(called_url(request, self._public_url), form, signature):
            raise receipt_forbidden(f"wrong {SIGNATURE_HEADER} for this URL and body")
        for name in READ_FIELDS:
            if len(set(form.getlist(name))) > 1:
                raise receipt_invalid(f"{name} is given more than once")
        return parse_receipt(form.to_dict())
