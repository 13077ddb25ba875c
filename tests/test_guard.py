"""The toll-fraud guard closed by default, and the number it checked is the number Twilio gets."""

from __future__ import annotations

import json

import pytest

from tests.helpers import PHONE, PHONE_MASKED, AppFactory, first_reason, okta_request, post_hook
from tools.sandbox.twilio_sandbox import SandboxState

# Iridium satellite, Inmarsat, international network: libphonenumber's region "001".
NON_GEOGRAPHIC_NUMBERS = ("+881612345678", "+870773111632", "+882161234567")


@pytest.mark.parametrize("number", NON_GEOGRAPHIC_NUMBERS)
@pytest.mark.parametrize("allowed", [None, "US,FR"])
def test_non_geographic_numbers_are_refused_unless_allowed_by_name(
    number: str, allowed: str | None, make_client: AppFactory, sandbox: SandboxState
) -> None:
    client = make_client(ALLOWED_COUNTRIES=allowed)
    answer = post_hook(client, okta_request(phoneNumber=number)).get_json()
    assert first_reason(answer) == "PHONE_POLICY"
    assert answer["error"]["errorSummary"] == "Codes are not sent to satellite or international network numbers."
    assert sandbox.requests == []


@pytest.mark.parametrize("number", NON_GEOGRAPHIC_NUMBERS)
def test_listing_001_lets_non_geographic_numbers_through(
    number: str, make_client: AppFactory, sandbox: SandboxState
) -> None:
    client = make_client(ALLOWED_COUNTRIES="001")
    answer = post_hook(client, okta_request(phoneNumber=number)).get_json()
    assert answer["commands"][0]["value"][0]["status"] == "SUCCESSFUL"
    assert sandbox.requests[-1]["form"]["To"] == number


def test_an_empty_allow_list_is_a_warning_at_start_up(
    make_client: AppFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    make_client(ALLOWED_COUNTRIES=None)
    warnings = [
        line for line in map(json.loads, capfd.readouterr().out.splitlines()) if "ALLOWED_COUNTRIES" in line["message"]
    ]
    assert [line["severity"] for line in warnings] == ["WARNING"]
    make_client(ALLOWED_COUNTRIES="US")
    assert "ALLOWED_COUNTRIES" not in capfd.readouterr().out


def test_twilio_gets_the_e164_form_of_the_number_the_guard_checked(
    make_client: AppFactory, sandbox: SandboxState, capfd: pytest.CaptureFixture[str]
) -> None:
    client = make_client(ALLOWED_COUNTRIES="US")
    answer = post_hook(client, okta_request(phoneNumber="+1" + PHONE[1:])).get_json()  # +1 14155550123
    out = capfd.readouterr().out
    assert answer["commands"][0]["value"][0]["status"] == "SUCCESSFUL"
    assert sandbox.requests[-1]["form"]["To"] == PHONE
    assert PHONE not in out and PHONE[1:] not in out
    assert PHONE_MASKED in out


# ------------------------------------------------ guard and configuration branches nothing reached before


def test_an_invalid_number_is_refused_before_twilio(
    make_client: AppFactory, sandbox: SandboxState, capfd: pytest.CaptureFixture[str]
) -> None:
    client = make_client()
    capfd.readouterr()
    answer = post_hook(client, okta_request(phoneNumber="+10005550123")).get_json()
    (line,) = [json.loads(text) for text in capfd.readouterr().out.splitlines() if '"outcome"' in text]
    assert answer["error"]["errorSummary"] == "The phone number is not a valid number."
    assert first_reason(answer) == "PHONE_POLICY"
    assert (line["outcome"], line["country"], line["number_type"]) == ("number_refused", "ZZ", "UNKNOWN")
    assert sandbox.requests == []


def test_an_account_sid_without_credentials_is_not_configured(
    make_client: AppFactory, sandbox: SandboxState, capfd: pytest.CaptureFixture[str]
) -> None:
    client = make_client(TWILIO_AUTH_TOKEN=None)
    startup = capfd.readouterr().out
    answer = post_hook(client, okta_request()).get_json()
    missing = "TWILIO_ACCOUNT_SID with TWILIO_AUTH_TOKEN (or TWILIO_API_KEY and TWILIO_API_SECRET)"
    assert first_reason(answer) == "HOOK_NOT_CONFIGURED"
    assert answer["error"]["errorCauses"][0]["errorSummary"] == f"The hook is missing {missing}."
    assert f"No sms code can be sent: the hook is missing {missing}." in startup
    assert sandbox.requests == []


def test_an_sms_with_no_sender_is_not_configured(make_client: AppFactory, sandbox: SandboxState) -> None:
    client = make_client(TWILIO_FROM_NUMBER=None)
    answer = post_hook(client, okta_request()).get_json()
    assert first_reason(answer) == "HOOK_NOT_CONFIGURED"
    summary = answer["error"]["errorCauses"][0]["errorSummary"]
    assert summary == "The hook is missing TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID."
    assert sandbox.requests == []


@pytest.mark.parametrize(
    ("number", "summary"),
    [
        ("+447024000000", "Codes are not sent to personal numbers."),  # the UK's 070: forwarded at a premium
        ("+15005550001", "Codes are not sent to personal numbers."),  # the US's 5XX, Twilio's magic numbers too
        ("+448431234567", "Codes are not sent to premium rate numbers."),
    ],
)
@pytest.mark.parametrize("channel", ["sms", "voice"])
def test_the_default_policy_refuses_numbers_that_earn_someone_a_share_even_in_allowed_countries(
    number: str, summary: str, channel: str, make_client: AppFactory, sandbox: SandboxState
) -> None:
    client = make_client(ALLOWED_COUNTRIES="US,GB", BLOCKED_NUMBER_TYPES=None)
    answer = post_hook(client, okta_request(phoneNumber=number, deliveryChannel=channel)).get_json()
    assert first_reason(answer) == "PHONE_POLICY"
    assert answer["error"]["errorSummary"] == summary
    assert sandbox.requests == []
