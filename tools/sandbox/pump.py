"""Replay a short SMS pump against the hook `make run` serves, to watch the spend guard refuse it.

    python -m tools.sandbox.pump              # 12 enrolments into one range of GB, on localhost:8080
    python -m tools.sandbox.pump --country FR --count 20 --spread

Each request is Okta's pre-enrollment (what a pump sends), to distinct numbers of one 10,000-number
range (or, with --spread, of many ranges of one country); nobody verifies. The first few codes go
out, then the guard answers Okta's error object; the hook's log line in the `make run` terminal says
which limit refused (`guard_limit`), the country and the masked range. Loopback only: the hook's
secret is read from OKTA_HOOK_AUTH_SECRET, .run/hook-secret (made up by `make run`) or .env.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import phonenumbers

from tools.processes import ROOT
from tools.sandbox.run_local import read_dotenv

ENROLMENT = "com.okta.user.telephony.pre-enrollment"


def hook_secret() -> str:
    secret = os.environ.get("OKTA_HOOK_AUTH_SECRET") or read_dotenv(ROOT / ".env").get("OKTA_HOOK_AUTH_SECRET")
    made_up = ROOT / ".run" / "hook-secret"
    if not secret and made_up.exists():
        secret = made_up.read_text().strip()
    if not secret:
        raise SystemExit("pump: no hook secret: start `make run` first (it makes .run/hook-secret)")
    return secret


def pump_numbers(country: str, count: int, spread: bool) -> list[str]:
    """Distinct valid mobile numbers: one range (the last 4 digits vary), or one range each."""
    example = phonenumbers.example_number_for_type(country, phonenumbers.PhoneNumberType.MOBILE)
    if example is None:
        raise SystemExit(f"pump: libphonenumber has no example mobile number for {country}")
    e164 = str(phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164))
    rng = random.Random(country)
    numbers: list[str] = []
    while len(numbers) < count:
        middle = f"{rng.randrange(1000):03d}" if spread else e164[-7:-4]
        number = f"{e164[:-7]}{middle}{rng.randrange(10_000):04d}"
        if number not in numbers and phonenumbers.is_valid_number(phonenumbers.parse(number)):
            numbers.append(number)
    return numbers


def enrolment(number: str, code: str) -> dict[str, Any]:
    body = json.loads((ROOT / "examples" / "okta-sms-request.json").read_text())
    body["requestType"] = ENROLMENT
    body["data"]["context"]["request"]["url"]["value"] = "/idp/idx/credential/enroll"  # a sign-up, not a Preview
    expires = (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    body["data"]["messageProfile"].update(
        phoneNumber=number, otpCode=code, otpExpires=expires, msgTemplate=f"Your code is {code}"
    )
    return dict(body)


def post(url: str, secret: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": secret},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as error:
        return dict(json.loads(error.read()))
    except urllib.error.URLError as error:
        raise SystemExit(
            f"pump: nothing answers at {url} ({error.reason}): is `make run` serving there? (--port)"
        ) from None


def describe(answer: dict[str, Any]) -> str:
    if "commands" in answer:
        result = answer["commands"][0]["value"][0]
        return f"{result['status']} {result['transactionId']}"
    error = answer.get("error", {})
    reason = (error.get("errorCauses") or [{}])[0].get("reason", "?")
    return f"refused ({reason}): {error.get('errorSummary', '')}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument("--country", default="GB", help="ISO 3166 country of the pumped numbers (default GB)")
    parser.add_argument("--count", type=int, default=12)
    parser.add_argument("--spread", action="store_true", help="one range per number, over the whole country")
    args = parser.parse_args(argv)
    url, secret = f"http://127.0.0.1:{args.port}/", hook_secret()
    numbers = pump_numbers(args.country.upper(), args.count, args.spread)
    where = "many ranges" if args.spread else f"the range {numbers[0][:-4]}xxxx"
    print(f"pump: {args.count} enrolments into {where} of {args.country.upper()}, nobody verifies")
    sent = 0
    for index, number in enumerate(numbers, 1):
        answer = post(url, secret, enrolment(number, f"{random.randrange(10**6):06d}"))
        sent += "commands" in answer
        masked = number[:2] + "*" * (len(number) - 6) + number[-4:]
        print(f"  {index:3d} {masked}: {describe(answer)}")
    said = (
        "the `make run` terminal shows each refusal's guard_limit"
        if sent < args.count
        else "none refused: is the guard on (GUARD_MODE=enforce)? In monitor mode its lines say would_refuse"
    )
    print(f"pump: {sent} of {args.count} codes sent; {said}")


if __name__ == "__main__":
    main()
