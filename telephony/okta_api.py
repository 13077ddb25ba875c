"""Okta's Management API, read-only: the phone numbers a user enrolled for SMS and voice.

Event hooks name the user, not the number; `GET /api/v1/users/{id}/factors` gives the number. The
token is an SSWS token of a read-only administrator. Every call runs within one overall deadline and
reads at most MAX_ANSWER_BYTES (telephony/outbound.py), because the event hook shares Okta's 3 s with
Verify's update.
"""

from __future__ import annotations

import json
from typing import NamedTuple
from urllib.parse import quote

from telephony.outbound import CallFailed, Outbound
from telephony.phone import without_separators

PHONE_FACTOR_TYPES = frozenset({"sms", "call"})  # Okta's factorType of SMS and voice enrolments
# A user's factor list: a few KB per factor, and a user has a handful. Past this, it is not one.
MAX_ANSWER_BYTES = 256 * 1024


USER_NOT_FOUND = "E0000007"  # Okta's errorCode for a resource (here, the user) that does not exist


def _okta_error(data: bytes) -> str | None:
    """The errorCode of Okta's error object, if the answer is one."""
    try:
        error = json.loads(data)
    except (ValueError, RecursionError):
        return None
    code = error.get("errorCode") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


class PhoneFactor(NamedTuple):
    """One active phone factor: Okta's factorType ("sms" or "call"), its number, and its id."""

    factor_type: str
    number: str
    factor_id: str


class OktaApiUnavailable(Exception):
    """Okta's API did not answer in time, could not be reached, or refused: never carries the token."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OktaApi:
    """A small pool to one org, reused by every event; every call bounded by `timeout_seconds`."""

    def __init__(self, org_url: str, api_token: str, timeout_seconds: float, pool_size: int) -> None:
        self._org_url = org_url.rstrip("/")
        self._headers = {"Authorization": f"SSWS {api_token}", "Accept": "application/json"}
        self._timeout = timeout_seconds
        self._pool = Outbound(size=pool_size, num_pools=2)

    def phone_factors(self, user_id: str) -> list[PhoneFactor]:
        """The user's active SMS and voice factors, in Okta's order: each with its type and number."""
        url = f"{self._org_url}/api/v1/users/{quote(user_id, safe='')}/factors"
        try:
            answer = self._pool.call("GET", url, seconds=self._timeout, cap=MAX_ANSWER_BYTES, headers=self._headers)
        except CallFailed as failure:
            if failure.too_large:
                raise OktaApiUnavailable("OKTA_API_TOO_LARGE") from None
            raise OktaApiUnavailable("OKTA_API_TIMEOUT" if failure.timed_out else "OKTA_API_UNREACHABLE") from None
        if answer.status == 404 and _okta_error(answer.data) == USER_NOT_FOUND:
            return []  # the user is gone (deleted since the event): no number, and no outage of the API
        if answer.status != 200:
            raise OktaApiUnavailable(f"OKTA_API_HTTP_{answer.status}")
        try:
            factors = json.loads(answer.data)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than Python parses
            raise OktaApiUnavailable("OKTA_API_BAD_ANSWER") from None
        if not isinstance(factors, list):
            raise OktaApiUnavailable("OKTA_API_BAD_ANSWER")
        found: list[PhoneFactor] = []
        for factor in factors:
            factor_type = factor.get("factorType") if isinstance(factor, dict) else None
            if not isinstance(factor_type, str) or factor_type not in PHONE_FACTOR_TYPES:
                continue
            if factor.get("status", "ACTIVE") != "ACTIVE":
                continue
            profile = factor.get("profile")
            number = profile.get("phoneNumber") if isinstance(profile, dict) else None
            if isinstance(number, str):
                dialled = without_separators(number)  # Okta keeps E.164 with separators at times
                factor_id = factor.get("id")
                if dialled and dialled.isascii():  # a number is digits; JSON may carry lone surrogates
                    found.append(PhoneFactor(factor_type, dialled, factor_id if isinstance(factor_id, str) else ""))
        return found
