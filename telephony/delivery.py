"""Delivering the code through Twilio: an SMS, a voice call, or Twilio Verify with Okta's code."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus

from pydantic import SecretStr
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.rest import Client

from models import DeliveryChannel, MessageProfile
from telephony.answers import Answer, code_too_long, not_configured, successful
from telephony.locales import read_locale
from telephony.settings import CODE_PLACEHOLDER, Settings
from telephony.templates import holds_code
from telephony.twilio_errors import (
    UNREADABLE_ANSWER,
    answered_status,
    malformed_answer,
    not_accepted,
    transport_failure,
    twilio_failure,
)
from telephony.twilio_facts import SMS_MAX_CHARS, is_sid
from telephony.twilio_http import TwilioTransport, TwilioUnavailable, counting_attempts, last_status
from telephony.voice import VoiceScript

VALIDITY_PERIOD_MAX = 36000  # seconds; Twilio's upper bound for ValidityPeriod
VERIFY_CODE_MAX = 10  # characters; Verify takes custom codes of 4 to 10
CALL_TIME_LIMIT = 60  # seconds; the script takes ~20 s, and a short cap limits toll-fraud cost
DEFAULT_SMS_TEXT = f"Your verification code is {CODE_PLACEHOLDER}"
# The SID of the resource each API creates: SM or MM (an SMS, or one Twilio sends as MMS), CA, VE.
SID_PREFIXES = {"message": ("SM", "MM"), "call": ("CA",), "verify": ("VE",)}
# The statuses a resource has when Twilio took it on (twilio-oai: message_enum_status, call_enum_status;
# Verify's verification starts 'pending'). Anything else, 'failed' or 'canceled' above all, proves
# nothing was sent: Okta must fall back.
ACCEPTED_STATUSES = {
    "message": frozenset({"accepted", "queued", "sending", "sent", "delivered", "read"}),
    "call": frozenset({"queued", "initiated", "ringing", "in-progress"}),
    "verify": frozenset({"pending"}),
}


def twilio_credentials(settings: Settings) -> tuple[str, str, SecretStr] | None:
    """The account, and the username and password Twilio's API takes: an API key (Twilio's advice for
    production), else the account's Auth Token. None when neither is complete."""
    account = settings.twilio_account_sid
    if not account:
        return None
    if settings.twilio_api_key and settings.twilio_api_secret:
        return account, settings.twilio_api_key, settings.twilio_api_secret
    if settings.twilio_auth_token:
        return account, account, settings.twilio_auth_token
    return None


def build_client(settings: Settings) -> Client | None:
    """One Twilio client per process, reused by every hook; None when no credentials are set."""
    credentials = twilio_credentials(settings)
    if credentials is None:
        return None
    account, username, password = credentials
    transport = TwilioTransport(
        timeout_seconds=settings.twilio_timeout_seconds,
        pool_size=settings.threads,
        base_url=settings.twilio_api_base_url,
    )
    # Region and edge from the checked settings, never from the library's own read of os.environ.
    routing = {"TWILIO_REGION": settings.twilio_region or "", "TWILIO_EDGE": settings.twilio_edge or ""}
    client = Client(username, password.get_secret_value(), account, http_client=transport, environment=routing)
    # The library imports each API on first use: pay that at start-up, not inside the first hook's 3 s.
    _ = client.verify.v2.services if settings.twilio_verify_service_sid else client.api.v2010.account.messages
    return client


def sms_text(profile: MessageProfile, template: str | None) -> str:
    """The admin's SMS_TEMPLATE, else Okta's localised msgTemplate when it carries the code."""
    okta_text = profile.msg_template
    if not template and okta_text and holds_code(okta_text, profile.otp_code) and len(okta_text) <= SMS_MAX_CHARS:
        return okta_text
    return (template or DEFAULT_SMS_TEXT).replace(CODE_PLACEHOLDER, profile.otp_code)


def seconds_left(profile: MessageProfile, now: datetime) -> int | None:
    """Whole seconds until the code expires (None when Okta did not say)."""
    if profile.otp_expires is None:
        return None
    return math.ceil((profile.otp_expires - now).total_seconds())


# Twilio Verify's supported locales (twilio.com/docs/verify/supported-languages). Verify answers 404
# to any other, which would send the user to Okta's provider: those are left out, and Verify chooses
# the language from the number's country code. Support depends on the channel too: see locale_refused.
VERIFY_LOCALES = frozenset(
    {
        "af", "ar", "ca", "cs", "da", "de", "el", "en", "en-GB", "es", "et", "fi", "fr", "he", "hi", "hr",
        "hu", "id", "it", "ja", "kn", "ko", "lt", "mr", "ms", "nb", "nl", "pl", "pt", "pt-BR", "ro", "ru",
        "sk", "sv", "te", "th", "tl", "tr", "uk", "vi", "zh", "zh-CN", "zh-HK",
    }
)  # fmt: skip
_REGION_MATTERS = frozenset({"zh"})  # zh-TW is not zh (Simplified, mainland terms): let Verify choose


def verify_locale(locale: str | None) -> str | None:
    """Okta's 'EN-US' / 'pt_BR' -> a supported Verify locale ('en', 'pt-BR'); None lets Verify choose."""
    read = read_locale(locale)
    if read is None:
        return None
    if read.tag in VERIFY_LOCALES:
        return read.tag
    if read.region and read.language in _REGION_MATTERS:
        return None
    return read.language if read.language in VERIFY_LOCALES else None


VERIFY_LOCALE_REFUSED = 60331  # the locale is not one Verify's text-to-speech speaks (a call)


def locale_refused(error: TwilioRestException | TwilioServiceException) -> bool:
    """Whether Verify refused a create for its locale: 404 (Verify's word for an unsupported locale, on
    a service that exists) or 60331 (none for the call's voice), answered 4xx: a refusal, nothing was
    sent. A 5xx, whatever its body says, may hide a verification that went: never asked again."""
    status = answered_status(error, last_status())
    if status is None or not HTTPStatus.BAD_REQUEST <= status < HTTPStatus.INTERNAL_SERVER_ERROR:
        return False
    return status == HTTPStatus.NOT_FOUND or error.code == VERIFY_LOCALE_REFUSED


class TwilioDelivery:
    """Sends one code and turns Twilio's answer into Okta's."""

    def __init__(self, settings: Settings, client: Client | None) -> None:
        self._settings = settings
        self._client = client
        self._voice = VoiceScript(settings.voice_phrases, settings.voice_name)
        # Decided once: what each channel still lacks (None when it can send).
        self.missing: dict[DeliveryChannel, str | None] = {
            channel: missing_configuration(settings, client is not None, channel) for channel in ("sms", "voice")
        }

    def deliver(
        self,
        profile: MessageProfile,
        status_callback: str | None = None,
        until: float | None = None,
        clear: Callable[[], None] | None = None,
    ) -> Answer:
        """Send the code; a refusal (misconfigured, Twilio error or unreachable) raises Refused.
        `status_callback`: where Twilio posts the message's or call's receipts (Verify has none);
        `until`: a time.monotonic() value Twilio's call must end by (the hook's budget);
        `clear`: called once the request to Twilio is ready, before it is sent (it raises to stop it)."""
        validity = seconds_left(profile, datetime.now(UTC))
        client = self._require_client(profile)
        started = time.perf_counter()
        # One deadline for all of this code's calls to Twilio (Verify may be asked twice), within the budget
        limit = time.monotonic() + self._settings.twilio_timeout_seconds
        until = limit if until is None else min(until, limit)
        allowed = max(until - time.monotonic(), 0.0)  # what Twilio had: less when the budget is shorter
        with counting_attempts(until, clear) as attempts:
            try:
                sid, status, api = self._send(client, profile, validity, status_callback)
            except TwilioException as error:
                raise twilio_failure(error, attempts.count, attempts.http_status) from None
            except TwilioUnavailable as error:
                raise transport_failure(error, allowed) from None
            except UNREADABLE_ANSWER as error:
                raise malformed_answer(type(error).__name__, attempts.count) from None  # a 2xx the library cannot read
        if not is_sid(sid, *SID_PREFIXES[api]):  # only a resource Twilio created proves the code was accepted
            raise malformed_answer("unexpected SID", attempts.count)
        if status not in ACCEPTED_STATUSES[api]:
            raise not_accepted(api, status, attempts.count, sid)
        elapsed_ms = round((time.perf_counter() - started) * 1000)
        return successful(
            provider=self._settings.okta_provider_name,
            transaction_id=sid,
            metadata=f"{profile.delivery_channel} {api} {status} in {elapsed_ms} ms",
            log_fields={
                "twilio_sid": sid,
                "twilio_status": status,
                "twilio_ms": elapsed_ms,
                "twilio_attempts": attempts.count,
            },
        )

    def _send(
        self, client: Client, profile: MessageProfile, validity: int | None, status_callback: str | None
    ) -> tuple[str, str, str]:
        """Returns Twilio's SID, its status, and which API carried the code."""
        settings = self._settings
        if settings.twilio_verify_service_sid:
            if len(profile.otp_code) > VERIFY_CODE_MAX:
                raise code_too_long(len(profile.otp_code), VERIFY_CODE_MAX)
            create = client.verify.v2.services(settings.twilio_verify_service_sid).verifications.create
            channel = "sms" if profile.delivery_channel == "sms" else "call"
            locale = verify_locale(profile.locale)
            try:
                verification = create(
                    to=profile.phone_number, channel=channel, custom_code=profile.otp_code, locale=locale
                )
            except (TwilioRestException, TwilioServiceException) as error:
                if locale is None or not locale_refused(error):
                    raise
                # Verify refused the language for this channel, and so sent nothing: as Twilio advises,
                # asked again without it (Verify then chooses by the number's country).
                verification = create(to=profile.phone_number, channel=channel, custom_code=profile.otp_code)
            return str(verification.sid), str(verification.status), "verify"
        if profile.delivery_channel == "sms":
            message = client.messages.create(
                to=profile.phone_number,
                body=sms_text(profile, settings.sms_template),
                # The library leaves out parameters given as None.
                messaging_service_sid=settings.twilio_messaging_service_sid,
                from_=None if settings.twilio_messaging_service_sid else settings.twilio_from_number,
                # Bounds only the time the SMS may wait in Twilio's own queue (then error 30036), not
                # carrier delivery: a code that would leave Twilio after it expires is not sent at all.
                validity_period=min(max(validity, 1), VALIDITY_PERIOD_MAX) if validity is not None else None,
                status_callback=status_callback,
            )
            return str(message.sid), str(message.status), "message"
        call = client.calls.create(
            to=profile.phone_number,
            from_=settings.twilio_from_number,
            twiml=self._voice.twiml(profile.otp_code, profile.locale, profile.msg_template),
            time_limit=CALL_TIME_LIMIT,
            status_callback=status_callback,  # Twilio posts the call's final status (completed, busy, ...)
        )
        return str(call.sid), str(call.status), "call"

    def _require_client(self, profile: MessageProfile) -> Client:
        """The client, or a refusal naming what the admin has yet to configure."""
        missing = self.missing[profile.delivery_channel]
        if missing is not None or self._client is None:
            raise not_configured(missing or "Twilio credentials")
        return self._client


def missing_configuration(settings: Settings, has_client: bool, channel: DeliveryChannel) -> str | None:
    """What the admin has yet to configure before `channel` can send, in words for the log and Okta."""
    missing = []
    if not has_client:
        missing.append("TWILIO_ACCOUNT_SID with TWILIO_AUTH_TOKEN (or TWILIO_API_KEY and TWILIO_API_SECRET)")
    if settings.twilio_verify_service_sid or settings.twilio_from_number:
        pass
    elif channel == "voice":
        missing.append("TWILIO_FROM_NUMBER")
    elif not settings.twilio_messaging_service_sid:
        missing.append("TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID")
    return " and ".join(missing) or None
