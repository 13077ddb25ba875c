"""No path, success or failure, writes the OTP, a secret or a full phone number anywhere."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from telephony.delivery import TwilioDelivery
from tests.helpers import (
    FROM_NUMBER,
    HOOK_SECRET,
    OTP,
    PHONE,
    AppFactory,
    call_receipt,
    message_receipt,
    okta_request,
    post_hook,
    post_receipt,
)
from tools.sandbox.twilio_sandbox import DEFAULT_AUTH_TOKEN

API_SECRET = "api-secret-Kd93jf"
FORBIDDEN = (OTP, HOOK_SECRET, PHONE, PHONE[1:], DEFAULT_AUTH_TOKEN, API_SECRET)

Scenario = Callable[[AppFactory, dict[str, str]], Any]


def _post(client: FlaskClient, **fields: Any) -> Any:
    return post_hook(client, okta_request(**fields))


SCENARIOS: dict[str, Scenario] = {
    "sms delivered": lambda make, _: _post(make()),
    "voice delivered": lambda make, _: _post(make(), deliveryChannel="voice"),
    "verify delivered": lambda make, _: _post(make(TWILIO_VERIFY_SERVICE_SID="VA" + "1" * 32)),
    "wrong secret": lambda make, _: post_hook(make(), okta_request(), secret=OTP + HOOK_SECRET[:-1]),
    "no secret configured": lambda make, _: post_hook(make(OKTA_HOOK_AUTH_SECRET=None), okta_request()),
    "get": lambda make, _: make().get("/", headers={"Authorization": HOOK_SECRET}),
    "invalid fields": lambda make, _: _post(make(), otpCode=OTP + "z", deliveryChannel=PHONE),
    "invalid json": lambda make, _: post_hook(make(), f'{{"otpCode": "{OTP}", "phoneNumber": "{PHONE}"'.encode()),
    "too large": lambda make, _: post_hook(make(), json.dumps(okta_request(pad="x" * 70_000)).encode()),
    "expired": lambda make, _: _post(make(), otpExpires="2020-01-01T00:00:00Z"),
    "country refused": lambda make, _: _post(make(ALLOWED_COUNTRIES="FR")),
    "twilio refused sms": lambda make, _: _post(make(BLOCKED_NUMBER_TYPES="VOIP"), phoneNumber="+15005550001"),
    "twilio refused call": lambda make, _: _post(
        make(BLOCKED_NUMBER_TYPES="VOIP"), phoneNumber="+15005550004", deliveryChannel="CALL"
    ),
    "twilio bad credentials": lambda make, _: _post(make(TWILIO_AUTH_TOKEN=API_SECRET)),
    "twilio unreachable": lambda make, urls: _post(make(TWILIO_API_BASE_URL=urls["closed"])),
    "twilio hangs": lambda make, urls: _post(make(TWILIO_API_BASE_URL=urls["hanging"], TWILIO_TIMEOUT_SECONDS="0.3")),
    "twilio not configured": lambda make, _: _post(make(TWILIO_ACCOUNT_SID=None)),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_no_secret_reaches_any_output(
    scenario: str,
    make_client: AppFactory,
    closed_port: str,
    hanging_twilio: str,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TWILIO_API_KEY", "SK" + "7" * 32)
    monkeypatch.setenv("TWILIO_API_SECRET", API_SECRET)
    caplog.set_level(logging.DEBUG)
    response = SCENARIOS[scenario](make_client, {"closed": closed_port, "hanging": hanging_twilio})
    captured = capfd.readouterr()
    everything = "\n".join(
        [response.get_data(as_text=True), str(dict(response.headers)), captured.out, captured.err, caplog.text]
    )
    assert response.mimetype == "application/json"
    assert '"outcome"' in captured.out  # the hook did log this request
    for forbidden in FORBIDDEN:
        assert forbidden not in everything, f"{scenario} leaked {forbidden!r}"


def test_an_unexpected_error_is_answered_and_logged_without_secrets(
    make_client: AppFactory, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    def explode(self: TwilioDelivery, profile: Any, *arguments: Any) -> Any:
        raise RuntimeError(f"bug while sending {profile.otp_code} to {profile.phone_number} with {HOOK_SECRET}")

    monkeypatch.setattr(TwilioDelivery, "deliver", explode)
    response = post_hook(make_client(), okta_request())
    captured = capfd.readouterr()
    assert response.status_code == 500
    assert response.get_json()["error"]["errorSummary"] == "The telephony hook failed."
    assert "RuntimeError" in captured.out  # the admin still learns what failed
    for forbidden in (OTP, HOOK_SECRET, PHONE, PHONE[1:]):
        assert forbidden not in captured.out + captured.err + response.get_data(as_text=True)


# Delivery receipts: Twilio posts the full numbers (To, From), sometimes the text; none is ever written.

SECRET_BODY = f"Your code is {OTP}"
RECEIPT_SCENARIOS: dict[str, dict[str, Any]] = {
    "delivered": {"form": message_receipt("delivered", Body=SECRET_BODY)},
    "undelivered": {"form": message_receipt("undelivered", ErrorCode="30003", Body=SECRET_BODY)},
    "call no-answer": {"form": call_receipt("no-answer", CallDuration="0")},
    "wrong signature": {"form": message_receipt(Body=SECRET_BODY), "signature": "Zm9yZ2Vk"},
    "no signature": {"form": message_receipt(Body=SECRET_BODY), "signature": ""},
    "malformed": {"form": message_receipt("Teleported!", Body=SECRET_BODY)},
    "a status Twilio adds later": {"form": message_receipt("teleported", Body=SECRET_BODY)},
    "read from twice": {
        "form": [*message_receipt(Body=SECRET_BODY).items(), ("To", "+14155550100"), ("Body", SECRET_BODY + "!")]
    },
    "too large": {"form": message_receipt(Body=SECRET_BODY, Pad="x" * 70_000)},
}


@pytest.mark.parametrize("scenario", sorted(RECEIPT_SCENARIOS))
def test_no_receipt_path_writes_a_number_the_text_or_the_token(
    scenario: str, client: FlaskClient, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    capfd.readouterr()
    response = post_receipt(client, **RECEIPT_SCENARIOS[scenario])
    captured = capfd.readouterr()
    assert '"telephony_hook.receipts"' in captured.out, "the receipt was logged"
    everything = "\n".join([response.get_data(as_text=True), str(dict(response.headers)), captured.out, captured.err])
    for forbidden in (OTP, PHONE, PHONE[1:], FROM_NUMBER, FROM_NUMBER[1:], DEFAULT_AUTH_TOKEN, HOOK_SECRET):
        assert forbidden not in everything, f"{scenario} leaked {forbidden!r}"
    assert response.status_code < 500
