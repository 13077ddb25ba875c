"""Okta's Management API, read-only: the phone numbers a user enrolled for SMS and voice.

Event hooks name the user, not the number; `GET /api/v1/users/{id}/factors` gives the number. The
token is an SSWS token of a read-only administrator. Every call runs within one overall deadline
(telephony/deadlines.py), because the event hook shares Okta's 3 s with Verify's update.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import urllib3

from telephony.deadlines import DEADLINE_POOL_CLASSES, overall_deadline, timed_out
from telephony.phone import without_separators

PHONE_FACTOR_TYPES = frozenset({"sms", "call"})  # Okta's factorType of SMS and voice enrolments


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
        self._pool = urllib3.PoolManager(num_pools=2, maxsize=pool_size, block=False, retries=False)
        self._pool.pool_classes_by_scheme = DEADLINE_POOL_CLASSES

    def phone_numbers(self, user_id: str) -> list[str]:
        """The numbers of the user's active SMS and voice factors, in Okta's order, without repeats."""
        url = f"{self._org_url}/api/v1/users/{quote(user_id, safe='')}/factors"
        limits = urllib3.Timeout(connect=self._timeout / 2, read=self._timeout)
        with overall_deadline(self._timeout) as call:
            try:
                answer = self._pool.request("GET", url, headers=self._headers, timeout=limits, redirect=False)
            except (urllib3.exceptions.HTTPError, OSError) as error:
                raise OktaApiUnavailable(
                    "OKTA_API_TIMEOUT" if timed_out(call, error) else "OKTA_API_UNREACHABLE"
                ) from None
        if answer.status != 200:
            raise OktaApiUnavailable(f"OKTA_API_HTTP_{answer.status}")
        try:
            factors = json.loads(answer.data)
        except ValueError:
            raise OktaApiUnavailable("OKTA_API_BAD_ANSWER") from None
        if not isinstance(factors, list):
            raise OktaApiUnavailable("OKTA_API_BAD_ANSWER")
        numbers: list[str] = []
        for factor in factors:
            if not isinstance(factor, dict) or factor.get("factorType") not in PHONE_FACTOR_TYPES:
                continue
            if factor.get("status", "ACTIVE") != "ACTIVE":
                continue
            profile = factor.get("profile")
            number = profile.get("phoneNumber") if isinstance(profile, dict) else None
            if isinstance(number, str):
                dialled = without_separators(number)  # Okta keeps E.164 with separators at times
                if dialled and dialled not in numbers:
                    numbers.append(dialled)
        return numbers
