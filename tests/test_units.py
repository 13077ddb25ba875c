"""Unit tests: settings, phone handling, the error table, and dispatch with a mocked Twilio client."""

from __future__ import annotations

import base64
import json
import logging
import re
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twilio.base.exceptions import TwilioRestException, TwilioServiceException

from telephony.answers import Refused
from telephony.delivery import VERIFY_LOCALES, TwilioDelivery, sms_text, verify_locale
from telephony.phone import NumberFacts, PhonePolicy, describe, mask, national_digits, read_number, to_e164
from telephony.settings import SettingsError, load_settings
from telephony.templates import code_position, holds_code
from telephony.twilio_errors import TWILIO_ERRORS, transport_failure, twilio_failure
from telephony.twilio_http import TwilioUnavailable
from tests.helpers import FROM_NUMBER, OTP, PHONE, first_reason, profile

ACCOUNT = "AC" + "0" * 32


def mocked_delivery(**env: str) -> tuple[TwilioDelivery, MagicMock]:
    settings = load_settings(
        {"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": "t", "TWILIO_FROM_NUMBER": FROM_NUMBER, **env}
    )
    client = MagicMock()
    client.messages.create.return_value = MagicMock(sid="SM" + "a" * 32, status="queued")
    client.calls.create.return_value = MagicMock(sid="CA" + "b" * 32, status="queued")
    verifications = client.verify.v2.services.return_value.verifications
    verifications.create.return_value = MagicMock(sid="VE" + "c" * 32, status="pending")
    return TwilioDelivery(settings, client), client


def refusal_body(refusal: Refused) -> dict[str, Any]:
    return dict(json.loads(refusal.answer.json())["error"])


# ------------------------------------------------------------------------------------------ settings


def test_settings_defaults_are_the_documented_ones() -> None:
    settings = load_settings({})
    assert settings.okta_hook_auth_header == "Authorization"
    assert settings.okta_provider_name == "TWILIO"
    assert settings.twilio_timeout_seconds == 2.0
    assert settings.allowed_countries == []
    assert "PREMIUM_RATE" in settings.blocked_number_types
    assert not settings.header_secret_configured and not settings.oauth_configured


def test_settings_errors_name_the_variable_never_the_value() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"TWILIO_FROM_NUMBER": "555-SECRET-NUMBER", "TWILIO_TIMEOUT_SECONDS": "9"})
    message = str(caught.value.code)
    assert "TWILIO_FROM_NUMBER" in message and "TWILIO_TIMEOUT_SECONDS" in message
    assert "555-SECRET-NUMBER" not in message


def test_sms_template_must_carry_the_code_placeholder() -> None:
    with pytest.raises(SettingsError, match="SMS_TEMPLATE"):
        load_settings({"SMS_TEMPLATE": "Your code is ready"})


def test_country_lists_are_comma_separated_and_upper_cased() -> None:
    settings = load_settings({"ALLOWED_COUNTRIES": "us, ca,GB", "BLOCKED_NUMBER_TYPES": "premium_rate,voip"})
    assert settings.allowed_countries == ["US", "CA", "GB"]
    assert settings.blocked_number_types == ["PREMIUM_RATE", "VOIP"]


def test_unknown_countries_are_a_configuration_error() -> None:
    with pytest.raises(SettingsError, match="United Kingdom is GB"):
        load_settings({"ALLOWED_COUNTRIES": "US,UK"})
    with pytest.raises(SettingsError, match="DEFAULT_COUNTRY"):
        load_settings({"DEFAULT_COUNTRY": "XX"})


def test_unknown_number_types_are_a_configuration_error() -> None:
    with pytest.raises(SettingsError, match="BLOCKED_NUMBER_TYPES"):
        load_settings({"BLOCKED_NUMBER_TYPES": "PREMIUM,VOIP"})


def test_api_key_needs_its_secret() -> None:
    with pytest.raises(SettingsError, match="TWILIO_API_SECRET"):
        load_settings({"TWILIO_API_KEY": "SK" + "1" * 32})


def test_secret_values_lists_every_configured_secret() -> None:
    key, account = "SK" + "1" * 32, "AC" + "2" * 32
    hook, token, secret = "a1" * 8, "b2", "c3"
    settings = load_settings({"OKTA_HOOK_AUTH_SECRET": hook, "TWILIO_AUTH_TOKEN": token, "TWILIO_API_SECRET": secret,
                              "TWILIO_API_KEY": key, "TWILIO_ACCOUNT_SID": account})  # fmt: skip
    # and each Twilio credential as its HTTP Basic value, as a peer echoing our request would spell it
    basic = [base64.b64encode(pair.encode()).decode() for pair in (f"{key}:{secret}", f"{account}:{token}")]
    assert sorted(settings.secret_values()) == sorted([hook, token, secret, *basic])


def test_secrets_lose_surrounding_whitespace_as_header_values_do() -> None:
    settings = load_settings({"OKTA_HOOK_AUTH_SECRET": "hunter2-hunter2-hunter2\n"})
    assert settings.okta_hook_auth_secret is not None
    assert settings.okta_hook_auth_secret.get_secret_value() == "hunter2-hunter2-hunter2"


def test_secrets_are_hidden_in_the_settings_repr() -> None:
    assert "hunter2" not in repr(load_settings({"OKTA_HOOK_AUTH_SECRET": "hunter2-hunter2-hunter2"}))


@pytest.mark.parametrize("name", ["OKTA_HOOK_AUTH_SECRET", "OKTA_EVENT_HOOK_AUTH_SECRET"])
@pytest.mark.parametrize("value", ["Zq", "delivered", "Qv7-fifteen-chr"])
def test_a_header_secret_the_admin_makes_up_is_long(name: str, value: str) -> None:
    """A short one can be guessed, and the log hides each occurrence of every secret: a secret 'a' or
    'delivered' garbled every line and the delivery metric's labels. Named, never echoed."""
    with pytest.raises(SettingsError, match=f"{name}: .*must be at least 16 characters") as caught:
        load_settings({name: value})
    assert value not in str(caught.value)
    assert load_settings({name: value + "x" * (16 - len(value))}) is not None


# --------------------------------------------------------------------------------------------- phone


def test_mask_keeps_the_country_prefix_and_last_four_digits() -> None:
    assert mask("+14155550123") == "+1******0123"
    assert mask("+442079460958") == "+4*******0958"
    assert mask("4155550123") == "******0123"  # national digits: the first two are the area's


def test_to_e164_errors_never_repeat_the_number() -> None:
    with pytest.raises(ValueError, match="digits") as caught:
        to_e164("+1 415 CALL 0123", None)
    assert "0123" not in str(caught.value)


def test_describe_finds_country_and_type_offline() -> None:
    assert describe("+33612345678") == NumberFacts(country="FR", number_type="MOBILE", valid=True, e164="+33612345678")
    assert describe("+19005550123").number_type == "PREMIUM_RATE"
    assert not describe("+9876543210").valid


def test_read_number_reads_okta_factor_spellings_as_the_hook_reads_numbers() -> None:
    us = describe("+12025550104")
    assert read_number("+1 (202) 555-0104", None) == us
    assert read_number("12025550104", None) == us
    assert read_number("(202) 555-0104", "US") == us
    assert read_number("2025550104", None) is None  # +20 25550104: no valid number
    assert read_number("not a number", "US") is None


def test_phone_policy_allows_everything_valid_by_default() -> None:
    policy = PhonePolicy(frozenset(), frozenset({"PREMIUM_RATE"}))
    assert policy.refusal(describe("+33612345678")) is None
    assert policy.refusal(describe(PHONE)) is None


def test_phone_policy_refuses_countries_outside_the_allowlist() -> None:
    policy = PhonePolicy(frozenset({"US", "CA"}), frozenset())
    assert policy.refusal(describe("+33612345678")) == "Codes are not sent to numbers in FR."


def test_phone_policy_refuses_blocked_number_types() -> None:
    policy = PhonePolicy(frozenset(), frozenset({"PREMIUM_RATE"}))
    assert policy.refusal(describe("+19005550123")) == "Codes are not sent to premium rate numbers."


# -------------------------------------------------------------------------------------- error table


@pytest.mark.parametrize("code", sorted(TWILIO_ERRORS))
def test_every_mapped_twilio_code_gives_a_200_error_with_its_docs_link(code: int) -> None:
    refusal = twilio_failure(TwilioRestException(400, "https://api.twilio.com/x", f"to {PHONE}", code=code), 1)
    body = refusal_body(refusal)
    assert refusal.answer.status == 200
    assert body["errorSummary"] == TWILIO_ERRORS[code].summary
    assert body["errorCauses"] == [
        {"errorSummary": TWILIO_ERRORS[code].hint, "reason": f"TWILIO_{code}",
         "location": f"https://www.twilio.com/docs/errors/{code}"}
    ]  # fmt: skip
    assert PHONE not in refusal.answer.json()


def test_unmapped_twilio_codes_still_name_the_code() -> None:
    body = refusal_body(twilio_failure(TwilioRestException(400, "u", "m", code=99999), 1))
    assert first_reason(body) == "TWILIO_99999"
    assert "99999" in body["errorCauses"][0]["errorSummary"]


def test_an_http_error_without_a_twilio_code_names_the_status() -> None:
    body = refusal_body(twilio_failure(TwilioRestException(503, "u", "Service Unavailable", code=None), 1))
    assert first_reason(body) == "TWILIO_HTTP_503"
    assert body["errorCauses"][0]["location"] == "https://status.twilio.com"


@pytest.mark.parametrize("status", [502, 302, 700])
def test_an_answer_with_no_twilio_code_is_named_by_its_status_never_as_a_code(status: int) -> None:
    """A status past HTTP's 599 was TWILIO_0 with a link to Twilio's page for error 0; and no bare status
    is logged as a Twilio error code."""
    refusal = twilio_failure(TwilioRestException(status, "u", "m", code=None), 1)
    assert first_reason(refusal_body(refusal)) == f"TWILIO_HTTP_{status}"
    assert refusal.answer.log_fields == {
        "twilio_error": f"TWILIO_HTTP_{status}",
        "twilio_http_status": status,
        "twilio_attempts": 1,
    }


def test_a_bare_429_is_read_as_twilios_rate_limit() -> None:
    body = refusal_body(twilio_failure(TwilioRestException(429, "u", "Too Many Requests", code=429), 1))
    assert first_reason(body) == "TWILIO_20429"
    assert body["errorSummary"] == TWILIO_ERRORS[20429].summary


def test_rfc9457_service_errors_are_mapped_by_code() -> None:
    error = TwilioServiceException("https://t/e", "Bad", 400, 60410, detail=f"blocked {PHONE}")
    assert first_reason(refusal_body(twilio_failure(error, 1))) == "TWILIO_60410"


def test_a_timeout_is_reported_as_such() -> None:
    body = refusal_body(transport_failure(TwilioUnavailable(True, "ReadTimeoutError"), 2.0))
    assert first_reason(body) == "TWILIO_TIMEOUT"
    assert "2 s" in body["errorCauses"][0]["errorSummary"]


def test_a_connection_failure_is_reported_as_unreachable() -> None:
    body = refusal_body(transport_failure(TwilioUnavailable(False, "NewConnectionError"), 2.0))
    assert first_reason(body) == "TWILIO_UNREACHABLE"


# --------------------------------------------------------------------------- dispatch (mocked client)


def test_sms_goes_to_messages_create() -> None:
    delivery, client = mocked_delivery()
    answer = delivery.deliver(profile(otpExpires=None))
    client.messages.create.assert_called_once_with(
        to=PHONE,
        body=f"(HOOK)Your code is {OTP}",
        messaging_service_sid=None,
        from_=FROM_NUMBER,
        validity_period=None,
        status_callback=None,
    )
    client.calls.create.assert_not_called()
    assert '"transactionId":"SMaaaa' in answer.json()


def test_voice_goes_to_calls_create_with_a_time_limit() -> None:
    delivery, client = mocked_delivery()
    delivery.deliver(profile(deliveryChannel="Voice"))
    kwargs = client.calls.create.call_args.kwargs
    assert (kwargs["to"], kwargs["from_"], kwargs["time_limit"]) == (PHONE, FROM_NUMBER, 60)
    assert "4, 8, 2, 9, 1, 3" in kwargs["twiml"]
    client.messages.create.assert_not_called()


def test_verify_replaces_messages_and_calls_when_configured() -> None:
    delivery, client = mocked_delivery(TWILIO_VERIFY_SERVICE_SID="VA" + "9" * 32)
    delivery.deliver(profile(locale="pt_BR"))
    client.verify.v2.services.assert_called_once_with("VA" + "9" * 32)
    client.verify.v2.services.return_value.verifications.create.assert_called_once_with(
        to=PHONE, channel="sms", custom_code=OTP, locale="pt-BR"
    )
    client.messages.create.assert_not_called()


def test_twilio_exceptions_become_okta_errors() -> None:
    delivery, client = mocked_delivery()
    client.messages.create.side_effect = TwilioRestException(400, "u", f"bad {PHONE}", code=21211)
    with pytest.raises(Refused) as caught:
        delivery.deliver(profile())
    assert first_reason(refusal_body(caught.value)) == "TWILIO_21211"


def test_transport_failures_become_okta_errors() -> None:
    delivery, client = mocked_delivery()
    client.calls.create.side_effect = TwilioUnavailable(True, "ConnectTimeoutError")
    with pytest.raises(Refused) as caught:
        delivery.deliver(profile(deliveryChannel="call"))
    assert first_reason(refusal_body(caught.value)) == "TWILIO_TIMEOUT"


@pytest.mark.parametrize(
    ("template", "msg_template", "expected"),
    [
        (None, f"(HOOK)Your code is {OTP}", f"(HOOK)Your code is {OTP}"),
        (None, None, f"Your verification code is {OTP}"),
        (None, "no code here", f"Your verification code is {OTP}"),
        (None, OTP + "x" * 1600, f"Your verification code is {OTP}"),
        ("{code} is your Acme code", f"(HOOK)Your code is {OTP}", f"{OTP} is your Acme code"),
        ("{code} {name}", None, f"{OTP} {{name}}"),
    ],
)
def test_sms_text_choice(template: str | None, msg_template: str | None, expected: str) -> None:
    assert sms_text(profile(msgTemplate=msg_template), template) == expected


@pytest.mark.parametrize(
    ("locale", "expected"),
    [("EN-US", "en"), ("en", "en"), ("es_ES", "es"), ("pt-br", "pt-BR"), ("zh-CN", "zh-CN"), ("en-GB", "en-GB"),
     (None, None), ("", None)],
)  # fmt: skip
def test_verify_locale_from_oktas_locale(locale: str | None, expected: str | None) -> None:
    assert verify_locale(locale) == expected


# ------------------------------------------------------------------------------------------- logs


def formatted(formatter: logging.Formatter, message: str) -> str:
    """`message` as the formatter writes a log line of it."""
    record = logging.LogRecord("telephony_hook", logging.INFO, __file__, 1, message, None, None)
    return str(json.loads(formatter.format(record))["message"])


def test_a_code_equal_to_the_numbers_last_digits_leaves_its_mask_alone() -> None:
    """'+1******[redacted]' would break queries on the phone field, and tell a reader the code."""
    from telephony.logs import CloudLoggingFormatter, mark_sensitive, request_scope

    formatter = CloudLoggingFormatter([])
    with request_scope(None):
        mark_sensitive("0123")
        mark_sensitive("+12065550123", "+1******0123")
        mark_sensitive("12065550123", "+1******0123")
        line = formatted(formatter, "sms to +1******0123, code 0123, number +12065550123, sid SMab0123cd")
        mark_sensitive("012345")  # a longer code that begins with the mask's last digits
        after = formatted(formatter, "z+1******012345 and +1******0123")
    assert line == "sms to +1******0123, code [redacted], number +1******0123, sid SMab[redacted]cd"
    assert after == "z+1******[redacted] and +1******0123"  # only partly inside the mask: the code is there


def test_log_scrub_hides_the_code_and_number_wherever_no_digit_touches_them() -> None:
    """Where a letter touches them too: a form or a URL a peer echoes spells them after '%3A' or '%2B',
    and a SID may hold the code's digits (rarely, and a reader could not tell them from the code)."""
    from telephony.logs import CloudLoggingFormatter, mark_sensitive, request_scope

    formatter = CloudLoggingFormatter(["s3cr3t-value"])
    with request_scope(None):
        mark_sensitive(OTP)
        mark_sensitive(PHONE, "+1******0123")
        mark_sensitive(PHONE[1:], "+1******0123")
        line = formatted(
            formatter,
            f"code {OTP} to {PHONE} sid SM{OTP}ab secret s3cr3t-value "
            f"To=%2B{PHONE[1:]}&Body=code%3A{OTP} glued {PHONE}x",
        )
        longer = formatted(formatter, f"at 1{OTP}7 and {PHONE}9")
    assert line == (
        "code [redacted] to +1******0123 sid SM[redacted]ab secret [redacted] "
        "To=%2B+1******0123&Body=code%3A[redacted] glued +1******0123x"
    )
    assert longer == f"at 1{OTP}7 and {PHONE}9"  # inside a longer run of digits: another number


def test_marks_end_with_the_hook() -> None:
    from telephony.logs import CloudLoggingFormatter, mark_sensitive, request_scope

    formatter = CloudLoggingFormatter([])
    with request_scope(None):
        mark_sensitive(OTP)
    assert formatted(formatter, f"code {OTP}") == f"code {OTP}"


# ----------------------------------------------------------------- Okta's template and Verify limits


@pytest.mark.parametrize(
    ("template", "held"),
    [
        ("Your code is 48291", True),
        ("48291 is your code", True),
        ("Code: 48291.", True),
        ("Your code is 482913", False),
        ("Your code is 148291", False),
        ("482913, not 48291", True),  # a later whole occurrence after one inside a longer number
        ("1482912 or 248291", False),
        ("48291٣", True),  # only ASCII digits make a longer number, as Twilio and Okta count them
        ("no code", False),
        (None, False),
    ],
)
def test_a_template_holds_the_code_only_as_a_whole_number(template: str | None, held: bool) -> None:
    assert holds_code(template, "48291") is held


@given(st.text(alphabet="0123 x٣", max_size=12), st.text(alphabet="0123", min_size=1, max_size=3))
def test_the_whole_number_search_finds_what_its_definition_does(template: str, code: str) -> None:
    """The definition: the code with no ASCII digit right before or after it, leftmost first."""
    match = re.search(rf"(?<![0-9]){re.escape(code)}(?![0-9])", template)
    assert holds_code(template, code) is (match is not None and template != "")
    if match is not None:
        assert code_position(template, code) == match.span()
    else:
        with pytest.raises(ValueError, match="does not hold the code"):
            code_position(template, code)


def test_verify_locales_are_only_those_verify_supports() -> None:
    assert {"en", "en-GB", "pt-BR", "zh-CN", "zh-HK", "es", "uk"} <= VERIFY_LOCALES
    assert verify_locale("es-MX") == "es"  # a region Verify has no tag for: the language
    assert verify_locale("zh-TW") is None  # zh means mainland terms: let Verify choose
    assert verify_locale("sw") is None  # Swahili: not in Verify's list, so no 404
    assert verify_locale("EN_gb") == "en-GB"
    assert all(verify_locale(tag) == tag for tag in VERIFY_LOCALES)


def test_a_verify_code_over_10_characters_is_refused_before_twilio() -> None:
    settings = load_settings(
        {
            "TWILIO_ACCOUNT_SID": "AC" + "1" * 32,
            "TWILIO_AUTH_TOKEN": "token-value",
            "TWILIO_VERIFY_SERVICE_SID": "VA" + "2" * 32,
            "TWILIO_API_BASE_URL": "http://127.0.0.1:9",  # nothing listens: a call would fail otherwise
        }
    )
    client = MagicMock()
    with pytest.raises(Refused) as refusal:
        TwilioDelivery(settings, client).deliver(profile(otpCode="12345678901"))
    answer = refusal.value.answer
    assert answer.status == 200 and answer.outcome == "code_too_long"
    assert first_reason(json.loads(answer.json())) == "VERIFY_CODE_TOO_LONG"
    assert "12345678901" not in answer.json()
    client.verify.v2.services.assert_not_called()


# ------------------------------------------------------------------------------ make run's .env


def test_a_dotenv_file_is_read_as_docker_and_python_dotenv_read_it(tmp_path: Path) -> None:
    """A comment after a value was part of it ('TWILIO # default' went to Okta in every answer), a quoted
    value followed by a comment kept its quotes, and a byte order mark hid the first key."""
    from tools.sandbox.run_local import read_dotenv

    dotenv = tmp_path / ".env"
    dotenv.write_bytes(
        "\ufeffGUARD_MODE=monitor\n"
        "OKTA_PROVIDER_NAME=TWILIO # the default\n"
        'SMS_TEMPLATE="Your code: {code} # not a comment" # a comment\r\n'
        "export SANDBOX_LATENCY_MS='300'\n"
        "# a line of its own\n"
        "OKTA_HOOK_AUTH_SECRET=Zx9#no-space-before-it=\n".encode()
    )
    assert read_dotenv(dotenv) == {
        "GUARD_MODE": "monitor",
        "OKTA_PROVIDER_NAME": "TWILIO",
        "SMS_TEMPLATE": "Your code: {code} # not a comment",
        "SANDBOX_LATENCY_MS": "300",
        "OKTA_HOOK_AUTH_SECRET": "Zx9#no-space-before-it=",
    }


def test_a_dotenv_key_nothing_reads_is_named_with_the_likely_one() -> None:
    from telephony.settings import unknown_names
    from tools.sandbox.run_local import RUN_VARIABLES

    def unknown_keys(values: dict[str, str]) -> list[str]:  # as make run names .env's keys
        return unknown_names(values, RUN_VARIABLES, "a line")

    found = unknown_keys({"ALLOWED_COUNTRY": "US", "PORT": "8081", "TWILIO_API_KEY_SID": "SK", "XYZZY": "1"})
    assert found == ["ALLOWED_COUNTRY (did you mean ALLOWED_COUNTRIES?)", "XYZZY"]
    # a secret pasted on a line of its own ('Zx9-secret=' reads as a key): never repeated
    pasted = unknown_keys({"Zx9-pasted-secret-value": ""})
    assert pasted == ["a line whose name is not a variable's (not repeated here)"]


@pytest.mark.parametrize(
    ("e164", "national"),
    [("+14155550123", "4155550123"), ("+390612345678", "0612345678"), ("+447911123456", "7911123456"), ("+", "")],
)
def test_national_digits_drop_the_country_calling_code(e164: str, national: str) -> None:
    assert national_digits(e164) == national
