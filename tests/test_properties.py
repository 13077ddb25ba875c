"""Hostile input, generated: whatever arrives, the answer is Okta-shaped JSON, never a 5xx, never the OTP."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from functions_framework import create_app
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import HOOK_ENV_NAMES, HOOK_SECRET, OTP, PHONE, ROOT, first_reason, okta_request, sandbox_env
from tools.sandbox.twilio_sandbox import SandboxServer, SandboxState

PROFILE_FIELDS = ["msgTemplate", "phoneNumber", "otpExpires", "deliveryChannel", "otpCode", "locale"]
HYPOTHESIS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def hook(sandbox_server: SandboxServer) -> Iterator[tuple[FlaskClient, SandboxState]]:
    patch = pytest.MonkeyPatch()
    for name in HOOK_ENV_NAMES:
        patch.delenv(name, raising=False)
    # Hundreds of drawn requests to a few numbers: about parsing, not the spend guard (test_spend_guard.py).
    env = sandbox_env(sandbox_server.base_url, BLOCKED_NUMBER_TYPES="PREMIUM_RATE", GUARD_MODE="off")
    for name, value in env.items():
        patch.setenv(name, value)
    client = create_app("telephony_hook", str(ROOT / "main.py")).test_client()
    yield client, sandbox_server.state
    patch.undo()


def send(hook: tuple[FlaskClient, SandboxState], body: bytes) -> tuple[int, dict[str, Any], int]:
    """POST the body; returns status, parsed JSON answer, and how many Twilio calls it caused."""
    client, sandbox = hook
    before = len(sandbox.requests)
    response = client.post("/", data=body, headers={"Authorization": HOOK_SECRET}, content_type="application/json")
    assert response.mimetype == "application/json"
    answer = json.loads(response.get_data())
    assert response.status_code < 500, answer
    assert OTP not in response.get_data(as_text=True)
    assert PHONE not in response.get_data(as_text=True)
    assert_okta_shape(answer)
    return response.status_code, answer, len(sandbox.requests) - before


def assert_okta_shape(answer: dict[str, Any]) -> None:
    if "commands" in answer:
        assert set(answer) == {"commands"}
        result = answer["commands"][0]["value"][0]
        assert answer["commands"][0]["type"] == "com.okta.telephony.action"
        assert result["status"] == "SUCCESSFUL" and result["transactionId"]
    else:
        assert set(answer) == {"error"}
        assert isinstance(answer["error"]["errorSummary"], str) and answer["error"]["errorSummary"]
        for cause in answer["error"]["errorCauses"]:
            assert set(cause) == {"errorSummary", "reason", "location"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=30,
)
tricky_text = st.sampled_from(
    [
        "",
        " ",
        "\u0000",
        "\u202e" + PHONE,
        "+１４１５５５５０１２３",
        "٤٨٢٩١٣",
        "x" * 5000,
        "${jndi:ldap://x}",
        "<Say>hi</Say>",
        "SMS\u200b",
        "\ud83d\ude00",
        "0" * 40,
        "+" + "9" * 20,
        "-1",
        "NaN",
    ]
)


@st.composite
def mutated_payloads(draw: st.DrawFn) -> dict[str, Any]:
    """Okta's valid payload with one to three fields replaced, removed, or given company."""
    body = copy.deepcopy(okta_request())
    profile = body["data"]["messageProfile"]
    for _ in range(draw(st.integers(1, 3))):
        field = draw(st.sampled_from(PROFILE_FIELDS))
        action = draw(st.sampled_from(["replace", "remove", "tricky", "extra"]))
        if action == "replace":
            profile[field] = draw(json_values)
        elif action == "remove":
            profile.pop(field, None)
        elif action == "tricky":
            profile[field] = draw(tricky_text)
        else:
            profile[draw(st.text(min_size=1, max_size=10))] = draw(json_values)
    if draw(st.booleans()):
        body[draw(st.sampled_from(["data", "eventType", "requestType", "eventId"]))] = draw(json_values)
    return body


@HYPOTHESIS
@given(body=st.binary(max_size=2048))
def test_arbitrary_bytes_never_break_the_hook(hook: tuple[FlaskClient, SandboxState], body: bytes) -> None:
    status, answer, twilio_calls = send(hook, body)
    assert status in {400, 200}
    # Twilio is called exactly when the bytes were a valid hook request, which Okta then hears about.
    assert twilio_calls == (1 if "commands" in answer else 0)
    if status == 400:
        assert all(cause["location"] for cause in answer["error"]["errorCauses"])


@HYPOTHESIS
@given(value=json_values)
def test_arbitrary_json_is_refused_without_calling_twilio(hook: tuple[FlaskClient, SandboxState], value: Any) -> None:
    status, answer, twilio_calls = send(hook, json.dumps(value).encode())
    assert status == 400 and "error" in answer
    assert twilio_calls == 0


@HYPOTHESIS
@given(body=mutated_payloads())
def test_mutated_payloads_call_twilio_only_when_valid(
    hook: tuple[FlaskClient, SandboxState], body: dict[str, Any]
) -> None:
    status, answer, twilio_calls = send(hook, json.dumps(body).encode())
    if status == 400:
        assert twilio_calls == 0
        assert all(cause["location"] for cause in answer["error"]["errorCauses"])
    else:
        assert status == 200
        assert twilio_calls == (1 if "commands" in answer else 0)


@pytest.mark.parametrize("depth", [50, 5000, 100_000])
def test_deep_nesting_is_refused_cleanly(hook: tuple[FlaskClient, SandboxState], depth: int) -> None:
    body = ("[" * depth + "]" * depth).encode()
    status, _answer, twilio_calls = send(hook, body)
    assert status in {400, 413} and twilio_calls == 0


def test_a_body_over_64_kb_is_413_before_parsing(hook: tuple[FlaskClient, SandboxState]) -> None:
    body = json.dumps(okta_request(msgTemplate="x" * 70_000)).encode()
    status, answer, twilio_calls = send(hook, body)
    assert status == 413 and first_reason(answer) == "BODY_TOO_LARGE"
    assert twilio_calls == 0


def test_the_valid_payload_still_delivers(hook: tuple[FlaskClient, SandboxState]) -> None:
    status, answer, twilio_calls = send(hook, json.dumps(okta_request()).encode())
    assert (status, twilio_calls) == (200, 1) and "commands" in answer
