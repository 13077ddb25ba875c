"""Okta's published contract as the oracle: requests generated from Okta's own schema are accepted,
and every answer validates against Okta's TelephonyResponse or its documented inline-hook error shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from functions_framework import create_app
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import (
    FUTURE,
    HOOK_ENV_NAMES,
    HOOK_SECRET,
    OTP,
    PHONE,
    ROOT,
    AppFactory,
    okta_request,
    post_hook,
    sandbox_env,
)
from tools.oracles import contract, problems
from tools.sandbox.twilio_sandbox import SandboxServer, SandboxState

OKTA = "okta_telephony.json"
REQUEST = "/components/schemas/TelephonyRequestExecute"
RESPONSE = "/components/schemas/TelephonyResponse"
ERROR = "okta_inline_hook_error.json"
LIBERAL_TOP = ["eventId", "eventTime", "eventTypeVersion", "cloudEventVersion", "contentType", "source"]
HYPOTHESIS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def assert_okta_answer(status: int, answer: dict[str, Any]) -> None:
    """The oracle: a success validates against Okta's TelephonyResponse, anything else is Okta's error object."""
    if "commands" in answer:
        assert status == 200
        assert problems(OKTA, RESPONSE, answer) == []
        assert answer["commands"][0]["type"] == "com.okta.telephony.action"  # the spec's words, not a schema enum
    else:
        assert problems(ERROR, "", answer) == [], answer


def inlined(node: Any, schemas: dict[str, Any]) -> Any:
    """Okta's schema with its references replaced by what they name."""
    if isinstance(node, list):
        return [inlined(value, schemas) for value in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return inlined(schemas[node["$ref"].rsplit("/", 1)[1]], schemas)
    return {key: inlined(value, schemas) for key, value in node.items() if not key.startswith("x-")}


OKTA_REQUEST_SCHEMA = inlined({"$ref": f"#{REQUEST}"}, contract(OKTA)["components"]["schemas"])


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values the schema allows, for the keywords Okta's telephony schemas use: allOf, object with
    optional properties, string (enum or any text). hypothesis-jsonschema 0.23.1 no longer runs on our
    Hypothesis; an unknown keyword fails here loudly rather than being ignored."""
    known = {"type", "properties", "allOf", "description", "enum", "example", "title", "items"}
    assert set(schema) <= known, sorted(set(schema) - known)
    if "allOf" in schema:
        parts = [from_schema(part) for part in schema["allOf"]]
        return st.tuples(*parts).map(lambda dicts: {k: v for d in dicts for k, v in d.items()})
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        properties = {name: from_schema(sub) for name, sub in schema.get("properties", {}).items()}
        return st.fixed_dictionaries({}, optional=properties)
    if kind == "array":
        return st.lists(from_schema(schema["items"]), max_size=3)
    assert kind == "string", schema
    return st.text(max_size=40)


# The fields the hook acts on, realistic; Okta's schema says only "string" for each.
acted_on = st.fixed_dictionaries(
    {
        "otpCode": st.from_regex(r"\A[0-9]{4,10}\Z"),
        "phoneNumber": st.sampled_from(
            [PHONE, "14155550123", "+1 415-555-0123", "+447400123456", "+33612345678", "+919876543210"]
        ),
        "deliveryChannel": st.sampled_from(["SMS", "sms", "voice", "Voice", "CALL", "Voice call"]),
        "otpExpires": st.sampled_from([FUTURE, "2099-01-01T00:00:00Z", "2099-06-30T12:00:00.123+02:00"]),
    }
)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()


@st.composite
def okta_requests(draw: st.DrawFn, widen: bool = True) -> dict[str, Any]:
    """A request drawn from Okta's schema, the acted-on fields realistic, the others anything the
    schema allows; then some fields Okta types as strings given any JSON scalar instead."""
    body: dict[str, Any] = draw(from_schema(OKTA_REQUEST_SCHEMA))
    data = body.setdefault("data", {})
    profile = data.get("messageProfile")
    if not isinstance(profile, dict):
        profile = data["messageProfile"] = {}
    profile.update(draw(acted_on))
    for name in ("msgTemplate", "locale"):  # acted on too: left as the schema drew them, or absent
        if draw(st.booleans()):
            profile.pop(name, None)
    body["eventType"] = draw(st.sampled_from(["com.okta.telephony.provider", None]))
    if body["eventType"] is None:
        del body["eventType"]
    if not widen:
        return body
    for name in draw(st.lists(st.sampled_from(LIBERAL_TOP), unique=True)):
        body[name] = draw(json_scalars)
    for name in draw(st.lists(st.sampled_from(["context", "userProfile"]), unique=True)):
        data[name] = draw(json_scalars)
    return body


@pytest.fixture(scope="module")
def hook(sandbox_server: SandboxServer) -> Iterator[tuple[FlaskClient, SandboxState]]:
    patch = pytest.MonkeyPatch()
    for name in HOOK_ENV_NAMES:
        patch.delenv(name, raising=False)
    # Hundreds of drawn requests to a few numbers: about Okta's shapes, not the spend guard (test_spend_guard.py).
    for name, value in sandbox_env(sandbox_server.base_url, GUARD_MODE="off").items():
        patch.setenv(name, value)
    yield create_app("telephony_hook", str(ROOT / "main.py")).test_client(), sandbox_server.state
    patch.undo()


@HYPOTHESIS
@given(body=okta_requests())
def test_requests_from_oktas_schema_are_delivered(hook: tuple[FlaskClient, SandboxState], body: dict[str, Any]) -> None:
    client, sandbox = hook
    before = len(sandbox.requests)
    response = post_hook(client, body)
    answer = response.get_json()
    assert response.status_code == 200, answer
    assert_okta_answer(response.status_code, answer)
    assert answer["commands"][0]["value"][0]["status"] == "SUCCESSFUL", answer
    assert len(sandbox.requests) == before + 1


@HYPOTHESIS
@given(body=from_schema(OKTA_REQUEST_SCHEMA))
def test_anything_oktas_schema_allows_never_gets_a_5xx(
    hook: tuple[FlaskClient, SandboxState], body: dict[str, Any]
) -> None:
    response = post_hook(hook[0], body)
    assert response.status_code < 500
    assert_okta_answer(response.status_code, response.get_json())
    assert OTP not in response.get_data(as_text=True)


@HYPOTHESIS
@given(body=okta_requests(widen=False))
def test_the_generated_requests_are_oktas(body: dict[str, Any]) -> None:
    """Before the liberal fields are widened, every drawn request satisfies Okta's own schema, so the
    delivery property above covers what Okta can send."""
    assert problems(OKTA, REQUEST, body) == []


def test_oktas_schema_calls_a_number_in_the_version_fields_invalid() -> None:
    """Why the hook is liberal there: Okta's examples are numbers where its types say string."""
    widened = {**okta_request(), "eventTypeVersion": 1, "cloudEventVersion": 0.1}
    assert problems(OKTA, REQUEST, widened) == [
        "cloudEventVersion: 0.1 is not of type 'string'",
        "eventTypeVersion: 1 is not of type 'string'",
    ]
    base = contract(OKTA)["components"]["schemas"]["InlineHookBasePayload"]["properties"]
    assert (base["eventTypeVersion"]["example"], base["cloudEventVersion"]["example"]) == (1, 0.1)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("eventTypeVersion", 1.0),
        ("eventTypeVersion", 1),
        ("cloudEventVersion", 0.1),
        ("eventId", 12345),
        ("eventTime", None),
        ("contentType", True),
        ("source", 3.5),
    ],
)
def test_a_scalar_where_okta_documents_a_string_is_delivered_and_logged_as_text(
    client: FlaskClient, sandbox: SandboxState, capsys: pytest.CaptureFixture[str], field: str, value: Any
) -> None:
    body = {**okta_request(), field: value}
    response = post_hook(client, body)
    assert response.status_code == 200
    assert_okta_answer(200, response.get_json())
    assert len(sandbox.requests) == 1
    if field == "eventId":
        line = next(json.loads(x) for x in capsys.readouterr().out.splitlines() if '"outcome"' in x)
        assert line["event_id"] == "12345"


@pytest.mark.parametrize("value", [None, 7, "text", True, 1.5, []])
@pytest.mark.parametrize("field", ["context", "userProfile"])
def test_context_and_user_profile_may_be_any_scalar(
    client: FlaskClient, sandbox: SandboxState, field: str, value: Any
) -> None:
    body = okta_request()
    body["data"][field] = value
    response = post_hook(client, body)
    assert response.status_code == 200 and "commands" in response.get_json()
    assert len(sandbox.requests) == 1


def test_scalars_inside_the_context_and_profile_are_read_as_text(client: FlaskClient, sandbox: SandboxState) -> None:
    body = okta_request()
    body["data"]["context"] = {"request": {"id": 5, "method": None, "ipAddress": 127, "url": 3}}
    body["data"]["userProfile"] = {"firstName": 1, "lastName": False, "login": 2.5, "userId": None}
    response = post_hook(client, body)
    assert response.status_code == 200 and "commands" in response.get_json()


def test_an_integer_otp_code_is_a_clear_400(client: FlaskClient, sandbox: SandboxState) -> None:
    response = post_hook(client, okta_request(otpCode=int("0" + OTP)))
    assert response.status_code == 400
    answer = response.get_json()
    assert_okta_answer(400, answer)
    (cause,) = answer["error"]["errorCauses"]
    assert cause["location"] == "data.messageProfile.otpCode"
    assert "string of digits" in cause["errorSummary"] and "leading zeros" in cause["errorSummary"]
    assert OTP not in response.get_data(as_text=True)
    assert sandbox.requests == []


@pytest.mark.parametrize(
    "overrides", [{}, {"TWILIO_MESSAGING_SERVICE_SID": "MG" + "1" * 32}, {"TWILIO_VERIFY_SERVICE_SID": "VA" + "2" * 32}]
)
@pytest.mark.parametrize("channel", ["SMS", "voice"])
def test_every_success_validates_against_oktas_telephony_response(
    make_client: AppFactory, sandbox: SandboxState, overrides: dict[str, str], channel: str
) -> None:
    response = post_hook(make_client(**overrides), okta_request(deliveryChannel=channel))
    assert response.status_code == 200
    assert_okta_answer(200, response.get_json())
    assert "commands" in response.get_json()


CLOSED_PORT = "closed port"  # replaced by the fixture's URL
REFUSALS: dict[str, tuple[dict[str, str | None], Any, dict[str, str]]] = {
    "unauthenticated": ({}, okta_request(), {"Authorization": "wrong"}),
    "no authentication configured": ({"OKTA_HOOK_AUTH_SECRET": None}, okta_request(), {}),
    "invalid field": ({}, okta_request(otpCode="12ab"), {}),
    "not json": ({}, b"{", {}),
    "another hook": ({}, {**okta_request(), "eventType": "com.okta.oauth2.tokens.transform"}, {}),
    "expired": ({}, okta_request(otpExpires="2001-01-01T00:00:00Z"), {}),
    "premium rate": ({"BLOCKED_NUMBER_TYPES": "PREMIUM_RATE"}, okta_request(phoneNumber="+19005550123"), {}),
    "twilio refuses": ({}, okta_request(phoneNumber="+15005550001"), {}),
    "twilio unreachable": ({"TWILIO_API_BASE_URL": CLOSED_PORT}, okta_request(), {}),
    "not configured": ({"TWILIO_FROM_NUMBER": None}, okta_request(), {}),
    "too large": ({}, okta_request(msgTemplate="x" * 70_000), {}),
}


@pytest.mark.parametrize("why", REFUSALS)
def test_every_refusal_has_oktas_error_shape(
    make_client: AppFactory, sandbox: SandboxState, closed_port: str, why: str
) -> None:
    overrides, body, headers = REFUSALS[why]
    env = {name: closed_port if value == CLOSED_PORT else value for name, value in overrides.items()}
    data = body if isinstance(body, bytes) else json.dumps(body)
    response = make_client(**env).post(
        "/", data=data, headers={"Authorization": HOOK_SECRET, **headers}, content_type="application/json"
    )
    answer = response.get_json()
    assert set(answer) == {"error"}
    assert_okta_answer(response.status_code, answer)
    text = response.get_data(as_text=True)
    assert OTP not in text and PHONE not in text and HOOK_SECRET not in text
    assert response.status_code in {200, 400, 401, 413}
    assert all(request["response"].get("status") != "queued" for request in sandbox.requests)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_other_methods_get_oktas_error_shape(client: FlaskClient, method: str) -> None:
    response = client.open("/", method=method, headers={"Authorization": HOOK_SECRET})
    assert response.status_code == 405
    assert_okta_answer(405, response.get_json())


def test_the_vendored_schemas_name_their_source() -> None:
    for name, repository, licence in (
        (OKTA, "okta/okta-sdk-python", "Apache-2.0"),
        ("twilio_api_v2010.json", "twilio/twilio-oai", "MIT"),
        ("twilio_verify_v2.json", "twilio/twilio-oai", "MIT"),
    ):
        source = contract(name)["x-source"]
        assert source["repository"] == repository and source["licence"] == licence
        assert len(source["commit"]) == 40 and int(source["commit"], 16) >= 0
    assert set(contract(OKTA)["components"]["schemas"]) >= {
        "TelephonyRequestExecute",
        "InlineHookBasePayload",
        "TelephonyRequest",
        "TelephonyRequestData",
        "TelephonyResponse",
    }
