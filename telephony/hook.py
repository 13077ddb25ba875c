"""Okta's telephony inline hook: authenticate the call, parse it, check the code may be sent, deliver it."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import flask
from pydantic import ValidationError

from models import KNOWN_REQUEST_TYPES, MessageProfile, TelephonyHookRequest, parse_hook_request
from telephony.answers import (
    Answer,
    Refused,
    body_too_large,
    body_too_slow,
    body_unreadable,
    invalid_request,
    method_not_allowed,
)
from telephony.auth import Authenticator
from telephony.delivery import TwilioDelivery, build_client
from telephony.guard import Held, Passage, SpendGuard, unreachable_limits
from telephony.intake import BODY_READ_SECONDS, declared_too_large, read_body
from telephony.logs import REDACTED, mark_sensitive
from telephony.phone import mask, spellings
from telephony.policy import DeliveryPolicy
from telephony.settings import HOOK_BUDGET_SECONDS, Settings

ROUTE = "telephony hook"


class TelephonyHook:
    """Every path but the other routes' is Okta's telephony hook, built once at start-up."""

    name = ROUTE
    path = "/"
    log = logging.getLogger("telephony_hook")

    def __init__(
        self, settings: Settings, receipts_url: Callable[[flask.Request], str | None], guard: SpendGuard
    ) -> None:
        self._default_country = settings.default_country
        self._authenticator = Authenticator.from_settings(settings)
        self._policy = DeliveryPolicy(settings)
        self._guard = guard  # SMS pumping: limits per number, range and country, shared through its store
        self._unreachable = unreachable_limits(settings)
        self._delivery = TwilioDelivery(settings, build_client(settings))
        self._receipts_url = receipts_url
        # Whatever scheme is on, a caller may send its credentials in either header.
        self.credential_headers = tuple({settings.okta_hook_auth_header, "Authorization"})

    def startup_report(self) -> list[tuple[int, str]]:
        lines = []
        if not self._authenticator.configured:
            lines.append(
                (
                    logging.CRITICAL,
                    "No hook authentication configured (OKTA_HOOK_AUTH_SECRET or OKTA_HOOK_OAUTH_*): "
                    "every call is refused.",
                )
            )
        else:  # what Okta's hook must be set up to send: a mismatch is every call's 401
            lines.append((logging.INFO, f"Okta's calls to the hook must carry {self._authenticator.described}."))
        lines += self._policy.startup_report()
        lines.append((self._guard.startup_level, self._guard.startup_message()))
        lines += [(logging.WARNING, warning) for warning in self._unreachable]
        for channel, missing in self._delivery.missing.items():
            if missing:
                lines.append((logging.CRITICAL, f"No {channel} code can be sent: the hook is missing {missing}."))
        return lines

    def handle(self, request: flask.Request) -> Answer:
        """Authenticate, parse, check, deliver: each step answers Okta by raising Refused."""
        until = time.monotonic() + HOOK_BUDGET_SECONDS
        if request.method != "POST":
            raise method_not_allowed(ROUTE)
        if declared_too_large(request):
            raise body_too_large(ROUTE)
        self._authenticator.verify(request.headers)
        hook = self._parse(request)
        profile = hook.data.message_profile
        mark_sensitive(profile.otp_code)
        masked = self._mark_number(profile.phone_number)
        facts = {**request_facts(hook), "phone": masked}
        try:
            number = self._policy.check(profile, datetime.now(UTC))
            facts.update(country=number.country, number_type=number.number_type)
            if number.e164 != profile.phone_number:  # Twilio gets the number the guard checked
                facts["phone"] = self._mark_number(number.e164)
                profile = profile.model_copy(update={"phone_number": number.e164})
            passage = self._guard.admit(profile, number, hook.request_type, facts, until)
            answer = self._deliver(profile, request, passage, until)
        except Refused as refusal:
            answer = refusal.answer
        return answer.adding(facts, f"{facts['channel']} to {facts['phone']}")

    def _deliver(self, profile: MessageProfile, request: flask.Request, passage: Passage, until: float) -> Answer:
        """Twilio gets the code once the guard's verdict clears it (read as the request to Twilio is about
        to leave); the guard hears whether it was accepted (only then is it a retry's answer)."""
        try:
            answer = self._delivery.deliver(profile, self._receipts_url(request), until, passage.clear)
        except Held:  # the guard's verdict: nothing was sent (for Okta's retry, the first call's answer)
            raise
        except Refused as refusal:  # Okta's retry is a new attempt; the room goes back if nothing went out
            raise Refused(self._guard.failed(passage, refusal.answer)) from None
        except BaseException:
            self._guard.abandoned(passage)
            raise
        return self._guard.delivered(passage, answer)

    def _parse(self, request: flask.Request) -> TelephonyHookRequest:
        body = read_body(
            request,
            lambda: body_too_large(ROUTE),
            unreadable=lambda: body_unreadable(ROUTE),
            seconds=BODY_READ_SECONDS,
            too_slow=lambda: body_too_slow(ROUTE, BODY_READ_SECONDS),
        )
        try:
            return parse_hook_request(body, self._default_country)
        except ValidationError as error:
            _mark_as_sent(body)
            raise invalid_request(ROUTE, error) from None

    @staticmethod
    def _mark_number(e164: str) -> str:
        """The number masked, and never written otherwise from here on, with or without its '+' or its
        country code."""
        masked = mask(e164)
        for spelling in spellings(e164):  # '4155550123' is the number too
            mark_sensitive(spelling, masked)
        return masked


def _mark_as_sent(body: bytes) -> None:
    """A refused request's code and number, as sent, are as sensitive as a valid one's: Okta sends the
    same code through its own provider next, and the caller's trace header could spell it. Each is
    marked as sent, and as its digits alone ('+1 (415) 555-0123': '14155550123', '4155550123')."""
    try:
        profile = json.loads(body)["data"]["messageProfile"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return
    if not isinstance(profile, dict):
        return
    for name in ("otpCode", "phoneNumber"):
        value = profile.get(name)
        if not isinstance(value, str | int) or isinstance(value, bool):
            continue
        text = str(value)
        # A code's digits are not read as a number: without a "country code" they would be a shorter run.
        as_code = {text, text.removeprefix("+"), "".join(char for char in text if char in "0123456789")}
        for spelling in spellings(text) if name == "phoneNumber" else as_code:
            mark_sensitive(spelling)


def request_facts(hook: TelephonyHookRequest) -> dict[str, Any]:
    """What the log line says about the request: never the code, a name, a login or a number.
    Free-text fields are clipped: they come from the caller, and a log line should stay a line."""
    profile = hook.data.message_profile
    held = (profile.phone_number[-NUMBER_TAIL:], profile.otp_code)
    return {
        "event_id": _free_text(hook.event_id, 64, held),
        "request_type": _free_text(hook.request_type, 128, held),
        "request_type_known": hook.request_type in KNOWN_REQUEST_TYPES,
        "channel": profile.delivery_channel,
        "locale": _free_text(profile.locale, 35, held),
        "preview": hook.is_preview,
    }


NUMBER_TAIL = 7  # a number's last digits that a field spelling it in any way would hold


def _free_text(value: str | None, length: int, held: tuple[str, ...]) -> str | None:
    """A caller's field, clipped; redacted whole when it holds the number's tail or the code anywhere, in
    its digits alone too (spellings the scrub of whole values misses: '(415) 555-7391', '0000482913',
    '48-29-13'), looked for before the clip cuts a spelling short."""
    if not value:
        return None
    digits = "".join(char for char in value if char in "0123456789")
    if any(held_value and (held_value in value or held_value in digits) for held_value in held):
        return REDACTED
    return value[:length]
