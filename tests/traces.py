"""Traffic for the spend guard's tests, built from number ranges libphonenumber validates.

- a legitimate morning: users in several countries sign in or enrol, some ask again for a code,
  most verify, and Okta's event hook reports their conversions a little later;
- a pump into one range: enrolments to distinct numbers of one 10,000-number range;
- a pump spread over one country's ranges: enrolments over many ranges, nobody verifies.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import islice
from typing import Any, NamedTuple

import phonenumbers

from telephony.phone import describe
from telephony.rates import parse_rates
from telephony.store import Ask
from tests.helpers import load_fixture, okta_request

COUNTRIES = ("US", "GB", "FR", "DE", "IN", "BR", "JP", "AU")
ENROLMENT = "com.okta.user.telephony.pre-enrollment"
SIGN_IN = "com.okta.user.telephony.mfa-verification"


def example_mobile(country: str) -> str:
    """libphonenumber's example mobile number of `country`, in E.164."""
    number = phonenumbers.example_number_for_type(country, phonenumbers.PhoneNumberType.MOBILE)
    assert number is not None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def valid(e164: str) -> bool:
    return describe(e164).valid


def range_numbers(country: str, count: int, seed: int = 1) -> list[str]:
    """`count` distinct valid numbers of one 10,000-number range (the example's, last 4 digits free)."""
    prefix = example_mobile(country)[:-4]
    rng = random.Random(seed)
    numbers = (f"{prefix}{suffix:04d}" for suffix in rng.sample(range(10_000), 10_000))
    # The first `count` valid ones, looked up one by one: libphonenumber's check costs ~0.1 ms a number,
    # and checking the whole range for a handful of numbers cost seconds of every run.
    return list(islice(filter(valid, numbers), count))


def spread_numbers(country: str, count: int, seed: int = 2) -> list[str]:
    """`count` valid numbers of `country`, each in a range of its own (the 3 digits before the last 4
    vary), none in the example's own range."""
    example = example_mobile(country)
    rng = random.Random(seed)
    picks = []
    for block in rng.sample(range(1000), 1000):
        number = f"{example[:-7]}{block:03d}{rng.randrange(10_000):04d}"
        if number[:-4] != example[:-4] and valid(number):
            picks.append(number)
            if len(picks) == count:  # the rest of the blocks would go unused
                return picks
    raise AssertionError(f"only {len(picks)} valid numbers in {country}'s blocks, not {count}")


class User(NamedTuple):
    user_id: str  # Okta's user id: the event hook names it, the Management API gives its number
    phone: str
    country: str


def morning_users(count: int = 120, seed: int = 3) -> list[User]:
    """`count` users spread over COUNTRIES, each with a valid mobile number of their own."""
    rng = random.Random(seed)
    users: list[User] = []
    seen: set[str] = set()
    while len(users) < count:
        country = COUNTRIES[len(users) % len(COUNTRIES)]
        example = example_mobile(country)
        number = f"{example[:-7]}{rng.randrange(1000):03d}{rng.randrange(10_000):04d}"
        if number in seen or not valid(number):
            continue
        seen.add(number)
        users.append(User(f"00u{len(users):05d}morning{seed:03d}", number, country))
    return users


class Step(NamedTuple):
    kind: str  # "code" (a telephony hook) or "verified" (an event hook batch for the user)
    user: User
    body: dict[str, Any]


_code_counter = iter(range(100_000, 1_000_000))


def code_request(phone: str, request_type: str, channel: str = "SMS") -> dict[str, Any]:
    """Okta's request for one new code to `phone` (each code distinct, as Okta's are)."""
    code = str(next(_code_counter))
    body = okta_request(phoneNumber=phone, otpCode=code, msgTemplate=f"Your code is {code}", deliveryChannel=channel)
    body["requestType"] = request_type
    body["data"]["context"]["request"]["url"]["value"] = "/idp/idx/challenge"  # not a Preview
    return body


def passed_event(user: User) -> dict[str, Any]:
    """Okta's event hook batch: the user passed an SMS challenge."""
    body = load_fixture("okta_event_hook_mfa.json")
    event = body["data"]["events"][0]
    event["actor"]["id"] = user.user_id
    event["uuid"] = f"evt-{user.user_id}-{next(_code_counter)}"
    event["published"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")  # older events act on nothing
    body["data"]["events"] = [event]
    return dict(body)


def morning(users: list[User], seed: int = 4, verifying: float = 0.9, lag: int = 4) -> Iterator[Step]:
    """Users arrive one after another: a third enrol, the rest sign in (any channel); one in five asks
    for a second code; `verifying` of them pass, and their event arrives `lag` users later."""
    rng = random.Random(seed)
    pending: list[tuple[int, User]] = []
    for index, user in enumerate(users):
        request_type = ENROLMENT if index % 3 == 0 else SIGN_IN
        channel = "voice" if rng.random() < 0.15 else "SMS"
        yield Step("code", user, code_request(user.phone, request_type, channel))
        if rng.random() < 0.2:  # "resend code"
            yield Step("code", user, code_request(user.phone, request_type, channel))
        if rng.random() < verifying:
            pending.append((index + lag, user))
        while pending and pending[0][0] <= index:
            yield Step("verified", pending[0][1], passed_event(pending.pop(0)[1]))
    for _, user in pending:
        yield Step("verified", user, passed_event(user))


def pump(numbers: list[str]) -> Iterator[dict[str, Any]]:
    """Scripted enrolments: one code to each number, nobody ever verifies."""
    for number in numbers:
        yield code_request(number, ENROLMENT)


def ask(number: str = "n1", range_: str = "+3361234", country: str = "FR", **changes: Any) -> Ask:
    """A question to a store as the guard asks it, with the guard's default limits."""
    values: dict[str, Any] = {
        "number": number,
        "range": range_,
        "country": country,
        "retry": f"retry-{number}-{changes.pop('code', '1')}",
        "retry_seconds": 30,
        "enrolment": True,
        "claim_refused": False,
        "known_codes": 3,
        "known_seconds": 365 * 86400,
        "known_rates": parse_rates("5/10minutes;20/day"),
        "new_rates": parse_rates("3/10minutes;6/day"),
        "range_rates": parse_rates("5/hour;10/day"),
        "country_rates": parse_rates("10/hour;40/day"),
        "all_rates": parse_rates("30/hour;100/day"),
    }
    values.update(changes)
    return Ask(**values)
