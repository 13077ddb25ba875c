"""Okta's event hook at /okta/events: Twilio Verify feedback for the codes users typed in.

Twilio asks everyone who sends Verify custom codes to report each verification's outcome; without
it, verifications stay pending and repeated codes to one number hit 60203. Okta tells us a user
passed an SMS or voice challenge through an event hook; the event names the user, not the number,
so Okta's Management API gives the user's phone numbers, and Verify's update by number marks the
pending verification `approved`. Stateless: any instance handles any event, and a repeated event
finds nothing pending (404), which is harmless. This serves Okta's built-in Twilio provider as well.

Events acted on (okta-developer-docs, event-types.json), each only with outcome SUCCESS:
- `user.authentication.auth_via_mfa` whose `debugContext.debugData.factor` is SMS_FACTOR or
  CALL_FACTOR; its `factorIntent` says LOGIN, CREDENTIAL_ENROLLMENT or CREDENTIAL_RECOVERY, so sign-in,
  enrolment and recovery challenges all arrive as this one type in Identity Engine;
- `user.mfa.factor.activate` whose AuthenticatorEnrollment target's `methodTypeUsed` is SMS or VOICE
  (a phone enrolment completed).
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor, wait
from http import HTTPStatus
from typing import Any, NamedTuple
from urllib.parse import quote

import flask
from pydantic import ValidationError
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client

from models import EventHookAccepted, EventHookRequest, EventHookVerification, LogEvent
from telephony.answers import (
    MAX_EVENT_BODY_BYTES,
    Answer,
    Outcome,
    body_too_large,
    event_hook_verified,
    events_received,
    invalid_request,
    method_not_allowed,
    unauthorized,
    verification_challenge_missing,
)
from telephony.auth import HeaderSecret
from telephony.delivery import build_client
from telephony.intake import read_body
from telephony.logs import mark_sensitive
from telephony.okta_api import OktaApi, OktaApiUnavailable
from telephony.phone import mask
from telephony.settings import Settings
from telephony.twilio_errors import error_code, twilio_error
from telephony.twilio_http import TwilioUnavailable

EVENT_BUDGET_SECONDS = 2.5  # Okta waits 3 s for an event hook too; the rest is network and our own work
EVENT_WORKERS = 8  # events of one batch handled at once, per instance
PHONE_FACTORS = frozenset({"SMS_FACTOR", "CALL_FACTOR"})
PHONE_METHODS = frozenset({"SMS", "VOICE"})

OKTA_ID = re.compile(r"[0-9A-Za-z]{1,64}")  # Okta's ids: 00u followed by letters and digits
ROUTE = "event hook"
log = logging.getLogger("okta_events")


class Approval(NamedTuple):
    """What Verify's update by number said: approved (with the SID), nothing pending, or a failure."""

    outcome: Outcome
    log_fields: dict[str, Any]


def passed_phone_challenge(event: LogEvent) -> bool:
    """Whether the event says a user passed an SMS or voice challenge (sign-in, enrolment, recovery)."""
    if event.outcome is None or event.outcome.result != "SUCCESS":
        return False
    if event.event_type == "user.authentication.auth_via_mfa":
        debug = (event.debug_context.debug_data if event.debug_context else None) or {}
        return debug.get("factor") in PHONE_FACTORS
    if event.event_type == "user.mfa.factor.activate":
        return any(
            target.type == "AuthenticatorEnrollment"
            and (target.detail_entry or {}).get("methodTypeUsed") in PHONE_METHODS
            for target in event.target or []
        )
    return False


def user_of(event: LogEvent) -> str | None:
    """The user who passed: the User target when the event has one (an admin may act), else the actor.
    Only an id shaped like Okta's (letters and digits) is used: it goes into the Management API's path."""
    candidates = [target.id for target in event.target or [] if target.type == "User"]
    if event.actor is not None and event.actor.type == "User":
        candidates.append(event.actor.id)
    user_id = next((candidate for candidate in candidates if candidate), None)
    return user_id if user_id is not None and OKTA_ID.fullmatch(user_id) else None


class EventHook:
    """The /okta/events route, built once at start-up."""

    name = ROUTE
    path = "/okta/events"
    log = log

    def __init__(self, settings: Settings) -> None:
        secret = settings.okta_event_hook_auth_secret
        self._auth = (
            HeaderSecret(settings.okta_event_hook_auth_header, secret.get_secret_value(), route=ROUTE)
            if secret and secret.get_secret_value()
            else None
        )
        self.credential_headers: tuple[str, ...] = (settings.okta_event_hook_auth_header,)
        self._okta = (
            OktaApi(
                settings.okta_org_url,
                settings.okta_api_token.get_secret_value(),
                settings.okta_api_timeout_seconds,
                EVENT_WORKERS,
            )
            if settings.okta_org_url and settings.okta_api_token
            else None
        )
        # Verify's update gets what the Management API read leaves of the budget.
        twilio_seconds = min(settings.twilio_timeout_seconds, EVENT_BUDGET_SECONDS - settings.okta_api_timeout_seconds)
        self._client: Client | None = (
            build_client(settings.model_copy(update={"twilio_timeout_seconds": twilio_seconds}))
            if settings.twilio_verify_service_sid
            else None
        )
        self._service_sid = settings.twilio_verify_service_sid
        self._workers = ThreadPoolExecutor(max_workers=EVENT_WORKERS, thread_name_prefix="okta-events")
        missing = []
        if self._okta is None:
            missing.append("OKTA_ORG_URL and OKTA_API_TOKEN")
        if self._client is None:
            missing.append("TWILIO_VERIFY_SERVICE_SID with Twilio credentials")
        self.missing = " and ".join(missing) or None

    @property
    def configured(self) -> bool:
        """Whether the admin set the event hook up (its secret): only then is what it lacks worth a word."""
        return self._auth is not None

    def startup_report(self) -> list[tuple[int, str]]:
        if self.configured and self.missing:
            return [
                (
                    logging.CRITICAL,
                    f"Verify feedback (/okta/events) cannot work: the function is missing {self.missing}.",
                )
            ]
        return []

    def handle(self, request: flask.Request) -> Answer:
        if request.method not in ("GET", "POST"):
            raise method_not_allowed(ROUTE, "GET, POST")
        # Authenticated from the headers, before a byte of the body is read; fail closed.
        if self._auth is None:
            hint = "No event hook secret is configured (OKTA_EVENT_HOOK_AUTH_SECRET)."
            raise unauthorized(hint, "configuration", route=ROUTE)
        self._auth.verify(request.headers)
        if request.method == "GET":
            return self._verification(request)
        body = read_body(request, lambda: body_too_large(ROUTE, MAX_EVENT_BODY_BYTES), MAX_EVENT_BODY_BYTES)
        hook = self._parse(body)
        futures = [
            self._workers.submit(contextvars.copy_context().run, self._feedback_logged, event)
            for event in hook.data.events
        ]
        # Each event's calls are bounded; the batch is answered by Okta's deadline whatever is left.
        _, unfinished = wait(futures, timeout=EVENT_BUDGET_SECONDS)
        return events_received(EventHookAccepted(), len(futures), len(unfinished))

    def _verification(self, request: flask.Request) -> Answer:
        """Okta's one-time check of a new event hook: echo the challenge."""
        challenge = request.headers.get("X-Okta-Verification-Challenge")
        if not challenge:
            raise verification_challenge_missing()
        return event_hook_verified(EventHookVerification(verification=challenge))

    def _parse(self, body: bytes) -> EventHookRequest:
        try:
            return EventHookRequest.model_validate_json(body)
        except ValidationError as error:
            raise invalid_request(ROUTE, error) from None

    def _feedback_logged(self, event: LogEvent) -> None:
        """One event, one log line: its outcome and the masked number, never the number or the user."""
        started = time.perf_counter()
        fields: dict[str, Any] = {
            "event_id": (event.uuid or "")[:64] or None,
            "event_type": (event.event_type or "")[:128],
        }
        try:
            outcome = self._feedback(event, fields)
        except Exception:  # a bug of ours: the other events of the batch still get their feedback
            log.exception("okta event hook failed on one event")
            outcome = Outcome.INTERNAL_ERROR
        fields.update(outcome=outcome, duration_ms=round((time.perf_counter() - started) * 1000, 1))
        message = f"okta event {outcome}"
        if "phone" in fields:
            message += f": {fields['phone']}"
        log.log(outcome.severity, message, extra={"fields": fields})

    def _feedback(self, event: LogEvent, fields: dict[str, Any]) -> Outcome:
        user_id = user_of(event)
        if not passed_phone_challenge(event) or user_id is None:
            return Outcome.EVENT_IGNORED
        if self._okta is None or self._client is None or self._service_sid is None:
            fields["missing"] = self.missing
            return Outcome.NOT_CONFIGURED
        try:
            numbers = self._okta.phone_numbers(user_id)
        except OktaApiUnavailable as error:
            fields["okta_api_error"] = error.reason
            return Outcome.OKTA_API_UNAVAILABLE
        if not numbers:
            return Outcome.FEEDBACK_NO_PHONE
        outcome = Outcome.FEEDBACK_NOT_PENDING
        for number in numbers:
            masked = mask(number)
            mark_sensitive(number, masked)
            fields["phone"] = masked
            approval = self._approve(number)
            fields.update(approval.log_fields)
            if approval.outcome is Outcome.FEEDBACK_FAILED:
                return approval.outcome
            if approval.outcome is Outcome.FEEDBACK_APPROVED:
                outcome = approval.outcome
        return outcome

    def _approve(self, number: str) -> Approval:
        """Verify's update by number: approved, or 404 when nothing is pending (normal: not ours, or done)."""
        assert self._client is not None and self._service_sid is not None
        try:
            # The number goes in the path percent-encoded (%2B…), as Twilio documents it: a bare '+' in a
            # URL can be read as a space.
            verifications = self._client.verify.v2.services(self._service_sid).verifications
            verification = verifications(quote(number, safe="")).update(status="approved")
        except TwilioRestException as error:
            if error.status == HTTPStatus.NOT_FOUND:
                return Approval(Outcome.FEEDBACK_NOT_PENDING, {})
            code = error_code(error)
            return Approval(
                Outcome.FEEDBACK_FAILED, {"twilio_error_code": code, "error_meaning": twilio_error(code).meaning}
            )
        except TwilioException:
            return Approval(Outcome.FEEDBACK_FAILED, {"twilio_error": "TWILIO_ERROR"})
        except TwilioUnavailable as error:
            reason = "TWILIO_TIMEOUT" if error.timed_out else "TWILIO_UNREACHABLE"
            return Approval(Outcome.FEEDBACK_FAILED, {"twilio_error": reason})
        return Approval(Outcome.FEEDBACK_APPROVED, {"twilio_sid": str(verification.sid)})
