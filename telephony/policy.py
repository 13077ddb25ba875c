"""Whether a code may be sent at all: it has not expired, and its number passes the toll-fraud guard."""

from __future__ import annotations

import logging
from datetime import datetime

from models import MessageProfile
from telephony.answers import expired, number_refused
from telephony.phone import NumberFacts, PhonePolicy, describe
from telephony.settings import DEFAULT_BLOCKED_NUMBER_TYPES, Settings


class DeliveryPolicy:
    """Checked before Twilio is called: a refused code costs nothing and Okta falls back."""

    def __init__(self, settings: Settings) -> None:
        self._allowed_countries = settings.allowed_countries
        self._unblocked = [kind for kind in DEFAULT_BLOCKED_NUMBER_TYPES if kind not in settings.blocked_number_types]
        self._phones = PhonePolicy(
            allowed_countries=frozenset(settings.allowed_countries),
            blocked_number_types=frozenset(settings.blocked_number_types),
        )

    def startup_report(self) -> list[tuple[int, str]]:
        lines = []
        if not self._allowed_countries:
            lines.append(
                (
                    logging.WARNING,
                    "ALLOWED_COUNTRIES is empty: codes go to every country, the toll-fraud guard rests on"
                    " BLOCKED_NUMBER_TYPES alone (non-geographic numbers stay refused unless it lists 001).",
                )
            )
        if self._unblocked:  # a list that drops a default, whether meant or not (',' is an empty list)
            lines.append(
                (
                    logging.WARNING,
                    f"BLOCKED_NUMBER_TYPES leaves out {', '.join(self._unblocked)}: codes go to those numbers,"
                    " ranges that toll fraud favours.",
                )
            )
        return lines

    def check(self, profile: MessageProfile, now: datetime) -> NumberFacts:
        """Raise Refused (200 + error object) when the code must not be sent."""
        if profile.otp_expires is not None and profile.otp_expires <= now:
            raise expired()
        facts = describe(profile.phone_number)
        reason = self._phones.refusal(facts)
        if reason:
            raise number_refused(reason, facts.country, facts.number_type)
        return facts
