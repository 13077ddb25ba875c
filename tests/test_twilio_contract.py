"""Twilio's published contract (twilio-oai) as the oracle: every request the function can make, sent by
the real twilio library to the sandbox, satisfies it; the sandbox refuses what Twilio would refuse, the
way Twilio does; and the sandbox's answers have the shape Twilio's spec gives them."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from telephony.delivery import TwilioDelivery, build_client
from telephony.settings import load_settings
from telephony.twilio_http import TwilioTransport
from tests.helpers import FROM_NUMBER, OTP, PHONE, profile
from tools.oracles import problems
from tools.sandbox.contract import OPERATIONS, operation_for
from tools.sandbox.twilio_sandbox import (
    CONTRACT_ERROR,
    DEFAULT_ACCOUNT_SID,
    DEFAULT_AUTH_TOKEN,
    SandboxServer,
    SandboxState,
)

MESSAGING_SERVICE = "MG" + "3" * 32
VERIFY_SERVICE = "VA" + "4" * 32
MESSAGES = f"/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}/Messages.json"


def delivery(server: SandboxServer, **env: str) -> TwilioDelivery:
    settings = load_settings(
        {
            "TWILIO_ACCOUNT_SID": DEFAULT_ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": DEFAULT_AUTH_TOKEN,
            "TWILIO_FROM_NUMBER": FROM_NUMBER,
            "TWILIO_API_BASE_URL": server.base_url,
            **env,
        }
    )
    return TwilioDelivery(settings, build_client(settings))


def library(server: SandboxServer) -> Client:
    """The real twilio library, through the function's transport, pointed at the sandbox."""
    transport = TwilioTransport(timeout_seconds=2.0, pool_size=2, base_url=server.base_url)
    return Client(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, http_client=transport)


def in_minutes(minutes: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + 60 * minutes))


def assert_conforms(sandbox: SandboxState, calls: int = 1) -> dict[str, Any]:
    """The request passed Twilio's contract, the answer had Twilio's shape: nothing recorded."""
    assert sandbox.violations == []
    assert len(sandbox.requests) == calls
    return dict(sandbox.requests[-1])


# Each variant of what the function sends: (env, Okta's message profile, what must be on the wire).
VARIANTS: dict[str, tuple[dict[str, str], dict[str, Any], dict[str, str]]] = {
    "sms with From": ({}, {"otpExpires": None}, {"From": FROM_NUMBER}),
    "sms via Messaging Service": (
        {"TWILIO_MESSAGING_SERVICE_SID": MESSAGING_SERVICE},
        {},
        {"MessagingServiceSid": MESSAGING_SERVICE},
    ),
    "sms with ValidityPeriod": ({}, {"otpExpires": in_minutes(5)}, {"ValidityPeriod": ""}),
    **{
        f"voice in {locale}": ({}, {"deliveryChannel": "voice", "locale": locale}, {"From": FROM_NUMBER})
        for locale in ("EN-US", "en_GB", "es-MX", "fr", "de", "pt_BR", "ja", "zh-CN", "xx")
    },
    **{
        f"verify {channel} in {locale}": (
            {"TWILIO_VERIFY_SERVICE_SID": VERIFY_SERVICE},
            {"deliveryChannel": channel, "locale": locale},
            {"CustomCode": OTP},
        )
        for channel, locale in (
            ("sms", "EN-US"),
            ("sms", "pt_BR"),
            ("sms", "zh_CN"),
            ("voice", "en_GB"),
            ("sms", "fr"),
            ("voice", None),
        )
    },
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_the_function_sends_satisfies_twilios_contract(
    sandbox_server: SandboxServer, sandbox: SandboxState, variant: str
) -> None:
    env, fields, on_the_wire = VARIANTS[variant]
    answer = delivery(sandbox_server, **env).deliver(profile(**fields))
    request = assert_conforms(sandbox)
    assert answer.status == 200 and request["response"]["sid"] in answer.json()
    for name, value in on_the_wire.items():
        assert name in request["form"] and (value == "" or request["form"][name] == value), (name, request["form"])


def test_a_status_callback_url_satisfies_the_contract(sandbox_server: SandboxServer, sandbox: SandboxState) -> None:
    """The status-callback route (issue 11) asks Twilio for callbacks on Messages and Calls."""
    client = library(sandbox_server)
    callback = "https://hook.example.com/twilio/status"
    client.messages.create(to=PHONE, from_=FROM_NUMBER, body="x", status_callback=callback)
    client.calls.create(to=PHONE, from_=FROM_NUMBER, twiml="<Response/>", status_callback=callback, time_limit=60)
    assert_conforms(sandbox, calls=2)
    assert [request["form"]["StatusCallback"] for request in sandbox.requests] == [callback, callback]


@pytest.mark.parametrize("status", ["approved", "canceled"])
def test_verify_feedback_satisfies_the_contract(
    sandbox_server: SandboxServer, sandbox: SandboxState, status: str
) -> None:
    """Verify feedback: the verification updated by its SID or by the number it went to."""
    client = library(sandbox_server)
    service = client.verify.v2.services(VERIFY_SERVICE)
    first = service.verifications.create(to=PHONE, channel="sms", custom_code=OTP).sid
    second = service.verifications.create(to=PHONE, channel="call", custom_code=OTP).sid
    by_number = service.verifications(PHONE).update(status=status)
    by_sid = service.verifications(first).update(status=status)
    assert_conforms(sandbox, calls=4)
    assert (by_number.sid, by_number.status, by_number.valid) == (second, status, status == "approved")
    assert (by_sid.sid, by_sid.status, by_sid.to) == (first, status, PHONE)
    with pytest.raises(TwilioRestException) as raised:  # nothing pending any more
        service.verifications(PHONE).update(status=status)
    assert raised.value.status == 404


# ------------------------------------------------------------------ the sandbox refuses like Twilio


def post(server: SandboxServer, path: str, form: dict[str, str]) -> requests.Response:
    return requests.post(server.base_url + path, data=form, auth=(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN), timeout=5)


@pytest.mark.parametrize(
    ("path", "form", "parameter"),
    [
        (MESSAGES, {"To": PHONE, "From": FROM_NUMBER, "Body": "x", "Colour": "red"}, "Colour"),
        (MESSAGES, {"To": PHONE, "From": FROM_NUMBER, "Body": "x", "ValidityPeriod": "soon"}, "ValidityPeriod"),
        (MESSAGES, {"From": FROM_NUMBER, "Body": "x"}, "To"),
        (MESSAGES, {"To": PHONE, "MessagingServiceSid": "MG123", "Body": "x"}, "MessagingServiceSid"),
        ("/2010-04-01/Accounts/AC123/Messages.json", {"To": PHONE, "From": FROM_NUMBER, "Body": "x"}, "AccountSid"),
        (
            f"/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}/Calls.json",
            {"To": PHONE, "From": FROM_NUMBER, "Twiml": "<Response/>", "TimeLimit": "1.5"},
            "TimeLimit",
        ),
        (f"/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}/Calls.json", {"To": PHONE, "Twiml": "<Response/>"}, "From"),
        (f"/v2/Services/{VERIFY_SERVICE}/Verifications", {"To": PHONE}, "Channel"),
        ("/v2/Services/VAnope/Verifications", {"To": PHONE, "Channel": "sms"}, "ServiceSid"),
        (f"/v2/Services/{VERIFY_SERVICE}/Verifications/VE1", {"Status": "done"}, "Status"),
        (f"/v2/Services/{VERIFY_SERVICE}/Verifications/VE1", {"Status": "approved", "Code": OTP}, "Code"),
    ],
)
def test_the_sandbox_refuses_what_twilios_contract_refuses(
    sandbox_server: SandboxServer, sandbox: SandboxState, path: str, form: dict[str, str], parameter: str
) -> None:
    response = post(sandbox_server, path, form)
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"code", "message", "more_info", "status"}
    assert body["code"] == CONTRACT_ERROR and body["status"] == 400
    assert body["message"].startswith(f"Invalid parameter `{parameter}`:")
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{CONTRACT_ERROR}"
    assert sandbox.requests == []
    assert [violation["problem"].split(":")[:2] for violation in sandbox.violations] == [["request", f" {parameter}"]]


def test_the_twilio_library_reports_a_contract_refusal_by_parameter(
    sandbox_server: SandboxServer, sandbox: SandboxState
) -> None:
    client = library(sandbox_server)
    with pytest.raises(TwilioRestException) as raised:
        client.messages.create(to=PHONE, from_=FROM_NUMBER, body="x", validity_period="a while")
    assert raised.value.status == 400 and raised.value.code == CONTRACT_ERROR
    assert "ValidityPeriod" in raised.value.msg


def test_the_contract_table_covers_every_vendored_operation() -> None:
    """Each vendored operation has its row, and each row finds its own operation for a concrete path."""
    assert {template for _, template, _ in OPERATIONS} == {
        "/2010-04-01/Accounts/{AccountSid}/Messages.json",
        "/2010-04-01/Accounts/{AccountSid}/Calls.json",
        "/v2/Services/{ServiceSid}/Verifications",
        "/v2/Services/{ServiceSid}/Verifications/{Sid}",
    }
    found = operation_for("POST", f"/v2/Services/{VERIFY_SERVICE}/Verifications/{PHONE}")
    assert found is not None and found.template.endswith("{Sid}")
    assert operation_for("GET", MESSAGES) is None
    assert operation_for("POST", "/2010-04-01/Accounts/AC1/Queues.json") is None


def test_a_sandbox_answer_off_twilios_shape_is_recorded(sandbox_server: SandboxServer, sandbox: SandboxState) -> None:
    """The answer check can fail: a Verify answer whose `valid` is text breaks the schema."""
    operation = operation_for("POST", f"/v2/Services/{VERIFY_SERVICE}/Verifications")
    assert operation is not None
    good = post(sandbox_server, f"/v2/Services/{VERIFY_SERVICE}/Verifications", {"To": PHONE, "Channel": "sms"})
    assert operation.answer_problems(201, good.json()) == []
    assert operation.answer_problems(201, {**good.json(), "valid": "yes"}) == [
        "valid: 'yes' is not of type 'boolean', 'null'"
    ]
    pointer = "/components/schemas/verify.v2.service.verification"
    assert problems("twilio_verify_v2.json", pointer, good.json()) == []


def test_a_refusal_never_echoes_the_value_sent(sandbox_server: SandboxServer, sandbox: SandboxState) -> None:
    """A code sent where Twilio wants a number is refused by name and rule, never repeated back."""
    response = post(
        sandbox_server, MESSAGES, {"To": PHONE, "From": FROM_NUMBER, "Body": "x", "ValidityPeriod": OTP + "s"}
    )
    assert response.status_code == 400
    assert response.json()["message"] == 'Invalid parameter `ValidityPeriod`: must satisfy type: "integer"'
    assert OTP not in response.text and all(OTP not in violation["problem"] for violation in sandbox.violations)
