"""/okta/events: Okta's event hook gives Twilio Verify its feedback (approved) for codes users typed in."""

from __future__ import annotations

import copy
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient

from models import LogEvent
from telephony.events import passed_challenge
from telephony.phone import mask
from tests.helpers import (
    EVENT_HOOK_SECRET,
    OKTA_API_TOKEN,
    OKTA_USER_ID,
    PHONE,
    PHONE_MASKED,
    VERIFY_SERVICE_SID,
    AppFactory,
    load_fixture,
)
from tests.okta_stand_in import OktaState, phone_factor
from tests.standins import http_answer, stand_in
from tools.sandbox.twilio_sandbox import SandboxState

PENDING_SID = "VE" + "4c" * 16


def events_env(okta: OktaState, **overrides: str | None) -> dict[str, str | None]:
    return {
        "OKTA_EVENT_HOOK_AUTH_SECRET": EVENT_HOOK_SECRET,
        "OKTA_ORG_URL": okta.url,
        "OKTA_API_TOKEN": OKTA_API_TOKEN,
        "TWILIO_VERIFY_SERVICE_SID": VERIFY_SERVICE_SID,
        **overrides,
    }


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def batch(*events: dict[str, Any]) -> dict[str, Any]:
    """Okta's documented delivery (a passed SMS challenge and a sign-in), published now, or these events."""
    body = copy.deepcopy(load_fixture("okta_event_hook_mfa.json"))
    body["data"]["events"] = list(events) or [
        {**event, "published": now(), "uuid": str(uuid.uuid4())} for event in body["data"]["events"]
    ]
    return dict(body)


def mfa_event(**changes: Any) -> dict[str, Any]:
    """The fixture's passed SMS challenge, published now, with a uuid of its own."""
    event = copy.deepcopy(load_fixture("okta_event_hook_mfa.json")["data"]["events"][0])
    event.update(published=now(), uuid=str(uuid.uuid4()))
    event.update(changes)
    return dict(event)


def post_events(client: FlaskClient, body: Any, secret: str | None = EVENT_HOOK_SECRET) -> Any:
    headers = {"Authorization": secret} if secret is not None else {}
    return client.post("/okta/events", json=body, headers=headers)


def event_lines(output: str) -> list[dict[str, Any]]:
    """The lines of each event (the request's own line is not one)."""
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("logger") == "okta_events" and "event_type" in line]


def request_line(output: str) -> dict[str, Any]:
    """The one line the event hook writes for the request itself."""
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    (line,) = [line for line in lines if line.get("logger") == "okta_events" and "event_type" not in line]
    return line


def verify_updates(sandbox: SandboxState) -> list[dict[str, Any]]:
    return [
        request
        for request in sandbox.requests
        if request["path"].startswith(f"/v2/Services/{VERIFY_SERVICE_SID}/Verifications/")
    ]


@pytest.fixture
def events_client(make_client: AppFactory, okta_api: OktaState) -> FlaskClient:
    okta_api.factors[OKTA_USER_ID] = [phone_factor(PHONE)]
    return make_client(**events_env(okta_api))


# ------------------------------------------------------------------------------ verification and auth


def test_the_verification_get_echoes_oktas_challenge(events_client: FlaskClient) -> None:
    response = events_client.get(
        "/okta/events", headers={"Authorization": EVENT_HOOK_SECRET, "X-Okta-Verification-Challenge": "abc-123"}
    )
    assert response.status_code == 200
    assert response.get_json() == {"verification": "abc-123"}


def test_the_verification_get_needs_the_secret_too(events_client: FlaskClient) -> None:
    response = events_client.get("/okta/events", headers={"X-Okta-Verification-Challenge": "abc-123"})
    assert response.status_code == 401
    assert "verification" not in response.get_json()


def test_an_unauthenticated_event_post_is_refused_before_any_call(
    events_client: FlaskClient, okta_api: OktaState, sandbox: SandboxState
) -> None:
    sandbox.pend(VERIFY_SERVICE_SID, PHONE, PENDING_SID)
    for secret in (None, "wrong-secret"):
        response = post_events(events_client, batch(), secret=secret)
        assert response.status_code == 401
        assert set(response.get_json()) == {"error"}
        assert response.get_json()["error"]["errorSummary"] == "The event hook refused the call: authentication failed."
    assert okta_api.requests == []
    assert sandbox.requests == []


def test_without_an_event_hook_secret_every_call_is_refused(make_client: AppFactory, okta_api: OktaState) -> None:
    client = make_client(**{**events_env(okta_api), "OKTA_EVENT_HOOK_AUTH_SECRET": None})
    assert post_events(client, batch()).status_code == 401


def test_the_telephony_hook_secret_does_not_open_the_event_hook(events_client: FlaskClient) -> None:
    from tests.helpers import HOOK_SECRET

    assert post_events(events_client, batch(), secret=HOOK_SECRET).status_code == 401


# ---------------------------------------------------------------------------------------- feedback


def test_one_matching_event_approves_exactly_one_verification_for_the_users_number(
    events_client: FlaskClient, okta_api: OktaState, sandbox: SandboxState, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox.pend(VERIFY_SERVICE_SID, PHONE, PENDING_SID)
    capsys.readouterr()
    response = post_events(events_client, batch())
    assert response.status_code == 200
    updates = verify_updates(sandbox)
    assert len(updates) == 1
    assert updates[0]["path"] == f"/v2/Services/{VERIFY_SERVICE_SID}/Verifications/%2B{PHONE[1:]}"
    assert updates[0]["form"] == {"Status": "approved"}
    assert sandbox.pending == {}
    assert okta_api.requests == [
        {"path": f"/api/v1/users/{OKTA_USER_ID}/factors", "authorization": f"SSWS {OKTA_API_TOKEN}"}
    ]
    output = capsys.readouterr().out
    request = request_line(output)
    assert (request["outcome"], request["http_status"], request["events"], request["unfinished"]) == (
        "events_received",
        200,
        2,
        0,
    )
    assert (request["ignored"], request["users"], request["repeated"], request["stale"]) == (1, 1, 0, 0)
    assert isinstance(request["duration_ms"], float)
    (line,) = event_lines(output)  # the sign-in is counted on the request's line, not given its own
    assert (line["outcome"], line["factor"], line["events"]) == ("feedback_approved", "sms", 1)
    assert line["phone"] == PHONE_MASKED
    assert line["twilio_sid"] == PENDING_SID
    for secret in (PHONE, PHONE[1:], EVENT_HOOK_SECRET, OKTA_API_TOKEN):
        assert secret not in output


@pytest.mark.parametrize("user_id", ["..", "../../groups", "00u1?limit=200", "00u1#x", "00u 1", "", "x" * 65])
def test_a_user_id_that_is_not_oktas_never_reaches_oktas_api(
    events_client: FlaskClient, okta_api: OktaState, sandbox: SandboxState, user_id: str
) -> None:
    """Okta's user ids are letters and digits: anything else would address another API path."""
    event = mfa_event()
    event["actor"]["id"] = user_id
    for target in event.get("target") or []:
        if target.get("type") == "User":
            target["id"] = user_id
    response = post_events(events_client, batch(event))
    assert response.status_code == 200
    assert okta_api.requests == [] and verify_updates(sandbox) == []


def test_a_user_with_nothing_pending_is_normal_and_answered_200(
    events_client: FlaskClient, sandbox: SandboxState, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    response = post_events(events_client, batch(mfa_event()))
    assert response.status_code == 200
    assert len(verify_updates(sandbox)) == 0  # the sandbox answered 404: nothing recorded as done
    (line,) = event_lines(capsys.readouterr().out)
    assert line["outcome"] == "feedback_not_pending"
    assert line["severity"] == "INFO"
    assert line["phone"] == PHONE_MASKED


@pytest.mark.parametrize("spelling", [str.upper, lambda uuid: "{" + uuid + "}", lambda uuid: uuid.replace("-", "")])
def test_an_event_redelivered_with_its_uuid_spelled_otherwise_is_the_same_event(
    events_client: FlaskClient, okta_api: OktaState, sandbox: SandboxState, spelling: Any
) -> None:
    event = mfa_event()
    sandbox.pend(VERIFY_SERVICE_SID, PHONE, PENDING_SID)
    assert post_events(events_client, batch(event)).status_code == 200
    sandbox.pend(VERIFY_SERVICE_SID, PHONE, "VE" + "5e" * 16)  # a newer code the user has not typed
    assert post_events(events_client, batch({**event, "uuid": spelling(event["uuid"])})).status_code == 200
    assert len(verify_updates(sandbox)) == 1
    assert sandbox.pending == {(VERIFY_SERVICE_SID, PHONE): "VE" + "5e" * 16}


def test_a_repeated_event_is_acted_on_once(
    events_client: FlaskClient, okta_api: OktaState, sandbox: SandboxState, capsys: pytest.CaptureFixture[str]
) -> None:
    event = mfa_event()
    sandbox.pend(VERIFY_SERVICE_SID, PHONE, PENDING_SID)
    assert post_events(events_client, batch(event)).status_code == 200
    sandbox.pend(VERIFY_SERVICE_SID, PHONE, "VE" + "5e" * 16)  # a newer code the user has not typed
    capsys.readouterr()
    assert post_events(events_client, batch(event, event)).status_code == 200
    output = capsys.readouterr().out
    assert event_lines(output) == [] and request_line(output)["repeated"] == 2
    assert len(verify_updates(sandbox)) == 1 and len(okta_api.requests) == 1
    assert sandbox.pending == {(VERIFY_SERVICE_SID, PHONE): "VE" + "5e" * 16}


@pytest.mark.parametrize(
    "spelling",
    [
        lambda uuid: uuid.upper(),
        lambda uuid: "{" + uuid + "}",
        lambda uuid: uuid.replace("-", ""),
        lambda uuid: "urn:uuid:" + uuid,  # RFC 9562's URN form
        lambda uuid: "URN:UUID:" + uuid.upper(),
        lambda uuid: uuid.replace("1", "\uff11"),  # full-width digits: str.isalnum() takes them
    ],
)
def test_an_event_spelled_otherwise_is_the_same_event(spelling: Any) -> None:
    from telephony.events import canonical_uuid

    uuid = "1f8a2c3d-1e2f-4a5b-9c6d-7e8f9a0b1c2d"
    assert canonical_uuid(spelling(uuid)) == canonical_uuid(uuid) == uuid.replace("-", "")


def test_the_claims_of_one_instance_expire_and_stay_bounded() -> None:
    from telephony.store import LocalClaims

    clock = [0.0]
    claims = LocalClaims(capacity=3, clock=lambda: clock[0])
    assert claims.claim("a", 10) and not claims.claim("a", 10)
    clock[0] = 10.5
    assert claims.claim("a", 10)  # expired: claimable again
    for key in "bcd":
        assert claims.claim(key, 10)
    assert claims.claim("a", 10)  # pushed out by capacity, the oldest first
    assert not claims.claim("d", 10)


def test_a_verification_sent_through_the_hook_is_approved_by_the_event(
    make_client: AppFactory, okta_api: OktaState, sandbox: SandboxState
) -> None:
    from tests.helpers import okta_request, post_hook

    okta_api.factors[OKTA_USER_ID] = [phone_factor(PHONE)]
    client = make_client(**events_env(okta_api))
    assert post_hook(client, okta_request()).get_json()["commands"][0]["value"][0]["status"] == "SUCCESSFUL"
    assert list(sandbox.pending) == [(VERIFY_SERVICE_SID, PHONE)]
    assert post_events(client, batch(mfa_event())).status_code == 200
    assert sandbox.pending == {}


def test_a_factor_number_okta_keeps_without_its_plus_approves_the_verification_the_hook_started(
    make_client: AppFactory, okta_api: OktaState, sandbox: SandboxState
) -> None:
    """Verify's update names the number as the hook sent the code to it (E.164), whatever the spelling
    Okta keeps in the factor."""
    from tests.helpers import okta_request, post_hook

    okta_api.factors[OKTA_USER_ID] = [phone_factor(PHONE.removeprefix("+"))]
    client = make_client(**events_env(okta_api))
    assert post_hook(client, okta_request()).get_json()["commands"][0]["value"][0]["status"] == "SUCCESSFUL"
    assert post_events(client, batch(mfa_event())).status_code == 200
    assert [update["path"] for update in verify_updates(sandbox)] == [
        f"/v2/Services/{VERIFY_SERVICE_SID}/Verifications/%2B{PHONE[1:]}"
    ]
    assert sandbox.pending == {}


OTHER_NUMBER = "+14155550999"


def two_numbers(make_client: AppFactory, okta_api: OktaState, sandbox: SandboxState) -> FlaskClient:
    """The user's "sms" factor on PHONE and "call" factor on OTHER_NUMBER, a Verify code pending on each."""
    okta_api.factors[OKTA_USER_ID] = [phone_factor(PHONE, "sms"), phone_factor(OTHER_NUMBER, "call")]
    sandbox.pend(VERIFY_SERVICE_SID, PHONE, "VE" + "11" * 16)
    sandbox.pend(VERIFY_SERVICE_SID, OTHER_NUMBER, "VE" + "22" * 16)
    return make_client(**events_env(okta_api))


def test_a_stale_event_beside_a_fresh_one_approves_nothing_of_its_own(
    make_client: AppFactory, okta_api: OktaState, sandbox: SandboxState, capsys: pytest.CaptureFixture[str]
) -> None:
    """In one POST, a stale event naming the call enrolment and a fresh SMS event naming none: the fresh
    one approves its own factor's number; the stale one converts its number, and approves nothing."""
    client = two_numbers(make_client, okta_api, sandbox)
    call_enrolment = phone_factor(OTHER_NUMBER, "call")["id"]
    two_hours_ago = (datetime.now(UTC) - timedelta(hours=2)).isoformat(timespec="milliseconds")
    stale = mfa_event(published=two_hours_ago.replace("+00:00", "Z"))
    stale["target"][0]["id"] = call_enrolment
    fresh = mfa_event(target=[])
    capsys.readouterr()
    assert post_events(client, batch(stale, fresh)).status_code == 200
    assert sandbox.pending == {(VERIFY_SERVICE_SID, OTHER_NUMBER): "VE" + "22" * 16}
    lines = {line["phone"]: line["outcome"] for line in event_lines(capsys.readouterr().out)}
    assert lines == {mask(PHONE): "feedback_approved", mask(OTHER_NUMBER): "converted"}


def test_a_stale_event_is_counted_stale_whatever_is_configured(
    make_client: AppFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """An event hook that cannot act (no Management API, guard off): a late event is `stale`, as the
    docs say, and only the fresh one is what the admin must fix (`not_configured`)."""
    client = make_client(OKTA_EVENT_HOOK_AUTH_SECRET=EVENT_HOOK_SECRET, GUARD_MODE="off")
    two_hours_ago = (datetime.now(UTC) - timedelta(hours=2)).isoformat(timespec="milliseconds")
    capsys.readouterr()
    stale, fresh = mfa_event(published=two_hours_ago.replace("+00:00", "Z")), mfa_event()
    assert post_events(client, batch(stale, fresh)).status_code == 200
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    (counted,) = [line for line in lines if "stale" in line]  # the POST's own line
    assert (counted["stale"], counted["not_configured"]) == (1, 1)
    (error,) = [line for line in lines if line.get("outcome") == "not_configured"]
    assert (error["events"], error["severity"]) == (1, "ERROR")


def test_a_late_event_is_acted_on_once_too(
    make_client: AppFactory, okta_api: OktaState, capsys: pytest.CaptureFixture[str]
) -> None:
    """A late event (no Verify code left to approve) still converts, once: one published ahead of our
    clock (skew is allowed) was claimed only while fresh, and delivered again once late it gave back
    the room of codes sent after it was first acted on."""
    okta_api.factors[OKTA_USER_ID] = [phone_factor(PHONE)]
    client = make_client(**events_env(okta_api, TWILIO_VERIFY_SERVICE_SID=None))
    late = mfa_event(published=(datetime.now(UTC) - timedelta(minutes=20)).isoformat().replace("+00:00", "Z"))
    capsys.readouterr()
    assert post_events(client, batch(late)).status_code == 200
    assert [line["outcome"] for line in event_lines(capsys.readouterr().out)] == ["converted"]
    assert post_events(client, batch(late)).status_code == 200
    output = capsys.readouterr().out
    assert event_lines(output) == []
    assert (request_line(output)["repeated"], request_line(output)["stale"]) == (1, 1)


def test_each_event_of_a_post_proves_the_number_it_alone_would(
    make_client: AppFactory, okta_api: OktaState, sandbox: SandboxState, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two fresh SMS events: one names no enrolment (its factor type decides), the other the call
    enrolment. Each number is proved and converts; one SMS factor of one user gets one Verify update in a
    POST (verify-feedback.md's bound), the first in Okta's order."""
    client = two_numbers(make_client, okta_api, sandbox)
    unknown = mfa_event(target=[])
    named = mfa_event()
    named["target"][0]["id"] = phone_factor(OTHER_NUMBER, "call")["id"]
    capsys.readouterr()
    assert post_events(client, batch(unknown, named)).status_code == 200
    assert sandbox.pending == {(VERIFY_SERVICE_SID, OTHER_NUMBER): "VE" + "22" * 16}
    lines = {line["phone"]: line["outcome"] for line in event_lines(capsys.readouterr().out)}
    assert lines == {PHONE_MASKED: "feedback_approved", mask(OTHER_NUMBER): "converted"}


def test_a_number_the_guard_cannot_record_has_its_own_line_beside_verifys(
    make_client: AppFactory, okta_api: OktaState, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ten national digits without DEFAULT_COUNTRY read as no valid number: Verify is still asked (Okta's
    own provider may have a code pending on it), and the guard's miss is a WARNING line of its own."""
    okta_api.factors[OKTA_USER_ID] = [phone_factor("2025550104")]
    client = make_client(**events_env(okta_api))
    capsys.readouterr()
    assert post_events(client, batch(mfa_event())).status_code == 200
    lines = sorted((line["outcome"], line["severity"]) for line in event_lines(capsys.readouterr().out))
    assert lines == [("feedback_not_pending", "INFO"), ("not_converted", "WARNING")]


def test_the_batch_is_handled_concurrently(
    events_client: FlaskClient, okta_api: OktaState, sandbox: SandboxState
) -> None:
    okta_api.latency_seconds = 0.3
    users = [f"00u{index}otheruser" for index in range(6)]
    events = [mfa_event(actor={"id": user, "type": "User"}) for user in users]
    started = time.monotonic()
    assert post_events(events_client, batch(*events)).status_code == 200
    elapsed = time.monotonic() - started
    assert len(okta_api.requests) == 6
    assert elapsed < 6 * 0.3 / 2  # one after another would take 6 latencies


# ----------------------------------------------------------------------------- Okta's API failing


def test_a_slow_okta_api_is_given_up_on_inside_the_budget_and_logged(
    make_client: AppFactory, okta_api: OktaState, sandbox: SandboxState, capsys: pytest.CaptureFixture[str]
) -> None:
    okta_api.factors[OKTA_USER_ID] = [phone_factor(PHONE)]
    okta_api.latency_seconds = 3.0
    client = make_client(**events_env(okta_api, OKTA_API_TIMEOUT_SECONDS="0.3"))
    sandbox.pend(VERIFY_SERVICE_SID, PHONE, PENDING_SID)
    capsys.readouterr()
    started = time.monotonic()
    assert post_events(client, batch(mfa_event())).status_code == 200
    elapsed = time.monotonic() - started
    assert elapsed < okta_api.latency_seconds / 2
    (line,) = event_lines(capsys.readouterr().out)
    assert line["outcome"] == "okta_api_unavailable"
    assert line["okta_api_error"] == "OKTA_API_TIMEOUT"
    assert line["severity"] == "ERROR"
    assert verify_updates(sandbox) == []


def test_an_okta_api_that_is_down_is_logged(
    make_client: AppFactory, closed_port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = make_client(
        OKTA_EVENT_HOOK_AUTH_SECRET=EVENT_HOOK_SECRET,
        OKTA_ORG_URL=closed_port,
        OKTA_API_TOKEN=OKTA_API_TOKEN,
        TWILIO_VERIFY_SERVICE_SID=VERIFY_SERVICE_SID,
    )
    capsys.readouterr()
    assert post_events(client, batch(mfa_event())).status_code == 200
    (line,) = event_lines(capsys.readouterr().out)
    assert (line["okta_api_error"], line["factor"]) == ("OKTA_API_UNREACHABLE", "sms")  # as every user's line


def test_an_okta_api_that_refuses_the_token_is_logged_by_status(
    make_client: AppFactory, okta_api: OktaState, capsys: pytest.CaptureFixture[str]
) -> None:
    client = make_client(**events_env(okta_api, OKTA_API_TOKEN="revoked-token-value"))
    capsys.readouterr()
    assert post_events(client, batch(mfa_event())).status_code == 200
    output = capsys.readouterr().out
    (line,) = event_lines(output)
    assert line["okta_api_error"] == "OKTA_API_HTTP_401"
    assert "revoked-token-value" not in output


def test_a_user_okta_no_longer_has_is_no_phone_not_an_outage(
    make_client: AppFactory, okta_api: OktaState, capsys: pytest.CaptureFixture[str]
) -> None:
    """Okta answers 404 E0000007 for a user deleted since the event: nothing to act on, and the API is
    up. An ERROR `okta_api_unavailable` would page whoever watches for outages."""
    client = make_client(**events_env(okta_api))
    okta_api.factors.clear()
    capsys.readouterr()
    assert post_events(client, batch(mfa_event())).status_code == 200
    (line,) = event_lines(capsys.readouterr().out)
    assert (line["outcome"], line["severity"]) == ("feedback_no_phone", "WARNING")
    assert "okta_api_error" not in line


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (404, b"<html>Not Found</html>"),  # not Okta's answer: a wrong OKTA_ORG_URL, a proxy
        (404, b'{"errorCode": "E0000022", "errorSummary": "The endpoint does not support the method"}'),
        (403, b'{"errorCode": "E0000007", "errorSummary": "Not found"}'),  # only a 404 says "no such user"
    ],
)
def test_any_other_not_found_is_still_the_apis_failure(status: int, body: bytes) -> None:
    from telephony.okta_api import OktaApi, OktaApiUnavailable
    from tests.standins import http_answer, stand_in

    with stand_in(http_answer(status, body)) as okta, pytest.raises(OktaApiUnavailable, match=f"_HTTP_{status}"):
        OktaApi(okta.base_url, "token", 1.0, 1).phone_factors("00u1")


# ------------------------------------------------------------------------------- which events count


@pytest.mark.parametrize(
    ("changes", "counts"),
    [
        ({}, True),
        ({"debugContext": {"debugData": {"factor": "CALL_FACTOR", "factorIntent": "CREDENTIAL_RECOVERY"}}}, True),
        ({"debugContext": {"debugData": {"factor": "SMS_FACTOR", "factorIntent": "CREDENTIAL_ENROLLMENT"}}}, True),
        ({"debugContext": {"debugData": {"factor": "EMAIL_FACTOR"}}}, False),
        ({"outcome": {"result": "FAILURE"}}, False),
        ({"eventType": "user.session.start"}, False),
        ({"eventType": "user.mfa.factor.activate", "debugContext": {"debugData": {}}}, True),
        (
            {
                "eventType": "user.mfa.factor.activate",
                "target": [{"id": "x", "type": "AuthenticatorEnrollment", "detailEntry": {"methodTypeUsed": "EMAIL"}}],
            },
            False,
        ),
    ],
)
def test_only_passed_sms_and_voice_challenges_count(changes: dict[str, Any], counts: bool) -> None:
    assert (passed_challenge(LogEvent.model_validate(mfa_event(**changes))) is not None) is counts


ADMIN = {"id": "00uadmin0000000000000", "type": "User", "alternateId": "admin@example.com"}


def activation(actor: str) -> dict[str, Any]:
    """The user's SMS enrolment activated, by the user, an admin, or an app (the Factors API)."""
    event = mfa_event(eventType="user.mfa.factor.activate", debugContext={"debugData": {}})
    event["target"].append({"id": OKTA_USER_ID, "type": "User", "alternateId": "isaac.brock@example.com"})
    event["actor"] = {
        "user": event["actor"],
        "admin": ADMIN,
        "app": {"id": "0oa1portal", "type": "PublicClientApp", "alternateId": "enrolment portal"},
    }[actor]
    return event


@pytest.mark.parametrize(("actor", "proven"), [("user", True), ("admin", False), ("app", False)])
def test_an_activation_made_by_someone_else_does_not_prove_the_number_by_itself(actor: str, proven: bool) -> None:
    """An admin or an app activating through the Factors API names the user as its target: it may carry
    the user's code (passCode) or none (activate=true), and the event does not say which."""
    passed = passed_challenge(LogEvent.model_validate(activation(actor)))
    assert passed is not None and (passed.user_id, passed.factor_type, passed.proven) == (OKTA_USER_ID, "sms", proven)


@pytest.mark.parametrize("actor", ["admin", "app"])
def test_an_activation_by_someone_else_converts_once_verify_approves_the_code_it_held(
    actor: str, make_client: AppFactory, okta_api: OktaState, sandbox: SandboxState, capsys: pytest.CaptureFixture[str]
) -> None:
    """Verify approving the code it held pending for the number proves the user typed it (passCode)."""
    okta_api.factors[OKTA_USER_ID] = [phone_factor(PHONE)]
    client = make_client(**events_env(okta_api))
    sandbox.pend(VERIFY_SERVICE_SID, PHONE, PENDING_SID)
    capsys.readouterr()
    assert post_events(client, batch(activation(actor))).status_code == 200
    (line,) = event_lines(capsys.readouterr().out)
    assert (line["outcome"], line["guard_converted"]) == ("feedback_approved", True)
    assert sandbox.pending == {}


@pytest.mark.parametrize("verify", [True, False])
def test_an_activation_by_someone_else_with_no_code_pending_converts_nothing(
    verify: bool,
    make_client: AppFactory,
    okta_api: OktaState,
    sandbox: SandboxState,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """activate=true, or Messages (no Verify to ask): nothing proves a code was typed on the number, so it
    stays new for the spend guard (a year exempt from its range and country caps otherwise)."""
    okta_api.factors[OKTA_USER_ID] = [phone_factor(PHONE)]
    client = make_client(**events_env(okta_api, **({} if verify else {"TWILIO_VERIFY_SERVICE_SID": None})))
    capsys.readouterr()
    assert post_events(client, batch(activation("admin"))).status_code == 200
    (line,) = event_lines(capsys.readouterr().out)
    assert line["outcome"] == ("feedback_not_pending" if verify else "not_proven")  # Verify was asked, or not
    assert "guard_converted" not in line


def test_the_users_own_activation_converts_without_verify(
    make_client: AppFactory, okta_api: OktaState, capsys: pytest.CaptureFixture[str]
) -> None:
    okta_api.factors[OKTA_USER_ID] = [phone_factor(PHONE)]
    client = make_client(**events_env(okta_api, TWILIO_VERIFY_SERVICE_SID=None))
    capsys.readouterr()
    assert post_events(client, batch(activation("user"))).status_code == 200
    (line,) = event_lines(capsys.readouterr().out)
    assert (line["outcome"], line["guard_converted"]) == ("converted", True)


VOICE_ENROLLMENT = {"id": "clf1", "type": "AuthenticatorEnrollment", "detailEntry": {"methodTypeUsed": "VOICE"}}


@pytest.mark.parametrize(
    ("changes", "factor_type"),
    [
        ({"debugContext": {"debugData": {"factor": "SMS_FACTOR"}}}, "sms"),
        ({"debugContext": {"debugData": {"factor": "CALL_FACTOR"}}}, "call"),
        (
            {
                "eventType": "user.mfa.factor.activate",
                "target": [
                    {"id": "clf1", "type": "AuthenticatorEnrollment", "detailEntry": {"methodTypeUsed": "VOICE"}}
                ],
            },
            "call",
        ),
    ],
)
def test_a_passed_challenge_names_the_factor_type_it_used(changes: dict[str, Any], factor_type: str) -> None:
    passed = passed_challenge(LogEvent.model_validate(mfa_event(**changes)))
    assert passed is not None and passed.factor_type == factor_type and passed.user_id == OKTA_USER_ID


def test_a_batch_that_is_not_oktas_shape_is_a_400_naming_the_field(events_client: FlaskClient) -> None:
    response = post_events(events_client, {"data": {"events": "nope"}})
    assert response.status_code == 400
    assert response.get_json()["error"]["errorCauses"][0]["location"] == "data.events"


# ------------------------------------------------------------------ failures, and nothing leaks


def test_a_guessed_secret_never_reaches_the_log_or_the_answer(
    events_client: FlaskClient, capsys: pytest.CaptureFixture[str]
) -> None:
    guess = "guessed-Secret-Qx81"
    capsys.readouterr()
    response = post_events(events_client, batch(), secret=guess)
    assert response.status_code == 401
    output = capsys.readouterr().out
    line = request_line(output)
    assert (line["outcome"], line["http_status"], line["message"]) == ("unauthorized", 401, "event hook unauthorized")
    assert guess not in output and guess not in response.get_data(as_text=True)


def test_twilio_unreachable_for_feedback_is_logged_with_the_masked_number(
    make_client: AppFactory, okta_api: OktaState, closed_port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    okta_api.factors[OKTA_USER_ID] = [phone_factor(PHONE)]
    client = make_client(**events_env(okta_api, TWILIO_API_BASE_URL=closed_port))
    capsys.readouterr()
    assert post_events(client, batch(mfa_event())).status_code == 200
    output = capsys.readouterr().out
    (line,) = event_lines(output)
    assert line["outcome"] == "feedback_failed"
    assert line["twilio_error"] == "TWILIO_UNREACHABLE"
    assert line["phone"] == PHONE_MASKED
    assert PHONE not in output and PHONE[1:] not in output


def test_a_verify_refusal_other_than_404_is_a_failed_feedback(
    events_client: FlaskClient, sandbox: SandboxState, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox.refuse_next.extend([20429, 20429])
    capsys.readouterr()
    assert post_events(events_client, batch(mfa_event())).status_code == 200
    (line,) = event_lines(capsys.readouterr().out)
    assert line["outcome"] == "feedback_failed"
    assert line["twilio_error_code"] == 20429
    assert line["twilio_attempts"] == 2  # a 429 is retried once: the line says so
    assert line["severity"] == "ERROR"


@pytest.mark.parametrize(("status", "body"), [(302, b""), (502, b"<html>Bad Gateway</html>"), (700, b"{}")])
def test_a_verify_answer_with_no_twilio_code_is_named_by_its_status_as_the_hooks_line_does(
    status: int, body: bytes, make_client: AppFactory, okta_api: OktaState, capsys: pytest.CaptureFixture[str]
) -> None:
    """A proxy's 3xx, an edge's 5xx, a status past HTTP's: no Twilio code, so the line does not call the
    status one ('error 302'); it says TWILIO_HTTP_nnn, as the telephony hook's line does."""
    okta_api.factors[OKTA_USER_ID] = [phone_factor(PHONE)]
    with stand_in(http_answer(status, body, "text/html", headers="Location: http://127.0.0.1:9/\r\n")) as twilio:
        client = make_client(**events_env(okta_api, TWILIO_API_BASE_URL=twilio.base_url))
        capsys.readouterr()
        assert post_events(client, batch(mfa_event())).status_code == 200
    (line,) = event_lines(capsys.readouterr().out)
    assert (line["outcome"], line["twilio_error"], line["twilio_http_status"]) == (
        "feedback_failed",
        f"TWILIO_HTTP_{status}",
        status,
    )
    assert (
        "twilio_error_code" not in line
        and line["error_meaning"] == f"Twilio answered HTTP {status}, with no error code."
    )


@pytest.mark.parametrize("answer", [b"[]", b"[" * 30_000 + b"]" * 30_000, b'"approved"'])
def test_a_verify_answer_the_library_cannot_read_is_a_failed_feedback(
    answer: bytes, make_client: AppFactory, okta_api: OktaState, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 200 that is not a verification: the update's line says so, never an internal error."""
    okta_api.factors[OKTA_USER_ID] = [phone_factor(PHONE)]
    with stand_in(http_answer(200, answer)) as twilio:
        client = make_client(**events_env(okta_api, TWILIO_API_BASE_URL=twilio.base_url))
        capsys.readouterr()
        assert post_events(client, batch(mfa_event())).status_code == 200
        assert twilio.requests == 1
    (line,) = event_lines(capsys.readouterr().out)
    assert (line["outcome"], line["twilio_error"]) == ("feedback_failed", "TWILIO_MALFORMED_ANSWER")


@pytest.mark.parametrize(("status", "said"), [(503, 404), (503, 400), (404, 503)])
def test_a_verify_update_is_read_by_the_answers_own_status_not_its_bodys(
    status: int, said: int, make_client: AppFactory, okta_api: OktaState, capsys: pytest.CaptureFixture[str]
) -> None:
    """An RFC 9457 error body carries a `status` of its own, which the twilio library reports as the
    answer's: a 503 whose body says 404 is Verify failing, not 'nothing pending' (an outage would read as
    quiet INFO lines), and a 404 is nothing pending whatever its body says."""
    okta_api.factors[OKTA_USER_ID] = [phone_factor(PHONE)]
    problem = {"type": "https://www.twilio.com/docs/errors/20404", "title": "x", "status": said, "code": 20404}
    with stand_in(http_answer(status, json.dumps(problem).encode())) as twilio:
        client = make_client(**events_env(okta_api, TWILIO_API_BASE_URL=twilio.base_url))
        capsys.readouterr()
        assert post_events(client, batch(mfa_event())).status_code == 200
        assert twilio.requests == 1
    (line,) = event_lines(capsys.readouterr().out)
    if status == 404:
        assert line["outcome"] == "feedback_not_pending"
    else:
        assert (line["outcome"], line["twilio_http_status"], line["severity"]) == ("feedback_failed", 503, "ERROR")


VE_SID = "VE" + "d" * 32


@pytest.mark.parametrize(
    ("verification", "failure"),
    [
        (
            {"sid": "VE" + "d" * 32, "status": "pending"},
            {"twilio_error": "TWILIO_NOT_APPROVED", "twilio_status": "pending"},
        ),
        (
            {"sid": "VE" + "d" * 32, "status": "x"},
            {"twilio_error": "TWILIO_NOT_APPROVED", "twilio_status": "an unknown status"},
        ),
        ({"sid": "SM" + "d" * 32, "status": "approved"}, {"twilio_error": "TWILIO_MALFORMED_ANSWER"}),
        ({"status": "approved"}, {"twilio_error": "TWILIO_MALFORMED_ANSWER"}),
    ],
)
def test_a_verify_update_answered_with_what_is_not_an_approved_verification_is_a_failed_feedback(
    verification: dict[str, Any],
    failure: dict[str, str],
    make_client: AppFactory,
    okta_api: OktaState,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Twilio answers the update with the verification as it now stands: only `approved`, on a VE SID,
    is an approval (operators and the guard's conversion query read feedback_approved as one)."""
    okta_api.factors[OKTA_USER_ID] = [phone_factor(PHONE)]
    with stand_in(http_answer(200, json.dumps(verification).encode())) as twilio:
        client = make_client(**events_env(okta_api, TWILIO_API_BASE_URL=twilio.base_url))
        capsys.readouterr()
        assert post_events(client, batch(mfa_event())).status_code == 200
        assert twilio.requests == 1
    (line,) = event_lines(capsys.readouterr().out)
    assert line["outcome"] == "feedback_failed"
    assert {key: line[key] for key in failure} == failure


def test_a_user_without_a_phone_factor_is_logged_so(
    events_client: FlaskClient, okta_api: OktaState, sandbox: SandboxState, capsys: pytest.CaptureFixture[str]
) -> None:
    okta_api.factors[OKTA_USER_ID] = [phone_factor(PHONE, status="PENDING_ACTIVATION"), {"factorType": "push"}]
    capsys.readouterr()
    assert post_events(events_client, batch(mfa_event())).status_code == 200
    (line,) = event_lines(capsys.readouterr().out)
    assert line["outcome"] == "feedback_no_phone"
    assert sandbox.requests == []


@pytest.mark.parametrize("named", [False, True])
def test_an_event_that_fits_several_numbers_proves_none(
    named: bool, make_client: AppFactory, okta_api: OktaState, sandbox: SandboxState, capsys: pytest.CaptureFixture[str]
) -> None:
    """No enrolment named and two sms factors (or the named enrolment listed with two numbers): which
    one passed is not known. Neither is approved in Verify nor converted: one event, at most one number."""
    other = "+14155550777"
    second = {**phone_factor(other), "id": "sms1o51EADOTFXHHBXBP" if named else "sms2OTHER"}
    okta_api.factors[OKTA_USER_ID] = [phone_factor(PHONE), second]
    client = make_client(**events_env(okta_api))
    for number in (PHONE, other):
        sandbox.pend(VERIFY_SERVICE_SID, number, PENDING_SID)
    event = mfa_event() if named else mfa_event(target=[])
    capsys.readouterr()
    assert post_events(client, batch(event)).status_code == 200
    (line,) = event_lines(capsys.readouterr().out)
    assert (line["outcome"], line["factor"], line["severity"]) == ("feedback_ambiguous", "sms", "WARNING")
    assert verify_updates(sandbox) == []
    assert "guard_converted" not in line


def test_an_event_id_spelling_the_number_as_digits_is_not_written(
    events_client: FlaskClient, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert post_events(events_client, batch(mfa_event(uuid="+1 (415) 555-0123"))).status_code == 200
    output = capsys.readouterr().out
    assert "14155550123" not in output and event_lines(output)


def test_an_events_line_spells_its_uuid_as_oktas_system_log_does(
    make_client: AppFactory, okta_api: OktaState, capsys: pytest.CaptureFixture[str]
) -> None:
    """Acted on once in one spelling (no dashes, lower case), written as Okta writes it: an on-call
    engineer pastes the System Log's uuid into a log search."""
    okta_api.factors[OKTA_USER_ID] = [phone_factor(PHONE)]
    client = make_client(**events_env(okta_api))
    event_id = "1D0B4A6E-AD5B-11F0-9C2A-0242AC120002"
    capsys.readouterr()
    assert post_events(client, batch(mfa_event(uuid=f"{{{event_id}}}"))).status_code == 200
    (line,) = event_lines(capsys.readouterr().out)
    assert line["event_id"] == event_id.lower()


def test_one_post_makes_one_verify_update_per_user_and_factor(
    make_client: AppFactory, okta_api: OktaState, sandbox: SandboxState, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three events, each naming another of the user's sms enrolments: each number converts, and Verify
    is asked once (its updates take up to 1.7 s each: the user's job stays within its own deadline)."""
    numbers = ["+14155550101", "+14155550102", "+14155550103"]
    okta_api.factors[OKTA_USER_ID] = [{**phone_factor(number), "id": f"sms{index}ENROLMENT"}
                                      for index, number in enumerate(numbers)]  # fmt: skip
    client = make_client(**events_env(okta_api))
    for index, number in enumerate(numbers):
        sandbox.pend(VERIFY_SERVICE_SID, number, f"VE{index:032x}")
    events = [mfa_event() for _ in numbers]
    for index, event in enumerate(events):
        event["target"][0]["id"] = f"sms{index}ENROLMENT"
    capsys.readouterr()
    assert post_events(client, batch(*events)).status_code == 200
    assert len(sandbox.pending) == 2  # one of the three approved
    outcomes = sorted(line["outcome"] for line in event_lines(capsys.readouterr().out))
    assert outcomes == ["converted", "converted", "feedback_approved"]


def test_an_event_naming_one_of_several_numbers_proves_that_one(
    make_client: AppFactory, okta_api: OktaState, sandbox: SandboxState, capsys: pytest.CaptureFixture[str]
) -> None:
    okta_api.factors[OKTA_USER_ID] = [{**phone_factor("+14155550777"), "id": "sms2OTHER"}, phone_factor(PHONE)]
    client = make_client(**events_env(okta_api))
    sandbox.pend(VERIFY_SERVICE_SID, PHONE, PENDING_SID)
    capsys.readouterr()
    assert post_events(client, batch(mfa_event())).status_code == 200  # names sms1o51EADOTFXHHBXBP: PHONE's
    (line,) = event_lines(capsys.readouterr().out)
    assert (line["outcome"], line["phone"]) == ("feedback_approved", PHONE_MASKED)
    assert [update["path"].rsplit("/", 1)[1] for update in verify_updates(sandbox)] == ["%2B14155550123"]


def test_the_org_url_must_be_https_except_on_loopback() -> None:
    from telephony.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="OKTA_ORG_URL"):
        load_settings({"OKTA_ORG_URL": "http://acme.okta.com"})
    assert load_settings({"OKTA_ORG_URL": "https://acme.okta.com"}).okta_org_url == "https://acme.okta.com"
    assert load_settings({"OKTA_ORG_URL": "http://127.0.0.1:8080"}).okta_org_url == "http://127.0.0.1:8080"


@pytest.mark.parametrize(("guard", "verify_named"), [("enforce", False), ("off", True)])
def test_a_half_configured_event_hook_is_named_at_start_up(
    guard: str, verify_named: bool, make_client: AppFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """What it lacks, and only that: with the spend guard on, conversions need no Verify service."""
    capsys.readouterr()
    make_client(OKTA_EVENT_HOOK_AUTH_SECRET=EVENT_HOOK_SECRET, GUARD_MODE=guard)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    (line,) = [line for line in lines if "/okta/events" in line["message"]]
    assert line["severity"] == "CRITICAL"
    assert "OKTA_ORG_URL and OKTA_API_TOKEN" in line["message"]
    assert ("TWILIO_VERIFY_SERVICE_SID" in line["message"]) is verify_named


# ------------------------------------------------------------------ which number, and how fresh


@pytest.mark.parametrize(
    ("published", "stale"),
    [
        ("2026-11-30T12:00:00.000Z", False),
        ("2026-11-30T11:50:00.000Z", False),  # 10 minutes: a Verify code's life
        ("2026-11-30T11:49:59.000Z", True),
        ("2026-11-30T12:04:59.000Z", False),  # clock skew
        ("2026-11-30T12:05:01.000Z", True),
        ("2026-11-30T12:00:00", True),  # no time zone: not Okta's
        ("yesterday", True),
        (None, True),
    ],
)
def test_an_event_older_than_a_codes_life_is_too_old(published: str | None, stale: bool) -> None:
    from telephony.events import too_old

    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert too_old(LogEvent.model_validate(mfa_event(published=published)), now) is stale


@pytest.mark.parametrize(
    ("body", "found"),
    [
        (b'[{"factorType": ["sms"], "status": "ACTIVE", "profile": {"phoneNumber": "+14155550123"}}]', []),
        (b'[{"factorType": "sms", "profile": {"phoneNumber": "\\ud800+14155550123"}, "id": "sms1"}]', []),
        (b'[{"factorType": "sms", "profile": {"phoneNumber": "+1 415 555 0123"}, "id": "sms1"}]', ["+14155550123"]),
        (b"[" * 100_000 + b"]" * 100_000, None),
    ],
    ids=["factorType not a string", "lone surrogate", "separators", "nested too deep"],
)
def test_an_odd_factor_list_is_read_as_far_as_it_holds_phone_numbers(body: bytes, found: list[str] | None) -> None:
    """Whatever the Management API answers, the outcome is numbers or OKTA_API_BAD_ANSWER: never an
    exception of Python's (a TypeError, a RecursionError) that ends the user's feedback as a bug."""
    from telephony.okta_api import OktaApi, OktaApiUnavailable
    from tests.standins import http_answer, stand_in

    with stand_in(http_answer(200, body)) as okta:
        api = OktaApi(okta.base_url, "token", 1.0, 1)
        if found is None:
            with pytest.raises(OktaApiUnavailable, match="OKTA_API_BAD_ANSWER"):
                api.phone_factors("00u1")
        else:
            assert [factor.number for factor in api.phone_factors("00u1")] == found


def test_the_numbers_passed_are_the_enrolment_the_event_names_else_the_factor_type() -> None:
    from telephony.events import numbers_passed
    from telephony.okta_api import PhoneFactor

    factors = [
        PhoneFactor("sms", "+14155550123", "sms1"),
        PhoneFactor("call", "+14155550999", "clf1"),
        PhoneFactor("sms", "+14155550777", "sms2"),
    ]
    assert numbers_passed(factors, "sms", set()) == ["+14155550123", "+14155550777"]
    assert numbers_passed(factors, "sms", {"sms2"}) == ["+14155550777"]
    # One phone enrolment, listed as "call", challenged by SMS: its number got the code.
    assert numbers_passed(factors, "sms", {"clf1"}) == ["+14155550999"]
    assert numbers_passed(factors, "call", {"sms1"}) == ["+14155550123"]
    assert numbers_passed(factors, "call", {"unknown"}) == []  # not the user's: no other number proved
    assert numbers_passed(factors, "call", set()) == ["+14155550999"]
