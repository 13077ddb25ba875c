"""The request models read what Okta really sends, and name every field they refuse."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from models import (
    ErrorResponse,
    TelephonyHookRequest,
    TelephonyHookResponse,
    parse_hook_request,
)
from telephony.answers import Answer, invalid_request
from tests.helpers import OTP, PHONE, load_fixture, okta_request


def parse(body: object, default_country: str | None = None) -> TelephonyHookRequest:
    return parse_hook_request(json.dumps(body).encode(), default_country)


def refusal(body: object) -> Answer:
    """The 400 the hook answers for `body`: through answers.invalid_request, as the hook builds it."""
    with pytest.raises(ValidationError) as caught:
        parse(body)
    answer = invalid_request("telephony hook", caught.value).answer
    assert answer.status == 400
    return answer


def error_locations(body: object) -> set[str]:
    refused = refusal(body).body
    assert isinstance(refused, ErrorResponse)
    return {cause.location for cause in refused.error.error_causes}


def test_okta_documented_sample_parses_with_every_field() -> None:
    hook = parse(load_fixture("okta_request_preview_sms.json"))
    profile = hook.data.message_profile
    assert hook.event_id == "uS5871kJThSsU8qlA1LTcg"
    assert hook.request_type == "com.okta.user.telephony.pre-enrollment"
    assert profile.delivery_channel == "sms"
    assert profile.otp_code == "11111"
    assert profile.locale == "EN-US"
    assert profile.otp_expires == datetime(2022, 1, 28, 21, 48, 34, 321000, tzinfo=UTC)
    assert hook.data.user_profile is not None and hook.data.user_profile.login == "test.user@okta.com"


def test_preview_requests_are_recognised_by_their_url() -> None:
    assert parse(okta_request()).is_preview
    body = okta_request()
    body["data"]["context"]["request"]["url"]["value"] = "/idp/myaccount/phones/verify"
    assert not parse(body).is_preview


@pytest.mark.parametrize(
    ("spelling", "channel"),
    [
        ("SMS", "sms"),
        ("sms", "sms"),
        (" Sms ", "sms"),
        ("CALL", "voice"),
        ("call", "voice"),
        ("voice", "voice"),
        ("Voice", "voice"),
        ("VOICE", "voice"),
        ("voice call", "voice"),
        ("Voice Call", "voice"),
        ("VOICE_CALL", "voice"),
        ("voice-call", "voice"),
    ],
)
def test_every_documented_channel_spelling_is_accepted(spelling: str, channel: str) -> None:
    assert parse(okta_request(deliveryChannel=spelling)).data.message_profile.delivery_channel == channel


@pytest.mark.parametrize("spelling", ["fax", "email", "", "smsx", "push"])
def test_unknown_channels_are_refused_naming_the_field(spelling: str) -> None:
    assert error_locations(okta_request(deliveryChannel=spelling)) == {"data.messageProfile.deliveryChannel"}


@pytest.mark.parametrize(
    ("raw", "default_country", "e164"),
    [
        ("+14155550123", None, "+14155550123"),
        ("+1 (415) 555-0123", None, "+14155550123"),
        ("+1.415.555.0123", None, "+14155550123"),
        ("0014155550123", None, "+14155550123"),
        ("004420 7946 0958", None, "+442079460958"),
        ("9876543210", None, "+9876543210"),
        ("14155550123", None, "+14155550123"),
        ("4155550123", "US", "+14155550123"),
        ("(415) 555-0123", "us", "+14155550123"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("+33 6 12 34 56 78", "US", "+33612345678"),
        ("+44 (0)20 7946 0958", None, "+442079460958"),
        ("+39 06 1234 5678", None, "+390612345678"),
        ("011 44 20 7946 0958", "US", "+442079460958"),
    ],
)
def test_phone_numbers_are_normalised_to_e164(raw: str, default_country: str | None, e164: str) -> None:
    hook = parse(okta_request(phoneNumber=raw), default_country=default_country)
    assert hook.data.message_profile.phone_number == e164


@pytest.mark.parametrize(
    "raw", ["", "+", "abc", "+1 415 CALL ME", "+0123456789", "+12345", "+1234567890123456", "１２３"]
)
def test_unreadable_phone_numbers_are_refused_naming_the_field(raw: str) -> None:
    assert error_locations(okta_request(phoneNumber=raw)) == {"data.messageProfile.phoneNumber"}


@pytest.mark.parametrize("code", ["12a456", "", "12", "1234567890123", " ", "١٢٣٤٥٦", "12 34"])
def test_otp_code_must_be_digits_only(code: str) -> None:
    assert error_locations(okta_request(otpCode=code)) == {"data.messageProfile.otpCode"}


@pytest.mark.parametrize("field", ["phoneNumber", "otpCode", "deliveryChannel"])
def test_missing_required_fields_are_named(field: str) -> None:
    assert error_locations(okta_request(**{field: None})) == {f"data.messageProfile.{field}"}


@pytest.mark.parametrize(
    ("field", "value"), [("phoneNumber", 14155550123), ("otpCode", 482913), ("otpExpires", "tomorrow"), ("locale", 7)]
)
def test_wrong_types_are_refused_naming_the_field(field: str, value: object) -> None:
    assert error_locations(okta_request(**{field: value})) == {f"data.messageProfile.{field}"}


def test_missing_message_profile_is_named() -> None:
    body = okta_request()
    del body["data"]["messageProfile"]
    assert error_locations(body) == {"data.messageProfile"}


def test_a_body_that_is_not_an_object_is_refused_as_a_whole() -> None:
    assert error_locations([1, 2]) == {"body"}


def test_validation_errors_never_carry_the_otp() -> None:
    body = okta_request(phoneNumber="not a number", deliveryChannel="fax", otpCode=OTP + "x")
    answer = refusal(body)
    assert OTP not in answer.json() and OTP not in json.dumps(answer.log_fields)
    assert "not a number" not in answer.json()


def test_unknown_fields_are_ignored_at_every_level() -> None:
    body = okta_request(carrier="acme")
    body["newTopLevel"] = {"x": 1}
    body["data"]["futureField"] = [1]
    assert parse(body).data.message_profile.phone_number == PHONE


def test_unknown_request_types_are_accepted() -> None:
    body = okta_request()
    body["requestType"] = "com.okta.user.telephony.something-new"
    assert parse(body).request_type == "com.okta.user.telephony.something-new"


def test_a_different_event_type_is_refused() -> None:
    body = okta_request()
    body["eventType"] = "com.okta.import.transform"
    assert error_locations(body) == {"eventType"}


def test_optional_fields_may_be_absent() -> None:
    profile = parse(okta_request(msgTemplate=None, otpExpires=None, locale=None)).data.message_profile
    assert (profile.msg_template, profile.otp_expires, profile.locale) == (None, None, None)


def test_an_expiry_without_time_zone_is_read_as_utc() -> None:
    profile = parse(okta_request(otpExpires="2099-01-01T00:00:00")).data.message_profile
    assert profile.otp_expires == datetime(2099, 1, 1, tzinfo=UTC)


def test_success_answer_model_reads_okta_documented_sample() -> None:
    answer = TelephonyHookResponse.model_validate(load_fixture("okta_response_success.json"))
    assert answer.commands[0].value[0].status == "SUCCESSFUL"
    assert answer.commands[0].type == "com.okta.telephony.action"


def test_error_answer_model_reads_okta_documented_sample() -> None:
    answer = ErrorResponse.model_validate(load_fixture("okta_response_error.json"))
    assert answer.error.error_causes[0].location == "South Africa"


def test_models_publish_a_json_schema_with_descriptions_and_examples() -> None:
    schema = TelephonyHookRequest.model_json_schema(by_alias=True)
    profile = schema["$defs"]["MessageProfile"]["properties"]
    assert "otpCode" in profile and "description" in profile["otpCode"] and profile["otpCode"]["examples"]
    every_field = [field for model in schema["$defs"].values() for field in model["properties"].values()]
    assert all("description" in field for field in every_field)
