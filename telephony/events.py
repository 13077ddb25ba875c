"""Okta's event hook at /okta/events: Twilio Verify feedback for the codes users typed in.

Twilio asks everyone who sends Verify custom codes to report each verification's outcome; without
it, verifications stay pending and repeated codes to one number hit 60203. Okta tells us a user
passed an SMS or voice challenge through an event hook; the event names the user, not the number,
so Okta's Management API gives the user's phone numbers, and Verify's update by number marks the
pending verification `approved`. This serves Okta's built-in Twilio provider as well.

What one event may do, and what one POST may cost:
- an event approves only the number of the factor the user passed: the enrolment it names (one
  phone enrolment may be challenged by SMS or by voice, whichever type Okta lists it under), and
  nothing when that is not one of the user's active phone factors; when it names none, SMS_FACTOR (or
  methodTypeUsed SMS) the user's one "sms" factor, CALL_FACTOR (or VOICE) the "call" one, never the
  other type, and nothing when the user has several;
- an event is acted on once: its `uuid` is claimed before anything is done (per instance, or across
  instances when a shared store is given), so a repeated delivery approves no newer code. At most
  once: an event whose calls then fail is not acted on again;
- an event published more than EVENT_MAX_AGE_SECONDS ago (a Verify code's life) approves nothing;
- one POST handles at most MAX_EVENTS_PER_POST events (the rest are counted, not read), makes at
  most one Management API read per user and one Verify update per user and factor, and is answered
  within EVENT_BUDGET_SECONDS whatever is left running;
- each approval is its own log line (its SID, the masked number); the POST's own line counts
  everything else (events that are not passed phone challenges, repeats, stale, over the cap).

Events acted on (okta-developer-docs, event-types.json), each only with outcome SUCCESS:
- `user.authentication.auth_via_mfa` whose `debugContext.debugData.factor` is SMS_FACTOR or
  CALL_FACTOR; its `factorIntent` says LOGIN, CREDENTIAL_ENROLLMENT or CREDENTIAL_RECOVERY, so sign-in,
  enrolment and recovery challenges all arrive as this one type in Identity Engine;
- `user.mfa.factor.activate` whose AuthenticatorEnrollment target's `methodTypeUsed` is SMS or VOICE
  (a phone enrolment completed). One made by someone else (an admin, an app through the Factors API)
  may carry the user's code or none (activate=true): it proves the number only when Verify approves
  the code it holds pending for it.
"""

from __future__ import annotations

import contextvars
import logging
import re
import threading
import time
import unicodedata
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, NamedTuple
from urllib.parse import quote

import flask
from pydantic import ValidationError
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.rest import Client

from models import EventDelivery, EventHookAccepted, EventHookRequest, EventHookVerification, LogEvent
from telephony.answers import (
    MAX_EVENT_BODY_BYTES,
    Answer,
    Outcome,
    body_too_large,
    body_too_slow,
    body_unreadable,
    event_hook_verified,
    events_received,
    invalid_request,
    method_not_allowed,
    unauthorized,
    verification_challenge_missing,
)
from telephony.auth import HeaderSecret
from telephony.delivery import build_client
from telephony.guard import SpendGuard
from telephony.intake import BODY_READ_SECONDS, read_body
from telephony.logs import mark_sensitive
from telephony.okta_api import OktaApi, OktaApiUnavailable, PhoneFactor
from telephony.phone import NumberFacts, mask, read_number
from telephony.settings import Settings
from telephony.store import Claims, LocalClaims
from telephony.twilio_errors import (
    UNREADABLE_ANSWER,
    answered_status,
    error_code,
    http_only,
    status_word,
    twilio_error,
)
from telephony.twilio_facts import is_sid
from telephony.twilio_http import TwilioUnavailable, counting_attempts

EVENT_BUDGET_SECONDS = 2.5  # Okta waits 3 s for an event hook too; the rest is network and our own work
EVENT_WORKERS = 8  # users of one POST handled at once, per instance
POST_WAITERS_SHARE = 16  # at most THREADS / 16 POSTs wait for their users at once (5 of 80), at least one
MAX_EVENTS_PER_POST = 100  # Okta's deliveries are small batches; the rest of a larger POST is not read
MAX_USERS_WAITING = 64  # users waiting for a worker, across POSTs: beyond it a POST's users are skipped
EVENT_MAX_AGE_SECONDS = 600  # a Verify code lives 10 minutes: an older event cannot be about a live one
EVENT_CLOCK_SKEW_SECONDS = 300  # an event published this far in the future is not believed either
# A late event approves no code, but still proves the number is its owner's: the spend guard takes it
# as a conversion for a day after it was published.
CONVERSION_MAX_AGE_SECONDS = 86400
# Each event is claimed for as long as it can act (past it, the age check refuses), late ones too: a
# conversion frees the codes sent by the event's time, and one published ahead of our clock (skew is
# allowed) would otherwise free, delivered again, codes sent after it was first acted on.
EVENT_CLAIM_SECONDS = CONVERSION_MAX_AGE_SECONDS + EVENT_CLOCK_SKEW_SECONDS
# Okta's factorType of the factor each challenge or enrolment method used.
FACTOR_OF_CHALLENGE = {"SMS_FACTOR": "sms", "CALL_FACTOR": "call"}
FACTOR_OF_METHOD = {"SMS": "sms", "VOICE": "call"}

OKTA_ID = re.compile(r"[0-9A-Za-z]{1,64}")  # Okta's ids: 00u followed by letters and digits
ROUTE = "event hook"
log = logging.getLogger("okta_events")


class Approval(NamedTuple):
    """What Verify's update by number said: approved (with the SID), nothing pending, or a failure."""

    outcome: Outcome
    log_fields: dict[str, Any]


class Passed(NamedTuple):
    """A passed SMS or voice challenge: who, which factor type ("sms" or "call"), the enrolment the
    event names, if it does, and whether the event itself proves the user typed a code: an activation
    made by someone else (an admin, an app through the Factors API) may carry the user's code or none
    (activate=true), so it proves the number only when Verify approves the code it holds pending."""

    user_id: str
    factor_type: str
    enrollment_id: str | None
    proven: bool = True


def passed_challenge(event: LogEvent) -> Passed | None:
    """The user and factor of a passed SMS or voice challenge (sign-in, enrolment, recovery); None for
    any other event."""
    if event.outcome is None or event.outcome.result != "SUCCESS":
        return None
    enrollments = [target for target in event.target or [] if target.type == "AuthenticatorEnrollment"]
    factor_type: str | None = None
    enrollment_id: str | None = None
    if event.event_type == "user.authentication.auth_via_mfa":
        debug = (event.debug_context.debug_data if event.debug_context else None) or {}
        factor_type = FACTOR_OF_CHALLENGE.get(str(debug.get("factor")))
        enrollment_id = next((target.id for target in enrollments if target.id), None)
    elif event.event_type == "user.mfa.factor.activate":
        for target in enrollments:
            factor_type = FACTOR_OF_METHOD.get(str((target.detail_entry or {}).get("methodTypeUsed")))
            if factor_type is not None:
                enrollment_id = target.id
                break
    user_id = user_of(event)
    if factor_type is None or user_id is None:
        return None
    by_another = event.actor is None or event.actor.type != "User" or event.actor.id != user_id
    proven = not (event.event_type == "user.mfa.factor.activate" and by_another)
    return Passed(user_id, factor_type, enrollment_id, proven)


def user_of(event: LogEvent) -> str | None:
    """The user who passed: the User target when the event has one (an admin may act), else the actor.
    Only an id shaped like Okta's (letters and digits) is used: it goes into the Management API's path."""
    candidates = [target.id for target in event.target or [] if target.type == "User"]
    if event.actor is not None and event.actor.type == "User":
        candidates.append(event.actor.id)
    user_id = next((candidate for candidate in candidates if candidate), None)
    return user_id if user_id is not None and OKTA_ID.fullmatch(user_id) else None


def event_age(event: LogEvent, now: datetime) -> float | None:
    """Seconds since the event was published; None when its time cannot be read or is in the future
    beyond clock skew."""
    try:
        published = datetime.fromisoformat(event.published or "")
    except ValueError:
        return None
    if published.tzinfo is None:
        return None
    age = (now - published).total_seconds()
    return age if age >= -EVENT_CLOCK_SKEW_SECONDS else None


def too_old(event: LogEvent, now: datetime) -> bool:
    """Whether the event cannot be about a code still alive: published over EVENT_MAX_AGE_SECONDS ago,
    in the future beyond clock skew, or at a time that cannot be read."""
    return _too_old(event_age(event, now))


def _too_old(age: float | None) -> bool:
    return age is None or age > EVENT_MAX_AGE_SECONDS


def numbers_passed(factors: list[PhoneFactor], factor_type: str, enrollment_ids: set[str]) -> list[str]:
    """The numbers that may be the factor the user passed: the enrolment the event names, whatever type
    Okta lists it under (one phone enrolment may be challenged by SMS or by voice), and none when it is
    not one of the user's active phone factors (removed since, another user's, an email enrolment):
    the code was typed on that enrolment, not on another number. When the event names no enrolment,
    the user's factors of the challenge's type. Without repeats, in Okta's order. Only one is a proof:
    with several, which one passed is not known."""
    if enrollment_ids:
        candidates = [factor for factor in factors if factor.factor_id and factor.factor_id in enrollment_ids]
    else:
        candidates = [factor for factor in factors if factor.factor_type == factor_type]
    numbers: list[str] = []
    for factor in candidates:
        if factor.number not in numbers:
            numbers.append(factor.number)
    return numbers


class _Passes:
    """One user's passed challenges of one factor type in a POST: acted on together, once."""

    __slots__ = ("enrolments", "event_ids", "event_type", "passed_at", "proven")

    def __init__(self, event_type: str) -> None:
        self.event_type = event_type
        self.event_ids: list[str] = []
        self.passed_at = 0.0  # the latest event's `published`, since the epoch: the codes proven came before
        # Each enrolment the events name ("": none named), and whether an event naming it is fresh...
        self.enrolments: dict[str, bool] = {}
        # ...and whether one proves the user typed a code (Passed.proven).
        self.proven: dict[str, bool] = {}

    def add(self, event_id: str, enrollment_id: str | None, fresh: bool, passed_at: float, proven: bool = True) -> None:
        self.event_ids.append(event_id)
        self.passed_at = max(self.passed_at, passed_at)
        key = enrollment_id or ""
        self.enrolments[key] = self.enrolments.get(key, False) or fresh
        self.proven[key] = self.proven.get(key, False) or proven

    def numbers(self, factors: list[PhoneFactor], factor_type: str) -> tuple[list[str], list[str], bool, set[str]]:
        """The numbers the events name, each event as it alone would, and of those the ones a fresh
        event names: only theirs may have the pending Verify code that was typed in. Okta's order.
        Then whether an event proved nothing because it fits several numbers (no enrolment named, and
        the user has several numbers of the type): converting or approving them all would credit
        numbers nobody typed a code from. Last, the numbers only activations made by someone else name:
        they count only once Verify approves their pending code."""
        named: list[str] = []
        fresh: list[str] = []
        ambiguous = False
        proven: set[str] = set()
        for enrollment_id, is_fresh in self.enrolments.items():
            candidates = numbers_passed(factors, factor_type, {enrollment_id} if enrollment_id else set())
            if len(candidates) > 1:
                ambiguous = True
                continue
            for number in candidates:
                if number not in named:
                    named.append(number)
                if is_fresh and number not in fresh:
                    fresh.append(number)
                if self.proven[enrollment_id]:
                    proven.add(number)
        return named, fresh, ambiguous, set(named) - proven


def canonical_uuid(uuid: str | None) -> str:
    """One spelling of an event's uuid, so a redelivery spelled otherwise ('{…}', upper case, no dashes,
    'urn:uuid:…', full-width digits) is the same event. Clipped: it comes from the caller."""
    plain = unicodedata.normalize("NFKC", (uuid or "")[:160]).lower().removeprefix("urn:uuid:")
    return "".join(char for char in plain if char.isascii() and char.isalnum())[:128]


def okta_spelling(event_id: str) -> str:
    """A canonical uuid as Okta's System Log writes it (8-4-4-4-12), so a search for it finds the line."""
    if len(event_id) == 32 and all(char in "0123456789abcdef" for char in event_id):
        return "-".join((event_id[:8], event_id[8:12], event_id[12:16], event_id[16:20], event_id[20:]))
    return event_id[:64]


class EventHook:
    """The /okta/events route, built once at start-up."""

    name = ROUTE
    path = "/okta/events"
    log = log

    def __init__(self, settings: Settings, claims: Claims | None = None, guard: SpendGuard | None = None) -> None:
        self._guard = guard  # told of every passed challenge: the user's numbers are known from then on
        self._default_country = settings.default_country  # how national digits in a factor are read
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
        self._claims: Claims = claims or LocalClaims()
        self._workers = ThreadPoolExecutor(max_workers=EVENT_WORKERS, thread_name_prefix="okta-events")
        self._waiting = 0  # users submitted to the workers and not finished, across POSTs
        self._waiting_lock = threading.Lock()
        self._waiting_posts = threading.BoundedSemaphore(max(1, settings.threads // POST_WAITERS_SHARE))
        # What a passed challenge needs to lead anywhere (_can_act): the user's numbers, and Verify to
        # tell or the spend guard (which needs no Verify).
        missing = []
        if self._okta is None:
            missing.append("OKTA_ORG_URL and OKTA_API_TOKEN")
        if self._client is None and not self._guard_on:
            missing.append("TWILIO_VERIFY_SERVICE_SID with Twilio credentials")
        self.missing = " and ".join(missing) or None

    @property
    def configured(self) -> bool:
        """Whether the admin set the event hook up (its secret): only then is what it lacks worth a word."""
        return self._auth is not None

    def startup_report(self) -> list[tuple[int, str]]:
        if not self.configured:
            return []
        if self.missing:
            return [
                (
                    logging.CRITICAL,
                    f"The event hook (/okta/events) cannot act on passed challenges: the function is missing "
                    f"{self.missing}.",
                )
            ]
        if self._client is None:
            # SMS or voice through Messages: no Verify to feed back, and the conversions serve the guard.
            return [(logging.INFO, "The event hook at /okta/events reports conversions to the spend guard.")]
        return []

    def handle(self, request: flask.Request) -> Answer:
        started = time.monotonic()
        if request.method not in ("GET", "POST"):
            raise method_not_allowed(ROUTE, "GET, POST")
        # Authenticated from the headers, before a byte of the body is read; fail closed.
        if self._auth is None:
            hint = "No event hook secret is configured (OKTA_EVENT_HOOK_AUTH_SECRET)."
            raise unauthorized(hint, "configuration", route=ROUTE)
        self._auth.verify(request.headers)
        if request.method == "GET":
            return self._verification(request)
        body = read_body(
            request,
            lambda: body_too_large(ROUTE, MAX_EVENT_BODY_BYTES),
            MAX_EVENT_BODY_BYTES,
            unreadable=lambda: body_unreadable(ROUTE),
            seconds=BODY_READ_SECONDS,
            too_slow=lambda: body_too_slow(ROUTE, BODY_READ_SECONDS),
        )
        delivered, events = self._parse(body)
        counts = {"events": delivered, "over_cap": delivered - len(events)}
        passes = self._sort(events, counts)
        if counts["not_configured"]:  # what the admin must fix: one ERROR line per POST, not one per event
            fields = {"outcome": Outcome.NOT_CONFIGURED, "events": counts["not_configured"], "missing": self.missing}
            log.error(f"okta event {Outcome.NOT_CONFIGURED}: missing {self.missing}", extra={"fields": fields})
        futures = self._submit(passes, counts)
        # Each user's calls are bounded; the POST is answered by Okta's deadline whatever is left. It waits
        # for them (Cloud Run gives CPU to requests in flight) while few other POSTs do: the instance's
        # threads are the telephony hook's too, and POSTs queued behind waiting ones would pass Okta's 3 s.
        unfinished = [future for future in futures if not future.done()]
        if unfinished and self._waiting_posts.acquire(blocking=False):
            try:
                timeout = max(0.0, started + EVENT_BUDGET_SECONDS - time.monotonic())
                unfinished = list(wait(unfinished, timeout=timeout).not_done)
            finally:
                self._waiting_posts.release()
        counts["unfinished"] = len(unfinished)
        return events_received(EventHookAccepted(), counts)

    def _verification(self, request: flask.Request) -> Answer:
        """Okta's one-time check of a new event hook: echo the challenge."""
        challenge = request.headers.get("X-Okta-Verification-Challenge")
        if not challenge:
            raise verification_challenge_missing()
        return event_hook_verified(EventHookVerification(verification=challenge))

    def _parse(self, body: bytes) -> tuple[int, list[LogEvent]]:
        """How many events the POST carries, and the first MAX_EVENTS_PER_POST of them, read. The
        rest are never read as events: a POST of 128,000 costs what a POST of MAX_EVENTS_PER_POST does."""
        try:
            delivery = EventDelivery.model_validate_json(body)
            first = delivery.data.events[:MAX_EVENTS_PER_POST]
            # Read through the documented model, so a malformed event is named as data.events.N.field.
            events = EventHookRequest.model_validate({"data": {"events": first}}).data.events
        except ValidationError as error:
            raise invalid_request(ROUTE, error) from None
        return len(delivery.data.events), events

    @property
    def _can_act(self) -> bool:
        """Whether a passed challenge leads anywhere: the user's numbers can be read, and Verify told or
        the spend guard (in every delivery mode: it needs no Verify)."""
        return self._okta is not None and (self._client is not None or self._guard_on)

    @property
    def _guard_on(self) -> bool:
        return self._guard is not None and self._guard.on

    def _sort(self, events: list[LogEvent], counts: dict[str, int]) -> dict[str, dict[str, _Passes]]:
        """The passed challenges to act on, by user and factor type; every other event counted by why not."""
        for name in ("ignored", "stale", "repeated", "not_configured"):
            counts[name] = 0
        now = datetime.now(UTC)
        kept: list[tuple[LogEvent, Passed, str, bool, float]] = []
        for event in events:
            passed = passed_challenge(event)
            event_id = canonical_uuid(event.uuid)
            if passed is None or not event_id:
                counts["ignored"] += 1  # not a passed phone challenge, or one that cannot be acted on once
                continue
            age = event_age(event, now)
            fresh = not _too_old(age)  # its `published` read once
            if not fresh:
                counts["stale"] += 1  # whatever is configured: the admin's count of what came late
                if not (self._can_act and self._guard_on) or age is None or age > CONVERSION_MAX_AGE_SECONDS:
                    continue  # nothing left to do with it
            elif not self._can_act:
                counts["not_configured"] += 1
                continue
            assert age is not None
            kept.append((event, passed, event_id, fresh, now.timestamp() - age))
        # Each is acted on once: claimed all together, one store round trip for the POST.
        keys = [f"okta-event:{event_id}" for _, _, event_id, _, _ in kept]
        claimed = iter(self._claims.claim_all(keys, EVENT_CLAIM_SECONDS) if keys else [])
        passes: dict[str, dict[str, _Passes]] = {}
        for event, passed, event_id, fresh, passed_at in kept:
            if not next(claimed):
                counts["repeated"] += 1  # acted on already, in this POST or an earlier delivery
                continue
            by_factor = passes.setdefault(passed.user_id, {})
            grouped = by_factor.setdefault(passed.factor_type, _Passes((event.event_type or "")[:128]))
            grouped.add(event_id, passed.enrollment_id, fresh, passed_at, passed.proven)
        return passes

    def _submit(self, passes: dict[str, dict[str, _Passes]], counts: dict[str, int]) -> list[Future[None]]:
        """One job per user, while fewer than MAX_USERS_WAITING wait for a worker; the rest are counted."""
        futures: list[Future[None]] = []
        counts["users"] = len(passes)
        counts["users_skipped"] = 0
        for user_id, by_factor in passes.items():
            with self._waiting_lock:
                if self._waiting >= MAX_USERS_WAITING:
                    counts["users_skipped"] += 1
                    continue
                self._waiting += 1
            futures.append(
                self._workers.submit(contextvars.copy_context().run, self._user_feedback, user_id, by_factor)
            )
        return futures

    def _user_feedback(self, user_id: str, by_factor: dict[str, _Passes]) -> None:
        """One user's feedback: one Management API read, then one Verify update per factor passed."""
        try:
            self._feedback(user_id, by_factor)
        except Exception:  # a bug of ours: the other users of the POST still get their feedback
            log.exception("okta event hook failed on one user's events")
            for factor_type, passes in by_factor.items():
                self._line(Outcome.INTERNAL_ERROR, passes, {"factor": factor_type})
        finally:
            with self._waiting_lock:
                self._waiting -= 1

    def _feedback(self, user_id: str, by_factor: dict[str, _Passes]) -> None:
        assert self._okta is not None
        started = time.perf_counter()
        try:
            factors = self._okta.phone_factors(user_id)
        except OktaApiUnavailable as error:
            for factor_type, passes in by_factor.items():
                failed = {"factor": factor_type, "okta_api_error": error.reason}
                self._line(Outcome.OKTA_API_UNAVAILABLE, passes, failed, started)
            return
        for factor_type, passes in by_factor.items():
            numbers, fresh, ambiguous, unproven = passes.numbers(factors, factor_type)
            verify_asked = False  # one Verify update per user and factor: other numbers convert only
            # Here the owner of `numbers` is known to have passed a challenge on them (`unproven` ones:
            # once Verify approves the code it holds pending for them).
            if ambiguous:
                self._line(Outcome.FEEDBACK_AMBIGUOUS, passes, {"factor": factor_type}, started)
            elif not numbers:
                self._line(Outcome.FEEDBACK_NO_PHONE, passes, {"factor": factor_type}, started)
            for number in numbers:
                read = read_number(number, self._default_country)
                masked = mask(read.e164 if read else number)  # as the hook's lines mask it, when it can be read
                mark_sensitive(number, masked)
                if read is not None:
                    mark_sensitive(read.e164, masked)
                    mark_sensitive(read.e164.removeprefix("+"), masked)
                fields: dict[str, Any] = {"factor": factor_type, "phone": masked}
                converted = number not in unproven and self._convert(read, passes, fields, started)
                if self._client is not None and number in fresh and not verify_asked:
                    verify_asked = True
                    approval = self._approve(read.e164 if read else number)  # as the hook started it
                    if number in unproven and approval.outcome is Outcome.FEEDBACK_APPROVED:
                        self._convert(read, passes, fields, started)  # the user typed the code it held
                    self._line(approval.outcome, passes, {**fields, **approval.log_fields}, started)
                elif number in unproven:  # made by someone else, and no Verify approval to prove it
                    self._line(Outcome.NOT_PROVEN, passes, fields, started)
                elif converted:  # the conversion is all there is to do
                    self._line(Outcome.CONVERTED, passes, fields, started)

    def _convert(self, read: NumberFacts | None, passes: _Passes, fields: dict[str, Any], started: float) -> bool:
        """The spend guard learns the number converted: known from now on, its room given back. False,
        with a line of its own (what an alert keys on), when it could not be recorded; True with the
        guard off (nothing to record)."""
        if self._guard is None or not self._guard_on:
            return True
        converted = fields["guard_converted"] = read is not None and self._guard.converted(read, passes.passed_at)
        if not converted:
            self._line(Outcome.NOT_CONVERTED, passes, fields, started)
        return converted

    @staticmethod
    def _line(outcome: Outcome, passes: _Passes, fields: dict[str, Any], started: float | None = None) -> None:
        """One line per Verify update (or per failure before one): never the number, the user or the code."""
        line = {
            "event_id": okta_spelling(passes.event_ids[0]),
            "event_type": passes.event_type,
            "events": len(passes.event_ids),
            **fields,
            "outcome": outcome,
        }
        if started is not None:
            line["duration_ms"] = round((time.perf_counter() - started) * 1000, 1)
        message = f"okta event {outcome}" + (f": {fields['phone']}" if "phone" in fields else "")
        log.log(outcome.severity, message, extra={"fields": line})

    def _approve(self, number: str) -> Approval:
        """Verify's update by number: approved, or 404 when nothing is pending (normal: not ours, or done)."""
        assert self._client is not None and self._service_sid is not None
        verifications = self._client.verify.v2.services(self._service_sid).verifications
        try:
            # The number goes in the path percent-encoded (%2B…), as Twilio documents it: a bare '+' in a
            # URL can be read as a space.
            with counting_attempts() as attempts:  # the answer's own HTTP status, whatever its body says
                verification = verifications(quote(number, safe="")).update(status="approved")
        except (TwilioRestException, TwilioServiceException) as error:  # the latter: an RFC 9457 body
            status = answered_status(error, attempts.http_status)
            if status == HTTPStatus.NOT_FOUND:
                return Approval(Outcome.FEEDBACK_NOT_PENDING, {})
            code = error_code(error, status)
            fields: dict[str, Any] = {"twilio_http_status": status, "twilio_attempts": attempts.count}
            if code is None:  # as the hook's line says it
                fields["twilio_error"], fields["error_meaning"] = http_only(status)
            else:
                fields.update(twilio_error_code=code, error_meaning=twilio_error(code).meaning)
            return Approval(Outcome.FEEDBACK_FAILED, fields)
        except TwilioException:
            return Approval(Outcome.FEEDBACK_FAILED, {"twilio_error": "TWILIO_ERROR"})
        except TwilioUnavailable as error:
            reason = "TWILIO_TIMEOUT" if error.timed_out else "TWILIO_UNREACHABLE"
            return Approval(Outcome.FEEDBACK_FAILED, {"twilio_error": reason, "twilio_attempts": error.attempts})
        except UNREADABLE_ANSWER:  # a 2xx the library cannot read as a verification
            return Approval(Outcome.FEEDBACK_FAILED, {"twilio_error": "TWILIO_MALFORMED_ANSWER"})
        # Twilio answers with the verification as it now stands: approved, or the update did not take.
        sid, status = verification.sid, verification.status
        if not isinstance(sid, str) or not is_sid(sid, "VE"):
            return Approval(Outcome.FEEDBACK_FAILED, {"twilio_error": "TWILIO_MALFORMED_ANSWER"})
        if status != "approved":
            fields = {"twilio_error": "TWILIO_NOT_APPROVED", "twilio_status": status_word(status), "twilio_sid": sid}
            return Approval(Outcome.FEEDBACK_FAILED, fields)
        return Approval(Outcome.FEEDBACK_APPROVED, {"twilio_sid": sid})
